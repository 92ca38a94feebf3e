"""`imgsearch check`: read the whole index and the caption cache, and say what is wrong with them.

Run on demand (never on the query path); repair.py mends what it finds.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.captions import inspect_cache_file
from ..errors import ImgsearchError
from ..pictures.ocr import searchable_text
from ..results import CheckReport, is_pending_row
from .folders_record import indexed_folders

if TYPE_CHECKING:
    from .parts import IndexParts

# Rows whose vector is compared with a fresh embedding of their caption.
EMBEDDING_SAMPLE = 200
# Below this cosine a stored vector no longer says what its caption says.
SAME_VECTOR = 0.99
UNIT_TOLERANCE = 1e-3
# More problems than this of one kind are counted, not listed.
_LISTED = 5
# How every problem with the caption cache starts (the rest are the index's).
CACHE_PROBLEM = "the caption cache"
# SQLite's integrity check heads its findings with the database they are in.
_SQLITE_SECTION = re.compile(r"\*\*\* in database \w+ \*\*\*")


def check(parts: IndexParts, sample: int = EMBEDDING_SAMPLE) -> CheckReport:
    """Every problem found in the index and caption cache; an empty list means healthy."""
    started = time.monotonic()
    report = CheckReport(index=parts.store.uri, cache=str(parts.settings.caption_cache_path))
    report.cache_captions, cache_problems = _check_cache(parts.settings.caption_cache_path)
    report.problems.extend(cache_problems)
    try:
        # The file as it is on disk, not the copy a keeper loaded before it was damaged.
        parts.store.read_from_disk()
        _check_index(parts, report, sample)
    except ImgsearchError as exc:
        report.index_readable = False
        report.problems.append(f"the index cannot be read: {exc}")
    report.seconds = time.monotonic() - started
    return report


def _check_cache(path: Path) -> tuple[int, list[str]]:
    count, damage = inspect_cache_file(path)
    if damage:
        return count, [f"{CACHE_PROBLEM} {path} is damaged: {_summary(damage)}"]
    return count, []


def _summary(damage: list[str]) -> str:
    """SQLite's findings (one per bad cell, a page of them for one bad page) as one short line."""
    findings = [
        line.strip()
        for entry in damage
        for line in entry.splitlines()
        if line.strip() and not _SQLITE_SECTION.fullmatch(line.strip())
    ] or ["SQLite's integrity check failed"]
    more = len(findings) - 1
    return findings[0] + (
        f" (and {more} more finding{'s' if more > 1 else ''} of SQLite's integrity check)" if more else ""
    )


def _check_index(parts: IndexParts, report: CheckReport, sample: int) -> None:
    store = parts.store
    if not store.exists():
        report.problems.append(f"there is no index in collection {store.collection!r} at {store.uri}")
        return
    store.load_existing()
    counted = store.count()
    bad_vectors: list[str] = []
    paths: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    captioned: list[dict[str, Any]] = []
    dimension = store.dimension
    for row in store.iter_rows(fields=["path", "caption", "captioner", "content_hash", "ocr_text", "vector"]):
        report.rows += 1
        paths[row["path"]] += 1
        captioned.append(row)
        vector = [float(x) for x in row["vector"]]
        problem = _vector_problem(vector, dimension)
        if problem:
            bad_vectors.append(f"{row['path']}: {problem}")
        elif not is_pending_row(row):  # a row waiting for its caption has no caption vector yet
            rows.append(row)
    if counted != report.rows:
        report.problems.append(f"the index counts {counted} rows but {report.rows} could be read")
    _add_listed(report, bad_vectors, "rows with a broken vector")
    duplicates = [f"{path} ({times} rows)" for path, times in paths.items() if times > 1]
    _add_listed(report, duplicates, "pictures stored more than once")
    if not any(problem.startswith(CACHE_PROBLEM) for problem in report.problems):
        # Opening a damaged cache would repair it: these look at a healthy one only.
        _check_lost_rows(parts, report, set(paths))
        _check_cached_captions(parts, report, captioned)
    _check_embeddings(parts, report, rows, sample)


def _check_lost_rows(parts: IndexParts, report: CheckReport, stored: set[str]) -> None:
    """Pictures under the indexed folders with a cached caption but no row: lost from the index."""
    from ..pictures.files import FoundFile, content_hash, display_path, walk_images

    folders = indexed_folders(parts.settings.data_dir)
    absent = [
        found.path
        for found in walk_images(folders)
        if isinstance(found, FoundFile) and display_path(found.path) not in stored
    ]
    if not absent:
        return
    hashes = {}
    for path in absent:
        try:
            hashes[path] = content_hash(path)
        except OSError:
            continue
    cached = parts.cache.latest_any(hashes.values())
    lost = [display_path(path) for path, digest in hashes.items() if digest in cached]
    _add_listed(report, lost, "pictures that were indexed (their caption is cached) but have no row")


def _check_cached_captions(parts: IndexParts, report: CheckReport, rows: list[dict[str, Any]]) -> None:
    """Rows whose caption the cache has lost (salvaged in part, deleted): a rebuild would caption them again."""
    from ..cache.refill import uncached

    lacking = [row["path"] for row in uncached(rows, parts.cache)]
    if lacking:
        report.problems.append(
            f"{CACHE_PROBLEM} lacks the captions of {len(lacking)} indexed pictures, so a rebuild of the index "
            f"would caption them again (`imgsearch check --repair` writes them back): {_listed(lacking)}"
        )


def _vector_problem(vector: list[float], dimension: int) -> str:
    if dimension and len(vector) != dimension:
        return f"{len(vector)}-d vector in a {dimension}-d index"
    if not all(math.isfinite(x) for x in vector):
        return "vector has values that are not finite numbers"
    norm = math.sqrt(sum(x * x for x in vector))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        return f"vector length {norm:.4g}, not 1"
    return ""


def _check_embeddings(parts: IndexParts, report: CheckReport, rows: list[dict[str, Any]], sample: int) -> None:
    """A stored vector must still be its caption's embedding (a sample, to keep check quick)."""
    chosen = random.Random(0).sample(rows, min(sample, len(rows)))
    if not chosen:
        return
    texts = [searchable_text(row["caption"], row.get("ocr_text") or "") for row in chosen]
    fresh = parts.embedder.embed(texts)
    report.rows_re_embedded = len(chosen)
    differing = []
    for index, (row, vector) in enumerate(zip(chosen, fresh)):
        cosine = _cosine(vector, row["vector"])
        if cosine < SAME_VECTOR:
            # Stored before captions of several sentences were embedded sentence by sentence:
            # the whole text's vector is that caption's embedding too.
            cosine = max(cosine, _cosine(parts.embedder.embed_queries([texts[index]])[0], row["vector"]))
        if cosine < SAME_VECTOR:
            differing.append(f"{row['path']}: cosine {cosine:.3f} to its caption's embedding")
    _add_listed(report, differing, f"of {len(chosen)} sampled rows whose vector does not match their caption")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * float(y) for x, y in zip(a, b))


def _add_listed(report: CheckReport, items: list[str], what: str) -> None:
    if items:
        report.problems.append(f"{len(items)} {what}: {_listed(items)}")


def _listed(items: list[str]) -> str:
    return "; ".join(items[:_LISTED]) + (f"; and {len(items) - _LISTED} more" if len(items) > _LISTED else "")
