"""The typed shapes of the tools' arguments and results; their JSON Schemas are what a client sees."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..search.plan import SearchFilters

MAX_QUERY_CHARS = 1000
MAX_PATH_CHARS = 4096
# Widths and heights are pixel counts; a bigger number is a mistake (and overflows the store).
MAX_PIXELS = 2**31 - 1
MAX_K = 100

Finite = Annotated[float, Field(allow_inf_nan=False)]
PixelCount = Annotated[int, Field(ge=0, le=MAX_PIXELS)]
# A date given as text (2024-06-30, an ISO date-time) or as a Unix time; the engine parses it.
Moment = Annotated[str, Field(max_length=64)] | Finite

Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for, in plain words.")]
TopK = Annotated[int, Field(ge=1, le=MAX_K, description=f"How many results, best first (at most {MAX_K}).")]
Mode = Annotated[
    Literal["dense", "keyword", "hybrid", "visual"] | None,
    Field(
        description="dense (caption meaning), keyword (words, text in the picture, file and folder names), "
        "hybrid (both; the usual default), visual (image vectors only, for an index built with one)."
    ),
]
MinScore = Annotated[
    Finite | None,
    Field(
        description="Drop results scoring below this (default: the search mode's calibrated floor; 0 keeps every "
        "result); none left means no good match."
    ),
]
Sort = Annotated[
    Literal["score", "date"],
    Field(
        description="score (best match first) or date (the same results, newest taken first; "
        "the file's modification time where no date taken is known)."
    ),
]
Picture = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="An indexed picture: the id a search returned, or the picture's path.",
    ),
]
Thumbnails = Annotated[int, Field(ge=0, le=20, description="How many of the best results come with a thumbnail.")]
ThumbnailSize = Annotated[Literal[160, 320, 640], Field(description="Longest side of each thumbnail, in pixels.")]


class Filters(BaseModel):
    """Conditions every result must meet; leave out what should not filter."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(
        None, max_length=MAX_PATH_CHARS, description="Only pictures under this folder (at any depth)."
    )
    file_types: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=20, description="Only these file types: jpeg, png, webp, heic, ..."
    )
    taken_after: Moment | None = Field(None, description="Taken on or after this date (YYYY-MM-DD) or Unix time.")
    taken_before: Moment | None = Field(None, description="Taken before this date (YYYY-MM-DD) or Unix time.")
    camera: str | None = Field(None, max_length=256, description="Only this camera (EXIF make and model).")
    min_width: PixelCount | None = None
    max_width: PixelCount | None = None
    min_height: PixelCount | None = None
    max_height: PixelCount | None = None

    def search_filters(self) -> SearchFilters:
        """The engine's filters; the engine checks each value again as it builds the expression."""
        return SearchFilters(**{**self.model_dump(), "file_types": tuple(self.file_types)})


class CaptionByCaptioner(BaseModel):
    """One captioner's caption of a picture."""

    captioner: str
    text: str


class PictureHit(BaseModel):
    """One indexed picture a search found."""

    id: str = Field(description="The picture's id: give it to similar_pictures or describe_picture.")
    uri: str = Field(description="The picture as a resource (a JPEG of at most 640 pixels).")
    path: str
    caption: str
    caption_pending: bool = Field(
        description="Stored but not captioned yet (an index run captions it): found by its file and folder "
        "names, dates, camera or looks; caption is '' until then."
    )
    captions: list[CaptionByCaptioner] = Field(
        default_factory=list,
        description="Each captioner's caption when the index holds several per picture (caption has them one per line).",
    )
    ocr_text: str = Field(description="Text read inside the picture ('' when none).")
    score: float
    metadata: dict[str, Any] = Field(description="What the index stores about the file: size, date taken, camera, ...")
    thumbnail: bool = Field(description="Whether a thumbnail of this picture follows in the result's content.")


class SearchResults(BaseModel):
    """The pictures that best match the words, best first (newest first when sort is "date")."""

    query: str
    sort: Literal["score", "date"] = "score"
    results: list[PictureHit]
    no_good_match: bool = Field(
        default=False,
        description="True when results is empty because every match scored below the score floor (not an empty "
        "index, nor filters nothing passes): nothing indexed matches well; min_score 0 shows the weak ones.",
    )
    below_floor: int = Field(default=0, description="How many of the best matches fell below the score floor.")
    floor: float | None = Field(default=None, description="The score floor applied (None: none).")


class SimilarResults(BaseModel):
    """The indexed pictures closest to one indexed picture, best first or newest first as sort says
    (the picture itself left out)."""

    like_id: str
    like_path: str
    sort: Literal["score", "date"] = "score"
    results: list[PictureHit]
    no_good_match: bool = Field(
        default=False,
        description="True when results is empty because every match scored below the score floor (not an empty "
        "index, nor filters nothing passes): nothing indexed matches well; min_score 0 shows the weak ones.",
    )
    below_floor: int = Field(default=0, description="How many of the best matches fell below the score floor.")
    floor: float | None = Field(default=None, description="The score floor applied (None: none).")


class PictureDescription(BaseModel):
    """What the configured captioner says about one indexed picture now (the index is not changed)."""

    id: str
    uri: str
    path: str
    text: str = Field(description="The caption, or the answer to the configured prompt.")
    captioner: str
    prompt: str
    truncated: bool = Field(description="Whether the caption stopped at the token limit.")
    ocr_text: str
    thumbnail: bool


class IndexRun(BaseModel):
    """The server's indexing run: its state, progress and, once finished, its report."""

    state: Literal["idle", "running", "finished", "failed"]
    folders: list[str]
    done: int
    total: int
    failed: int
    started_at: float | None
    finished_at: float | None
    report: dict[str, Any] | None = Field(description="new, updated, unchanged, moved, removed, failed files, ...")
    error: str | None


class IndexFacts(BaseModel):
    """Where the index lives, which models built it and how many pictures it holds."""

    uri: str
    collection: str
    exists: bool
    images: int
    embedder: str | None
    dimension: int | None
    captioners: list[str]
    data_dir: str
    config_file: str | None
    visual_model: str | None
    captioned: int = Field(description="Of images, how many have their caption.")
    caption_pending: int = Field(description="Of images, how many are stored and wait for their caption.")
    with_image_vectors: int = Field(description="Of images, how many have an image vector (0 without visual_model).")
    run: dict[str, Any] | None = Field(
        description="The index run under way, or None: pid, started_at, stage (storing or captioning), found, stored, "
        "captioned of to_caption, caption_rate (pictures/s) and eta_seconds."
    )


class ServerStatus(BaseModel):
    """The index, the indexing run (when folders may be indexed) and this server."""

    index: IndexFacts
    indexing: IndexRun | None = Field(description="None when the server was started without --folder.")
    folders: list[str] = Field(
        description="The --folder folders: the only ones index_folder may index and whose pictures are shown "
        "(none: any indexed picture whose stored path holds no symlink is shown)."
    )
    version: str
