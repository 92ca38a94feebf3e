"""The Rich progress display the CLI hands to the indexer (images/s, ETA, live failure lines)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..results import FailedFile

# Control characters (a newline in a file name) would break a message over several lines.
_ESCAPED_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


def one_line(text: str) -> str:
    """text with control characters shown as escapes, so a path prints on one line."""
    return text.translate(_ESCAPED_CONTROLS)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="progress.data.speed")


class RichIndexProgress:
    """Draws a progress bar on stderr, one more per pipeline stage that has work (each with
    its own rate and ETA); prints one line per failed file above them."""

    def __init__(self, console: Console, label: str = "indexing"):
        self.console = console
        self._label = label
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._stages: dict[str, TaskID] = {}

    def __enter__(self) -> RichIndexProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, total: int) -> None:
        self._task = self._progress.add_task(escape(self._label), total=total)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        """A stage's bar: total sets its size, total_less takes pictures it will not see off it."""
        task = self._stages.get(name)
        if task is None:
            if not total:
                return
            task = self._stages[name] = self._progress.add_task(f"  {name}", total=total)
        if total is not None:
            self._progress.update(task, total=total)
        if total_less:
            current = self._progress.tasks[self._stage_index(task)].total or 0
            self._progress.update(task, total=max(0, current - total_less))
        if done:
            self._progress.advance(task, done)

    def _stage_index(self, task: TaskID) -> int:
        return next(i for i, shown in enumerate(self._progress.tasks) if shown.id == task)

    def failed(self, failure: FailedFile) -> None:
        self._progress.console.print(
            f"[yellow]skipped[/] {escape(one_line(failure.path))}: {escape(failure.reason)}", highlight=False
        )


class RichRowProgress:
    """A progress bar on stderr for work counted in rows (exports)."""

    def __init__(self, console: Console, label: str, total: int | None):
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(escape(label)),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> RichRowProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self) -> None:
        self._progress.advance(self._task, 1)
