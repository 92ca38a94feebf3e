"""Where coco-mini, the demo and benchmark set, lives; and what to do when it is not there.

coco-mini is 159 COCO photos, each with its 5 human captions, in the layout `imgsearch eval`
reads (images/*.jpg and captions.jsonl). It is not shipped with imgsearch: the photos keep
their Flickr authors' own licences. benchmarks/make_coco_mini.py makes one from COCO 2017.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "IMGSEARCH_COCO_MINI"
REPO = Path(__file__).resolve().parents[1]
# The folder looked in when the environment names none: ../shared/data/coco-mini beside the repository.
BESIDE_REPO = REPO.parent / "shared" / "data" / "coco-mini"


class DemoDataMissing(Exception):
    """coco-mini is not where it was looked for; the message says what it is and how to make it."""

    def _render_traceback_(self) -> list[str]:
        # IPython and Jupyter show these lines in place of a traceback: the message alone.
        return [str(self)]


def coco_mini_folder() -> Path:
    """The folder coco-mini is looked for in: IMGSEARCH_COCO_MINI, else the one beside the repository."""
    named = os.environ.get(ENV, "").strip()
    return Path(named).expanduser().resolve() if named else BESIDE_REPO


def coco_mini() -> Path:
    """The coco-mini folder, checked to hold images/*.jpg and captions.jsonl; DemoDataMissing if not."""
    folder = coco_mini_folder()
    lacking = _lacking(folder)
    if lacking:
        raise DemoDataMissing(_missing_line(folder, lacking))
    return folder


def coco_mini_or_exit() -> Path:
    """coco_mini() for a script: when the set is missing, exit with its one line (status 1)."""
    try:
        return coco_mini()
    except DemoDataMissing as missing:
        raise SystemExit(str(missing)) from None


def _lacking(folder: Path) -> str:
    if not folder.is_dir():
        return "there is no such folder"
    if not (folder / "captions.jsonl").is_file():
        return "it has no captions.jsonl"
    if not any((folder / "images").glob("*.jpg")):
        return "it has no images/*.jpg"
    return ""


def _missing_line(folder: Path, lacking: str) -> str:
    where = f"{ENV}={folder}" if os.environ.get(ENV, "").strip() else f"{folder} ({ENV} is not set)"
    out = "" if folder == BESIDE_REPO else f" --out {folder}"
    return (
        f"coco-mini not found at {where}: {lacking}. It is the demo set, 159 COCO photos with 5 human "
        f"captions each, not shipped (the photos keep their Flickr authors' licences). Make it from COCO 2017 val "
        f"(val2017.zip and annotations_trainval2017.zip from cocodataset.org, unzipped into one folder): "
        f"python {REPO / 'benchmarks' / 'make_coco_mini.py'} --coco COCO_FOLDER{out}"
    )
