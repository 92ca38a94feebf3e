"""`imgsearch check --repair`: mend what check found, captioning nothing.

A damaged caption cache is set aside, what it still holds carried into a fresh one, and the
captions the index holds and the cache lacks written back into it; then a damaged index is
rebuilt from the caption cache beside the damaged one, which is kept aside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..cache.captions import inspect_cache_file
from ..errors import ConfigError, ImgsearchError
from ..results import CheckReport, IndexReport
from .check import CACHE_PROBLEM, check
from .folders_record import indexed_folders

if TYPE_CHECKING:
    from .parts import IndexParts


def repair(
    parts: IndexParts,
    rebuild_from_cache: Callable[[list[str], Any], IndexReport],
    progress: Any = None,
) -> CheckReport:
    """Check, mend the caption cache if it is damaged, then rebuild the index if it is.

    The report lists the problems found before the repair and what was done about them.
    """
    report = check(parts)
    if any(problem.startswith(CACHE_PROBLEM) for problem in report.problems):
        parts.cache.count()  # opening a damaged cache keeps it aside and salvages what it can
        report.repairs.extend(parts.cache.take_warnings())
        refill_cache(parts, report)
    if any(not problem.startswith(CACHE_PROBLEM) for problem in report.problems):
        rebuild_index(parts, report, rebuild_from_cache, progress)
    return report


def refill_cache(parts: IndexParts, report: CheckReport) -> None:
    """Set a damaged cache aside, carrying what it still holds into a fresh one, then write the
    captions the index holds and the cache lacks back into it.

    Done before any rebuild of the index: the readable rows are the only copy of those captions.
    """
    from ..cache.refill import write_back_captions

    cache = parts.cache
    # Opening the cache replaces it only when the damage lies on the way; some never is.
    if inspect_cache_file(cache.path)[1]:
        cache.replace_damaged()
    written = 0
    try:
        written = write_back_captions(parts.store, cache)
    except ImgsearchError:
        pass  # an index that cannot be read gives nothing back; its rebuild goes on
    report.repairs.extend(cache.take_warnings())
    if written:
        report.repairs.append(f"the captions of {written} indexed pictures were written back into the caption cache")


def rebuild_index(
    parts: IndexParts,
    report: CheckReport,
    rebuild_from_cache: Callable[[list[str], Any], IndexReport],
    progress: Any = None,
) -> CheckReport:
    """Rebuild the index from the caption cache, captioning nothing, beside the damaged one,
    which is kept aside once the new one is complete (a stopped repair leaves it as it was).

    Pictures with no cached caption are reported as failed (`imgsearch index` captions them).
    """
    folders = indexed_folders(parts.settings.data_dir)
    if not folders:
        raise ConfigError(
            "no record of which folders this index was built from: run `imgsearch index FOLDER --rebuild`"
        )
    report.rebuilt = rebuild_from_cache(folders, progress)
    if report.rebuilt.replaced:
        report.repairs.append(f"the damaged index was kept aside as {report.rebuilt.replaced}")
    report.repairs.append(
        f"the index was rebuilt from the caption cache: {report.rebuilt.new} pictures, nothing captioned"
        + (
            f", {len(report.rebuilt.failed)} without a cached caption (`imgsearch index` captions them)"
            if report.rebuilt.failed
            else ""
        )
    )
    report.repairs.extend(report.rebuilt.warnings)
    return report
