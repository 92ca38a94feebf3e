"""`imgsearch eval`: retrieval quality on a captioned dataset, per search mode, in a throw-away index.

A dataset is a folder with `images/` and `captions.jsonl` (`{"image": name, "captions": [...]}`
per line), several human captions per image.

- oracle mode: caption 0 of each image is indexed as its caption; captions 1.. are queries
  whose answer is that image. Measures retrieval alone.
- live mode: the configured captioner captions the images; every human caption is a query.
  Measures the whole system.
- N captions per picture (oracle, N > 1): captions 0..N-1 of each image, joined as sentences,
  are indexed as one description (as a long VLM caption would be); the rest are queries. The
  one-caption protocol is measured beside it, in its own index.

Besides the caption queries, two keyword query sets check what word search must never miss:
each image's file name, and each image's rarest caption word (one-word queries).

With a visual model in the settings the dataset's index has image vectors: `visual` mode is
measured too, and `hybrid` blends them in as queries on such an index do.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .embedders.base import Embedder
from .errors import ConfigError
from .search.plan import SEARCH_MODES, VISUAL_MODE, QueryPlan, plan_query, query_text, run_plan

if TYPE_CHECKING:
    from .embedders.visual import VisualEmbedder
    from .engine import ImageSearch

CUTOFFS = (1, 5, 10)
_WORD = re.compile(r"[a-z]{4,}")


@dataclass(frozen=True)
class EvalQuery:
    text: str
    answer: str  # file name of the one right image


@dataclass
class ModeScores:
    """Quality and speed of one search mode on one query set."""

    mode: str
    query_set: str
    queries: int
    recall: dict[int, float]  # cutoff -> share of queries whose answer ranks within it
    mrr: float
    ndcg10: float
    latency_p50_ms: float
    latency_p95_ms: float
    protocol: str = "1 caption"  # what was indexed per picture, e.g. "4 captions"


@dataclass
class EvalReport:
    dataset: str
    live: bool
    images: int
    index_seconds: float
    scores: list[ModeScores] = field(default_factory=list)
    captions_per_picture: int = 1

    @property
    def protocol(self) -> str:
        return protocol_name(self.captions_per_picture, self.live)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def best(self, query_set: str = "captions", protocol: str | None = None) -> ModeScores:
        """The mode with the highest MRR on a query set (in the report's own protocol by default)."""
        wanted = protocol or self.protocol
        return max((s for s in self.scores if s.query_set == query_set and s.protocol == wanted), key=lambda s: s.mrr)


def protocol_name(captions_per_picture: int, live: bool = False) -> str:
    """What an eval indexed per picture: "1 caption", "4 captions", or the captioner's caption."""
    if live:
        return "model caption"
    return "1 caption" if captions_per_picture == 1 else f"{captions_per_picture} captions"


def joined_description(captions: Sequence[str]) -> str:
    """Captions as the sentences of one description: each ends with a full stop."""
    sentences = (c.strip() for c in captions if c.strip())
    return " ".join(c if c.endswith((".", "!", "?")) else c + "." for c in sentences)


def load_dataset(folder: str | Path) -> tuple[Path, dict[str, list[str]]]:
    """The images folder and {file name: human captions} of a dataset."""
    root = Path(folder).expanduser()
    images, captions_file = root / "images", root / "captions.jsonl"
    if not images.is_dir() or not captions_file.is_file():
        raise ConfigError(f"{root} is not an eval dataset: it needs images/ and captions.jsonl")
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(captions_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            captions[str(record["image"])] = [str(c) for c in record["captions"]]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f'{captions_file}:{number}: expected {{"image": ..., "captions": [...]}}') from None
    missing = [name for name in captions if not (images / name).is_file()]
    if missing:
        raise ConfigError(f"{images} lacks {len(missing)} images named in captions.jsonl, e.g. {missing[0]}")
    return images, captions


def caption_queries(captions: dict[str, list[str]], live: bool, indexed: int = 1) -> list[EvalQuery]:
    first = 0 if live else indexed  # in oracle mode the indexed captions are not queries
    return [EvalQuery(text, name) for name, texts in captions.items() for text in texts[first:]]


def file_name_queries(captions: dict[str, list[str]]) -> list[EvalQuery]:
    return [EvalQuery(name, name) for name in captions]


def rare_word_queries(captions: dict[str, list[str]]) -> list[EvalQuery]:
    """One-word queries: each image's caption-0 word that no other image's caption 0 has."""
    words = {name: set(_WORD.findall(texts[0].lower())) for name, texts in captions.items() if texts}
    frequency = Counter(word for found in words.values() for word in found)
    queries = []
    for name, found in words.items():
        unique = sorted(word for word in found if frequency[word] == 1)
        if unique:
            queries.append(EvalQuery(max(unique, key=len), name))
    return queries


def score_ranks(mode: str, query_set: str, ranks: Sequence[int | None], latencies: Sequence[float]) -> ModeScores:
    """Metrics from the rank (1-based, None = not in the top results) of each query's answer."""
    count = len(ranks) or 1
    found = [rank for rank in ranks if rank is not None]
    ordered = sorted(latencies) or [0.0]
    return ModeScores(
        mode=mode,
        query_set=query_set,
        queries=len(ranks),
        recall={cut: 100 * sum(rank <= cut for rank in found) / count for cut in CUTOFFS},
        mrr=sum(1 / rank for rank in found) / count,
        ndcg10=sum(1 / math.log2(rank + 1) for rank in found if rank <= 10) / count,
        latency_p50_ms=statistics.median(ordered),
        latency_p95_ms=ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    )


def run_eval(
    dataset: str | Path,
    settings: Settings,
    *,
    live: bool = False,
    modes: Sequence[str] | None = None,
    depth: int = 10,
    embedder: Any = None,
    progress: Callable[[str], None] | None = None,
    captions_per_picture: int = 1,
) -> EvalReport:
    """Index a dataset into a throw-away Milvus Lite file and measure each search mode (default:
    every one the index answers, `visual` among them when it has image vectors). With
    captions_per_picture N > 1, N human captions per picture are indexed as one description
    and the rest are queries; the one-caption protocol is measured beside it."""
    images, captions = load_dataset(dataset)
    if captions_per_picture < 1:
        raise ConfigError(f"captions per picture must be 1 or more, got {captions_per_picture}")
    if live and captions_per_picture > 1:
        raise ConfigError("captions per picture applies to oracle mode: --live indexes the captioner's captions")
    say = progress or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as scratch:
        captions_file = Path(dataset) / "captions.jsonl"
        if captions_per_picture > 1:
            # The description is caption 0 of a scratch captions file, as the captions captioner reads it.
            captions_file = Path(scratch) / "captions.jsonl"
            captions_file.write_text(
                "".join(
                    json.dumps({"image": name, "captions": [joined_description(texts[:captions_per_picture])]}) + "\n"
                    for name, texts in captions.items()
                ),
                encoding="utf-8",
            )
        measure = {"live": live, "depth": depth, "embedder": embedder, "say": say}
        result, modes = _index_and_measure(
            dataset,
            images,
            captions,
            settings,
            Path(scratch) / "main",
            captions_file,
            captions_per_picture,
            modes,
            **measure,
        )
        if captions_per_picture > 1:
            say("the one-caption protocol, beside it")
            beside, _ = _index_and_measure(
                dataset,
                images,
                captions,
                settings,
                Path(scratch) / "one",
                Path(dataset) / "captions.jsonl",
                1,
                modes,
                **measure,
            )
            result.scores.extend(beside.scores)
    return result


def _index_and_measure(
    dataset: str | Path,
    images: Path,
    captions: dict[str, list[str]],
    settings: Settings,
    data_dir: Path,
    captions_file: Path,
    indexed: int,
    modes: Sequence[str] | None,
    *,
    live: bool,
    depth: int,
    embedder: Any,
    say: Callable[[str], None],
) -> tuple[EvalReport, Sequence[str]]:
    """One throw-away index of the dataset, and every query set's scores in each mode."""
    from .engine import ImageSearch

    # Never the user's index: a fresh data folder (index file and caption cache) per run.
    eval_settings = replace(settings, data_dir=data_dir, milvus_uri="", collection="eval")
    if not live:
        eval_settings = replace(eval_settings, captioner="captions", captions_file=str(captions_file))
    protocol = protocol_name(indexed, live)
    with ImageSearch(eval_settings, embedder=embedder) as engine:
        say(f"indexing {len(captions)} images ({protocol} each)")
        started = time.monotonic()
        report = engine.index([images])
        if report.failed:
            raise ConfigError(f"{len(report.failed)} dataset images failed to index, e.g. {report.failed[0]}")
        result = EvalReport(
            str(dataset),
            live,
            report.new + report.updated + report.unchanged,
            time.monotonic() - started,
            captions_per_picture=indexed,
        )
        if modes is None:
            modes = (*SEARCH_MODES, VISUAL_MODE) if engine.store.visual_model else SEARCH_MODES
        query_sets = {
            "captions": caption_queries(captions, live, indexed),
            "file names": file_name_queries(captions),
            "rare words": rare_word_queries(captions),
        }
        for query_set, queries in query_sets.items():
            searches = _BatchEmbeddedSearch(engine, [query.text for query in queries], depth, modes, say)
            for mode in modes:
                say(f"{query_set}: {len(queries)} queries, {mode}")
                ranks, latencies = [], []
                for number, query in enumerate(queries):
                    names, milliseconds = searches.top_names(number, mode)
                    latencies.append(milliseconds)
                    ranks.append(names.index(query.answer) + 1 if query.answer in names else None)
                scores = score_ranks(mode, query_set, ranks, latencies)
                scores.protocol = protocol
                result.scores.append(scores)
    return result, modes


class _BatchEmbeddedSearch:
    """ImageSearch.query for a whole query set, its query vectors embedded in batches beforehand.

    Embedding one query at a time is most of an eval's time. The plan and the search are
    ImageSearch.query's own (search.plan_query and run_plan) with no filters and no score
    floor, so the rankings are the same; a query's latency is its search time plus its share
    of the batch embedding time (and of the image–text model's, for the queries that search
    image vectors), not the time of embedding it alone.
    """

    def __init__(
        self, engine: ImageSearch, texts: list[str], depth: int, modes: Sequence[str], say: Callable[[str], None]
    ):
        from .search.searching import MAX_K

        self.texts = [query_text(text or "") for text in texts]
        if not 1 <= depth <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}, got {depth}")
        self.engine = engine
        self.depth = depth
        self.store = engine.store
        self.store.open(engine.embedder.id, lambda: engine.embedder.dimension, create=False)
        # The index was built with the engine's visual model, if it has image vectors.
        self.visual: VisualEmbedder | None = engine.visual if self.store.visual_model else None
        self.vectors, self.embed_ms = self._embed_queries(modes, say)
        self.visual_vectors, self.visual_ms = self._encode_queries(modes, say)

    def top_names(self, number: int, mode: str) -> tuple[list[str], float]:
        """File names of the top results for query number in mode, and the milliseconds it took."""
        began = time.perf_counter()
        text = self.texts[number]
        plan = self._plan(text, mode)
        rows = run_plan(
            self.store,
            plan,
            text,
            lambda: self._vector(number),
            self.depth,
            "",
            visual_vector=(lambda: self.visual_vectors[text]) if self.visual is not None else None,
        )
        names = [Path(row["path"]).name for row in rows]
        spent = (time.perf_counter() - began) * 1000 + (self.embed_ms if plan.searches_dense else 0.0)
        spent += self.visual_ms if plan.searches_visual and self.visual is not None else 0.0
        return names, spent

    def _plan(self, text: str, mode: str) -> QueryPlan:
        return plan_query(
            text,
            self.depth,
            mode,
            self.engine.settings,
            self.store.keyword_search_enabled,
            self.store.uri,
            self.visual is not None,
        )

    def _embed_queries(self, modes: Sequence[str], say: Callable[[str], None]) -> tuple[dict[str, list[float]], float]:
        """Vectors for every query text some mode searches densely, and the embedding time per text."""
        needed = list(
            dict.fromkeys(text for mode in modes for text in self.texts if self._plan(text, mode).searches_dense)
        )
        embedder = self.engine.embedder
        if not needed or type(embedder).embed_query is not Embedder.embed_query:
            # An embedder that embeds queries its own way is asked one query at a time.
            return {}, 0.0
        say(f"embedding {len(needed)} queries")
        began = time.perf_counter()
        # Whole texts, as embed_query embeds them: embed() would split a query of several sentences.
        vectors = embedder.embed_queries(needed)
        return dict(zip(needed, vectors)), (time.perf_counter() - began) * 1000 / len(needed)

    def _encode_queries(self, modes: Sequence[str], say: Callable[[str], None]) -> tuple[dict[str, list[float]], float]:
        """The text tower's vector for every query text some mode searches image vectors with,
        and the time per text."""
        if self.visual is None:
            return {}, 0.0
        needed = list(
            dict.fromkeys(text for mode in modes for text in self.texts if self._plan(text, mode).searches_visual)
        )
        if not needed:
            return {}, 0.0
        say(f"encoding {len(needed)} queries for the image vectors")
        began = time.perf_counter()
        vectors = self.visual.encode_texts(needed)
        return dict(zip(needed, vectors)), (time.perf_counter() - began) * 1000 / len(needed)

    def _vector(self, number: int) -> list[float]:
        text = self.texts[number]
        if text in self.vectors:
            return self.vectors[text]
        return self.engine.embedder.embed_query(text)
