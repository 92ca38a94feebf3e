"""The MCP tools and the picture resource, over one engine whose models stay loaded.

Each tool takes typed arguments (the SDK refuses others as a tool error) and returns a typed
result: structured content, the same as JSON text, and the pictures themselves as JPEG
thumbnails so a multimodal model can look at them.
"""

# No `from __future__ import annotations`: the SDK reads each tool's signature to build its
# JSON Schema, and real annotation objects need no evaluation there.

import base64
import inspect
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from .. import __version__
from ..errors import ImgsearchError
from ..pictures.files import path_key
from ..search.relevance import floor_facts, no_good_match_line
from ..serving.jobs import IndexJob
from ..serving.status_text import status_lines
from .pictures import PICTURE_URI, IndexedPictures, is_picture_id, picture_uri
from .schemas import (
    CaptionByCaptioner,
    Filters,
    IndexFacts,
    IndexRun,
    MinScore,
    Mode,
    Picture,
    PictureDescription,
    PictureHit,
    Query,
    SearchResults,
    ServerStatus,
    SimilarResults,
    Sort,
    Thumbnails,
    ThumbnailSize,
    TopK,
)

if TYPE_CHECKING:
    from ..engine import ImageSearch
    from ..results import SearchHit

# The resource's pictures: big enough to look at, small enough for a model's context.
RESOURCE_SIZE = 640
WaitSeconds = Annotated[
    float, Field(ge=0, le=600, description="How long to wait for the run to end before answering with its progress.")
]
FolderToIndex = Annotated[
    str | None, Field(max_length=4096, description="One of the server's --folder folders; all of them when left out.")
]
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class PictureTools:
    """The tools an MCP server offers over one engine; index_folder only with folders to index."""

    def __init__(self, engine: "ImageSearch", folders: Sequence[Path]):
        self.engine = engine
        self.folders = [Path(folder).expanduser().absolute() for folder in folders]
        self.pictures = IndexedPictures(engine, self.folders)
        self.job = IndexJob(engine, self.folders)
        # A captioner is used by one caller at a time.
        self._captioning = threading.Lock()

    def register(self, server: MCPServer) -> None:
        for tool in (self.search_pictures, self.similar_pictures, self.describe_picture, self.index_status):
            server.add_tool(tool, description=_description(tool), annotations=_READ_ONLY)
        if self.folders:
            server.add_tool(
                self.index_folder,
                description=_description(self.index_folder),
                annotations=ToolAnnotations(
                    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
                ),
            )
        server.resource(
            PICTURE_URI,
            name="picture",
            title="An indexed picture",
            mime_type="image/jpeg",
            description=f"An indexed picture by id, as a JPEG of at most {RESOURCE_SIZE} pixels on its longest side.",
        )(self.picture)

    def search_pictures(
        self,
        query: Query,
        k: TopK = 10,
        mode: Mode = None,
        filters: Filters | None = None,
        min_score: MinScore = None,
        sort: Sort = "score",
        thumbnails: Thumbnails = 4,
        thumbnail_size: ThumbnailSize = 320,
    ) -> Annotated[CallToolResult, SearchResults]:
        """Search the indexed pictures with plain words ("dog on a beach", "receipt from March"), best match first
        (or, with sort "date", the same matches newest first).

        Each result has the picture's path, caption, text read in it, score and stored metadata; the first ones
        come with a thumbnail to look at.
        """
        with _library_errors():
            hits = self.engine.query(
                query,
                k=k,
                mode=mode,
                filters=filters.search_filters() if filters else None,
                min_score=min_score,
                sort=sort,
            )
        found, images = self._hits(hits, thumbnails, thumbnail_size)
        facts = floor_facts(hits)
        result = SearchResults(query=query, sort=sort, results=found, **facts)
        return _answer(result, images, _pending_note(found) + _floor_note(repr(query), facts))

    def similar_pictures(
        self,
        picture: Picture,
        k: TopK = 10,
        filters: Filters | None = None,
        min_score: MinScore = None,
        sort: Sort = "score",
        thumbnails: Thumbnails = 4,
        thumbnail_size: ThumbnailSize = 320,
    ) -> Annotated[CallToolResult, SimilarResults]:
        """More like this: the indexed pictures closest to an indexed picture (by id or path), best first
        (or, with sort "date", newest first)."""
        with _library_errors():
            picture_id, row = self.pictures.find(picture)
            hits = self.engine.similar(
                row["path"],
                k=k,
                filters=filters.search_filters() if filters else None,
                min_score=min_score,
                sort=sort,
            )
        found, images = self._hits(hits, thumbnails, thumbnail_size)
        facts = floor_facts(hits)
        result = SimilarResults(like_id=picture_id, like_path=row["path"], sort=sort, results=found, **facts)
        return _answer(result, images, _pending_note(found) + _floor_note(f"pictures like {row['path']}", facts))

    def describe_picture(
        self, picture: Picture, thumbnail_size: ThumbnailSize = 320
    ) -> Annotated[CallToolResult, PictureDescription]:
        """Caption an indexed picture (by id or path) anew with the server's captioner; the index is not changed."""
        with _library_errors():
            picture_id, row = self.pictures.find(picture)
        source = self.pictures.source(row)
        if source is None:
            raise ToolError(
                f"{row['path']}: this picture's file cannot be read here (moved, changed, or outside the served folders)"
            )
        if self.job.running:
            raise ToolError("an indexing run is using the captioner: describe the picture once it has finished")
        with self._captioning, _library_errors():
            described = self.engine.describe(source)
        jpeg = self.pictures.jpeg(picture_id, row, thumbnail_size)
        result = PictureDescription(
            id=picture_id,
            uri=picture_uri(picture_id),
            path=row["path"],
            text=described.text,
            captioner=described.captioner,
            prompt=described.prompt,
            truncated=described.truncated,
            ocr_text=described.ocr_text,
            thumbnail=jpeg is not None,
        )
        return _answer(result, [(f"{row['path']} (id {picture_id})", jpeg)] if jpeg else [])

    def index_status(self) -> Annotated[CallToolResult, ServerStatus]:
        """Where the index lives, which models built it, how many pictures it holds, and any indexing run."""
        with _library_errors():
            info = self.engine.status()
        status = ServerStatus(
            index=IndexFacts(**info.to_dict()),
            indexing=IndexRun(**self.job.snapshot()) if self.folders else None,
            folders=[str(folder) for folder in self.folders],
            version=__version__,
        )
        return _answer(status, [], status_lines(info))

    async def index_folder(
        self, folder: FolderToIndex = None, wait_seconds: WaitSeconds = 60
    ) -> Annotated[CallToolResult, IndexRun]:
        """Index the server's folders (or one of them): new and changed pictures are captioned and embedded,
        pictures gone from them are dropped from the index. Answers when the run ends or after wait_seconds,
        whichever is first; index_status follows a longer run."""
        folders = self.folders
        if folder is not None:
            wanted = Path(folder).expanduser().absolute()  # noqa: ASYNC240 - no disk access worth a thread
            folders = [known for known in self.folders if known == wanted]
            if not folders:
                raise ToolError(f"{folder}: not one of this server's folders ({', '.join(map(str, self.folders))})")
        if not self.job.start(folders):
            raise ToolError("an indexing run is already going: follow it with index_status")
        with anyio.move_on_after(wait_seconds):
            # The run is a thread that sets no anyio event; a tenth of a second's poll is cheap.
            while self.job.running:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        return _answer(IndexRun(**self.job.snapshot()), [])

    def picture(self, picture_id: str) -> bytes:
        if not is_picture_id(picture_id):
            raise ResourceNotFoundError("no such picture in the index: picture ids are 32 hex digits")
        try:
            _, row = self.pictures.find(picture_id)
        except ImgsearchError as exc:
            raise ResourceNotFoundError(str(exc)) from None
        jpeg = self.pictures.jpeg(picture_id, row, RESOURCE_SIZE)
        if jpeg is None:
            raise ResourceError(
                f"{row['path']}: this picture's file cannot be shown (moved, changed, or outside the served folders)"
            )
        return jpeg

    def stop(self) -> None:
        """Stop an indexing run after its current batch."""
        self.job.stop()

    def _hits(
        self, hits: "list[SearchHit]", thumbnails: int, size: int
    ) -> tuple[list[PictureHit], list[tuple[str, bytes]]]:
        found: list[PictureHit] = []
        images: list[tuple[str, bytes]] = []
        for rank, hit in enumerate(hits):
            picture_id = path_key(hit.path)
            jpeg = (
                self.pictures.jpeg(picture_id, {"path": hit.path, **hit.metadata}, size) if rank < thumbnails else None
            )
            if jpeg is not None:
                pending = ", caption pending" if hit.caption_pending else ""
                images.append((f"{hit.path} (id {picture_id}{pending})", jpeg))
            found.append(
                PictureHit(
                    id=picture_id,
                    uri=picture_uri(picture_id),
                    path=hit.path,
                    caption=hit.caption,
                    caption_pending=hit.caption_pending,
                    ocr_text=hit.ocr_text,
                    captions=_several_captions(hit),
                    score=hit.score,
                    metadata=hit.metadata,
                    thumbnail=jpeg is not None,
                )
            )
        return found, images


