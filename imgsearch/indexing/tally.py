"""What an index run tells its report and its progress display, kept in step."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from ..pictures.files import display_path
from ..results import FailedFile, IndexReport
from .reading import Picture
from .run_file import RunProgressFile

# The stages a progress display may show, each with its own rate and ETA.
READING, CAPTIONING, STORING = "reading", "captioning", "storing"


class IndexProgress(Protocol):
    """What the pipeline tells a progress display; the CLI draws it, the library stays silent.

    A display may also have stage(name, total=..., total_less=..., done=...): the pipeline
    then reports each stage (READING, CAPTIONING, STORING) as it goes.
    """

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def failed(self, failure: FailedFile) -> None: ...


class Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure: FailedFile) -> None:
        pass


class RunTally:
    """The run's report and the caller's progress display, told together.

    Called from the reader, captioning and writer threads: the display is told one call at a
    time (its stages are optional).
    """

    def __init__(self, report: IndexReport, shown: IndexProgress | None = None, kept: RunProgressFile | None = None):
        self.report = report
        self.shown = shown or Silent()
        # Where other processes read how far the run has got (imgsearch status).
        self.kept = kept
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        with self._lock:
            self.shown.start(total)
        if self.kept is not None:
            self.kept.found_files(total)

    def advance(self, count: int) -> None:
        if count:
            with self._lock:
                self.shown.advance(count)

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        stage = getattr(self.shown, "stage", None)
        if stage is not None:
            with self._lock:
                stage(name, total=total, total_less=total_less, done=done)

    def stages_sized(self, total: int) -> None:
        for stage in (READING, CAPTIONING, STORING):
            self.stage(stage, total=total)

    def unchanged(self, count: int) -> None:
        self.report.unchanged += count
        self.advance(count)
        if self.kept is not None:
            self.kept.add_stored(count)

    def caption_known(self, picture: Picture) -> None:
        """picture needs no captioning: its caption came from the cache or from its row."""
        self.report.captions_reused += int(picture.cached)
        self.stage(CAPTIONING, total_less=1)

    def caption_reused(self) -> None:
        """A picture took a caption made for a copy of it (in this run, or cached)."""
        self.report.captions_reused += 1
        self.stage(CAPTIONING, total_less=1)

    def captioned(self, count: int) -> None:
        self.report.captioned += count

    def stored(self, pictures: list[Picture]) -> None:
        """A batch's rows are in the store."""
        counted = [picture for picture in pictures if not picture.completes_pending]
        for picture in counted:
            if picture.replaces_row:
                self.report.updated += 1
            else:
                self.report.new += 1
        self.stage(STORING, done=len(counted))
        self.advance(len(counted))
        if self.kept is not None:
            self.kept.add_stored(len(counted))
            self.kept.add_captioned(len(pictures) - len(counted))

    def captioning(self, count: int) -> None:
        """The caption stage begins, with count pictures stored without their caption."""
        self.stage(CAPTIONING, total=count)
        if self.kept is not None:
            self.kept.start_captioning(count)

    def dropped(self, picture: Picture, reason: str) -> None:
        """A picture that will get no row in this run: it leaves every stage still ahead of it."""
        self.stage(CAPTIONING, total_less=1)
        self.stage(STORING, total_less=1)
        self.failed(picture.file.path, reason)

    def failed(self, path: Path, reason: str, counted: bool = True) -> None:
        """A file that cannot be indexed; counted files are part of the progress total."""
        failure = FailedFile(display_path(path), reason)
        self.report.failed.append(failure)
        with self._lock:
            self.shown.failed(failure)
        if counted:
            self.advance(1)
