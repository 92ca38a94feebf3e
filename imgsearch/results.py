"""Typed results returned by the Python API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CaptionText:
    """One captioner's caption of a picture (an index may hold several captioners' captions)."""

    captioner: str
    text: str


@dataclass(frozen=True)
class SearchHit:
    """One image returned by a query, best first."""

    path: str
    caption: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "caption_pending": self.caption_pending,
            "captions": [asdict(part) for part in self.captions],
        }

    @property
    def captions(self) -> list[CaptionText]:
        """Each captioner's caption, in the order the index lists them ([] while the caption is pending)."""
        return captions_of_row({**self.metadata, "caption": self.caption})

    @property
    def ocr_text(self) -> str:
        """Text read from the picture by the OCR step ('' when none was found or OCR was off)."""
        return str(self.metadata.get("ocr_text") or "")

    @property
    def caption_pending(self) -> bool:
        """Whether the picture is stored but not captioned yet (an index run's first pass): it was
        found by its file and folder names, its dates and camera, or its image vector."""
        return is_pending_row(self.metadata)


# How a row's maker says words read from the picture were added to its text (ocr.row_maker).
ROW_TEXT_MARK = "+ocr"
# The captioner a row stored by an index run's first pass names until its caption is in.
PENDING_CAPTIONER = ""


def is_pending_row(row: dict[str, Any]) -> bool:
    """Whether a stored row (or a hit's metadata) waits for its caption."""
    return "captioner" in row and row["captioner"] == PENDING_CAPTIONER


# What a row's captioner begins with when its caption is made of several captioners' captions.
SEVERAL_PREFIX = "several:"


def several_id(ids: Sequence[str]) -> str:
    """The captioner a row records for the captions of ids, in that order."""
    return SEVERAL_PREFIX + json.dumps(list(ids), ensure_ascii=False, separators=(",", ":"))


def part_ids(captioner_id: str) -> list[str]:
    """The captioners whose captions a row made by captioner_id holds (itself when only one)."""
    if not captioner_id.startswith(SEVERAL_PREFIX):
        return [captioner_id] if captioner_id else []
    try:
        ids = json.loads(captioner_id[len(SEVERAL_PREFIX) :])
    except ValueError:
        return [captioner_id]
    return [str(part) for part in ids] if isinstance(ids, list) else [captioner_id]


def join_captions(captions: Sequence[str]) -> str:
    """The row text of several captions: one per line (a cleaned caption holds no line break)."""
    return "\n".join(" ".join(caption.split()) for caption in captions)


def split_caption(captioner_id: str, caption: str) -> list[CaptionText]:
    """Each captioner's caption in a row's text, in order; [] for a row waiting for its caption."""
    ids = part_ids(captioner_id)
    if not ids:
        return []
    lines = caption.split("\n") if len(ids) > 1 else [caption]
    if len(lines) != len(ids):
        # Cut short by the store's length limit (or written by hand): the text stays whole.
        return [CaptionText(captioner_id, caption)]
    return [CaptionText(part, text) for part, text in zip(ids, lines)]


@dataclass
class CaptionUsage:
    """What captioning cost: API requests, retries, tokens and time, and captions cut short."""

    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    # Paths whose caption stopped at the token limit (raise max_new_tokens to get all of it).
    truncated: list[str] = field(default_factory=list)

    def add(self, other: CaptionUsage) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.seconds += other.seconds
        self.truncated.extend(other.truncated)


@dataclass(frozen=True)
class ImageDescription:
    """The caption (or answer to a prompt) for one picture, from `describe`."""

    path: str
    text: str
    captioner: str
    prompt: str
    truncated: bool = False
    ocr_text: str = ""
    usage: CaptionUsage = field(default_factory=CaptionUsage)

    @property
    def captions(self) -> list[CaptionText]:
        """Each captioner's caption, when several described the picture."""
        return split_caption(self.captioner, self.text)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "captions": [asdict(part) for part in self.captions]}


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be indexed, and why."""

    path: str
    reason: str


@dataclass
class IndexReport:
    """What one indexing run did."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    # A picture found at a new path whose old path is gone (its caption came along).
    moved: int = 0
    # Rows deleted because their file is gone from the indexed folders.
    removed: int = 0
    captioned: int = 0
    captions_reused: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    usage: CaptionUsage = field(default_factory=CaptionUsage)
    # Things the user should know that failed no file, one line each.
    warnings: list[str] = field(default_factory=list)
    # Where a rebuild kept the index it replaced ("" when it replaced none).
    replaced: str = ""
    # Seconds from the start until every picture was stored and findable, before the caption
    # stage (0 for a run with no such first pass: captions read from files, a cluster).
    findable_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every file was indexed."""
        return not self.failed and not self.interrupted

    @property
    def seen(self) -> int:
        return self.new + self.updated + self.unchanged + self.moved + len(self.failed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(f) for f in self.failed]
        data["ok"] = self.ok
        return data


@dataclass
class PruneReport:
    """What `prune` did: rows checked against the disk, and the paths of rows removed."""

    checked: int = 0
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReembedReport:
    """What `reembed` did: rows given new vectors from their stored captions (none captioned)."""

    rows: int = 0
    embedder: str = ""
    previous_embedder: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexStatus:
    """Where the index lives, what built it, and how big it is."""

    uri: str
    collection: str
    exists: bool
    images: int
    embedder: str | None
    dimension: int | None
    captioners: list[str]
    data_dir: str
    config_file: str | None
    # The image–text model of the index's image vectors; None when it has none.
    visual_model: str | None = None
    # Of images: how many have their caption (the rest wait for it), and an image vector.
    captioned: int = 0
    with_image_vectors: int = 0
    # The index run under way, if any (IndexRunProgress.to_dict()): found, stored, captioned, rate, ETA.
    run: dict[str, Any] | None = None
    # Pictures with a caption by each captioner (an index may hold several captioners' captions).
    captions_by_captioner: dict[str, int] = field(default_factory=dict)

    @property
    def caption_pending(self) -> int:
        return self.images - self.captioned

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "caption_pending": self.caption_pending}


@dataclass
class CheckReport:
    """What `check` found: an empty problems list means the index and the cache are healthy."""

    index: str = ""
    cache: str = ""
    rows: int = 0
    rows_re_embedded: int = 0
    cache_captions: int = 0
    index_readable: bool = True
    problems: list[str] = field(default_factory=list)
    # Filled in by a repair: what was done (one line each), and the rebuild's report.
    repairs: list[str] = field(default_factory=list)
    rebuilt: IndexReport | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rebuilt"] = self.rebuilt.to_dict() if self.rebuilt else None
        data["ok"] = self.ok
        return data


def captions_of_row(row: dict[str, Any]) -> list[CaptionText]:
    """Each captioner's caption in a stored row (or a hit's metadata with its caption)."""
    # A row whose text has words read from the picture marks its maker (ocr.row_maker).
    maker = str(row.get("captioner") or "").removesuffix(ROW_TEXT_MARK)
    return split_caption(maker, str(row.get("caption") or ""))