def _description(tool: Any) -> str:
    """A tool's docstring as its description: without the indentation of the source it came from,
    each paragraph on one line."""
    paragraphs = inspect.cleandoc(tool.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


@contextmanager
def _library_errors() -> Iterator[None]:
    """The library's errors say what to do; they reach the model as a tool error, not a crash."""
    try:
        yield
    except ImgsearchError as exc:
        raise ToolError(str(exc)) from None


def _pending_note(found: list[PictureHit]) -> list[str]:
    """A line naming the results without a caption yet, so a model reading the text does not take '' for one."""
    pending = [hit.path for hit in found if hit.caption_pending]
    if not pending:
        return []
    return [
        "caption pending (stored by an index run, not captioned yet; found by file and folder names, dates or looks): "
        + ", ".join(pending)
    ]


def _floor_note(what: str, facts: dict[str, Any]) -> list[str]:
    """A line saying the results are empty for want of a good match, not for want of pictures."""
    if not facts["no_good_match"]:
        return []
    return [no_good_match_line(what, facts["below_floor"], facts["floor"], "min_score 0")]


def _answer(result: BaseModel, images: list[tuple[str, bytes]], notes: Sequence[str] = ()) -> CallToolResult:
    """The result as structured content and as JSON text, any notes in words, then each picture after its label."""
    content: list[ContentBlock] = [TextContent(type="text", text=result.model_dump_json())]
    content.extend(TextContent(type="text", text=note) for note in notes)
    for label, jpeg in images:
        content.append(TextContent(type="text", text=label))
        content.append(ImageContent(type="image", data=base64.b64encode(jpeg).decode("ascii"), mime_type="image/jpeg"))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def _several_captions(hit: "SearchHit") -> list[CaptionByCaptioner]:
    """Each captioner's caption of a picture that has several (none listed when it has one)."""
    parts = hit.captions
    return [CaptionByCaptioner(captioner=part.captioner, text=part.text) for part in parts] if len(parts) > 1 else []
