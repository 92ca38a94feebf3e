"""The relevance floor: below it a hit is no good match. Calibrated per search mode for one embedder.

A search always has k best rows, however little they match ("spaceship on mars" in a library of
dogs and beaches comes back with its k least-bad pictures). The floor keeps the ones with real
evidence: a caption whose meaning is close enough to the query's, or, where the mode searches
words, a query word in the picture's keyword text.

Why the floor is on that evidence and not on a hit's shown score: keyword scores are scaled by the
query's best one (the top hit is always 1.0, whatever it matched), and a hybrid score mixes that
scale with cosine for short queries, so neither says how good the match is across queries. The
caption cosine does, for one embedder: the floors below were measured with all-MiniLM-L6-v2
(benchmarks/relevance_floor.py on coco-mini, README "No good match"); an index made with another
embedder has no floor unless min_score is set. Image-vector scores (visual mode, search by
picture) and "more like this" have no calibrated floor either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..config import DEFAULT_EMBED_MODEL
from ..results import SearchHit

# The embedder the floors were calibrated with, as an index records it.
CALIBRATED_EMBEDDER = DEFAULT_EMBED_MODEL
# Lowest caption cosine a hit needs per mode; keyword matches pass in hybrid. keyword mode has
# none: every hit it brings holds a query word. On coco-mini 0.33 dropped the true photo of 2.5% of
# held-out caption queries and kept no hit for gibberish or for off-topic words like "volcano".
CAPTION_FLOORS = {"dense": 0.33, "hybrid": 0.33}
# Keys run_plan adds to each row: its caption's cosine to the query (None where the caption
# channel was not searched) and whether the keyword channel brought it.
CAPTION_SCORE = "caption_score"
WORD_MATCH = "word_match"


def default_floor(mode: str | None, embedder_id: str) -> float | None:
    """The calibrated floor of mode for an index embedded by embedder_id; None where none is."""
    if mode is None or embedder_id != CALIBRATED_EMBEDDER:
        return None
    return CAPTION_FLOORS.get(mode)


def with_evidence(
    rows: Iterable[dict[str, Any]], captions: Sequence[dict[str, Any]], keyword: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """rows (a fused ranking) each with its caption cosine and whether it matched words.

    A row the caption channel did not bring ranked below all it brought: it gets that channel's
    lowest cosine, the most it can have (the convention of search.fuse).
    """
    cosines = {hit["id"]: hit["score"] for hit in captions}
    lowest = min(cosines.values()) if cosines else None
    words = {hit["id"] for hit in keyword}
    return [{**row, CAPTION_SCORE: cosines.get(row["id"], lowest), WORD_MATCH: row["id"] in words} for row in rows]


def passes_floor(row: dict[str, Any], floor: float) -> bool:
    """Whether a row (from run_plan) has the evidence floor asks for."""
    if row.get(WORD_MATCH):
        return True
    cosine = row.get(CAPTION_SCORE)
    return cosine is None or cosine >= floor


class SearchHits(list[SearchHit]):
    """Hits, best first, and what a score floor left out of them.

    floor: the floor applied (min_score, or the mode's calibrated one); None when none was.
    below_floor: how many of the k best fell below it. No hits with below_floor > 0 means "no
    good match", not an empty index or filters nothing passes.
    """

    def __init__(self, hits: Iterable[SearchHit] = (), *, floor: float | None = None, below_floor: int = 0):
        super().__init__(hits)
        self.floor = floor
        self.below_floor = below_floor

    @property
    def no_good_match(self) -> bool:
        return not self and self.below_floor > 0

    def reordered(self, hits: Iterable[SearchHit]) -> SearchHits:
        """The same floor facts over hits (these hits in another order)."""
        return SearchHits(hits, floor=self.floor, below_floor=self.below_floor)

    def floor_facts(self) -> dict[str, Any]:
        """The floor's facts as JSON-ready fields, for answers that carry hits."""
        return {"no_good_match": self.no_good_match, "below_floor": self.below_floor, "floor": self.floor}


def floor_facts(hits: Sequence[SearchHit]) -> dict[str, Any]:
    """floor_facts of hits, or the facts of no floor for a plain list."""
    if isinstance(hits, SearchHits):
        return hits.floor_facts()
    return {"no_good_match": False, "below_floor": 0, "floor": None}


def no_good_match_line(what: str, below_floor: int, floor: float | None, how_to_see: str) -> str:
    """One line saying nothing passed the floor: 'no good match for WHAT; N pictures scored below
    the floor F (HOW_TO_SEE shows them)'."""
    pictures = "picture" if below_floor == 1 else "pictures"
    shown = "" if floor is None else f" {floor:g}"
    return f"no good match for {what}; {below_floor} {pictures} scored below the floor{shown} ({how_to_see} shows them)"
