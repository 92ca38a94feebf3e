"""/api/pictures: the library, newest first (date taken, else file date), a page at a time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query

from ...pictures.files import path_key
from ...results import captions_of_row
from ...search.library import MAX_PAGE, LibraryPicture
from ..served import Served
from .images import image_links


def router(served: Served) -> APIRouter:
    routes = APIRouter()

    @routes.get("/api/pictures", summary="The library, newest first")
    def pictures(
        limit: int = Query(60, ge=1, le=MAX_PAGE, description="How many pictures on this page."),
        before: str | None = Query(
            None,
            max_length=200,
            description="The next_before of the page before, or a date (2024-06-30) to start at the pictures taken before it.",
        ),
    ) -> dict[str, Any]:
        """Indexed pictures newest first, by date taken, else the file's modification time; pictures
        waiting for their caption too. Ask again with before=next_before for the next page."""
        page = served.engine.browse(limit, before=before)
        return {
            "total": page.total,
            "limit": limit,
            "next_before": page.next_before,
            "pictures": [picture_json(picture, served) for picture in page.pictures],
        }

    return routes


def picture_json(picture: LibraryPicture, served: Served) -> dict[str, Any]:
    image_id = path_key(picture.path)
    row = {**picture.metadata, "path": picture.path}
    # Said here, so the page shows a picture it cannot have in its place without asking for it.
    servable = served.guard.real_path(row) is not None
    return {
        "id": image_id,
        "path": picture.path,
        "caption": picture.caption,
        "caption_pending": picture.caption_pending,
        # Each captioner's caption, where several captioned it (as /api/search gives them).
        "captions": [asdict(part) for part in captions_of_row({**picture.metadata, "caption": picture.caption})],
        "ocr_text": str(picture.metadata.get("ocr_text") or ""),
        # The Unix time it is ordered by, and whether that is the date taken or the file's date.
        "date": picture.date,
        "date_source": picture.date_source,
        "metadata": picture.metadata,
        "servable": servable,
        "missing": not servable and served.guard.missing(row),
        **image_links(image_id),
    }
