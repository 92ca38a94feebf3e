"""The commands that look after an index without captioning: `status`, `check`, `export`, `prune`, `reembed`."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# string annotations would be evaluated anew each time (about 25 ms of start-up for all commands).

import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from .application import EXIT_FILES_FAILED, EXIT_USAGE, err, fail, interrupted, out
from .option_groups import Options, with_options
from .options import CONFIG, EMBEDDER, STORE, JsonOut, engine_from

if TYPE_CHECKING:
    from ..engine import ImageSearch
    from ..results import CheckReport, IndexStatus
    from ..store.lite.keeper import KeeperState


@with_options(STORE, CONFIG)
def status(
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Print where the index lives, which models built it, how many images it holds (and how many wait
    for their caption), and the index run under way."""
    engine = engine_from(options)
    with engine:
        info = engine.status()
        keeper = engine.store.keeper()
    if as_json:
        out.print_json(json.dumps({**info.to_dict(), "keeper": keeper.to_dict() if keeper else None}))
        return
    _print_status(info, keeper, engine.store.is_embedded)


@with_options(STORE.only("data_dir"), CONFIG)
def unload(
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Stop the background process that keeps the index loaded between commands, now.

    It stops on its own once no command used the index for a while (keep_loaded, 10 minutes by default); the next command starts it again. While an index run is writing, unload leaves it alone and says who writes (exit code 3).
    """
    engine = engine_from(options)
    with engine:
        keeper = engine.store.keeper()
        stopped = engine.store.unload()
    if as_json:
        out.print_json(json.dumps({"unloaded": stopped, "keeper": keeper.to_dict() if keeper else None}))
    elif stopped and keeper is not None:
        err.print(
            f"unloaded: stopped process {keeper.pid}{_memory(keeper.memory_bytes, ', freeing ')}", highlight=False
        )
    else:
        err.print("nothing to unload: no process keeps this index loaded")


def _memory(size: "int | None", before: str = "") -> str:
    return f"{before}{size / 2**20:.0f} MB" if size else ""


def _keeper_line(keeper: "KeeperState | None") -> str:
    if keeper is None:
        return "no (the next command loads it)"
    from datetime import datetime

    line = f"by process {keeper.pid}{_memory(keeper.memory_bytes, ', ')}"
    if keeper.stops_at is not None:
        line += f", stops at {datetime.fromtimestamp(keeper.stops_at).strftime('%H:%M:%S')} if unused"
    return line + " (`imgsearch unload` stops it now)"


@with_options(EMBEDDER, STORE, CONFIG)
def check(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild a damaged index from the caption cache (nothing is captioned; the damaged copy is kept aside).",
        ),
    ] = False,
    sample: Annotated[
        int, typer.Option("--sample", help="Rows whose vector is compared with a fresh embedding of their caption.")
    ] = 200,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Read the whole index and the caption cache and report what is wrong with them.

    Exit code 0: healthy (or repaired); 1: problems found (run with --repair); 3: could not check.
    """
    from .progress import RichIndexProgress

    engine = engine_from(options)
    with engine:
        _open_index_to_check(engine)
        if repair:
            with RichIndexProgress(err) as progress:
                report = engine.repair(progress)
        else:
            report = engine.check(sample)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _print_check(report)
    # Repaired: something was done and the rebuild (if any) found every picture's caption.
    repaired = bool(report.repairs) and (report.rebuilt is None or not report.rebuilt.failed)
    if report.problems and not (repair and repaired):
        raise typer.Exit(EXIT_FILES_FAILED)


def _open_index_to_check(engine: "ImageSearch") -> None:
    """Open the index first: one that no process may open now (another holds it, its folder is
    read-only, its disk full) stops the check with exit code 3, as it says nothing about the index."""
    from ..errors import DiskFullError, IndexBusyError, IndexNotWritableError, StoreError

    try:
        _ = engine.store.connection
    except (IndexBusyError, IndexNotWritableError, DiskFullError):
        raise
    except StoreError:
        pass  # an index file that cannot be opened is damage, which the check reports


def _print_check(report: "CheckReport") -> None:
    err.print(
        f"checked {report.rows} rows ({report.rows_re_embedded} re-embedded) and {report.cache_captions} cached "
        f"captions in {report.seconds:.1f}s",
        highlight=False,
    )
    for problem in report.problems:
        err.print(f"  [red]problem[/] {escape(problem)}", highlight=False)
    for repair in report.repairs:
        err.print(f"  [green]repaired[/] {escape(repair)}", highlight=False)
    if report.ok:
        err.print("[green]no problems found[/]")
    elif not report.repairs:
        err.print(_repair_hint(report.problems), highlight=False)


def _repair_hint(problems: list[str]) -> str:
    """What `check --repair` would do about these problems, said once after them."""
    from ..upkeep.check import CACHE_PROBLEM

    does = []
    if any(problem.startswith(CACHE_PROBLEM) for problem in problems):
        does.append(
            "mends the caption cache (a damaged one is set aside and what it still holds carried into a fresh one)"
        )
    if any(not problem.startswith(CACHE_PROBLEM) for problem in problems):
        does.append("rebuilds the index from the caption cache (nothing is captioned)")
    return f"run `imgsearch check --repair`: it {' and '.join(does)}"


@with_options(STORE, CONFIG)
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl (one JSON object a line) or csv.")] = "jsonl",
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write to FILE (created when complete) instead of stdout.", show_default=False
        ),
    ] = None,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Write every indexed picture's path, caption and metadata as JSONL or CSV, streamed."""
    from ..store import ROW_FIELDS
    from ..upkeep.export import EXPORT_FORMATS, atomic_output, export_columns, write_rows
    from .progress import RichRowProgress

    if fmt not in EXPORT_FORMATS:
        fail(f"unknown --format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}", EXIT_USAGE)
    engine = engine_from(options)
    columns = export_columns(ROW_FIELDS)

    def write(stream: IO[str]) -> int:
        rows = engine.records()
        with RichRowProgress(err, "exporting", engine.store.count()) as progress:
            return write_rows(rows, stream, fmt, columns, on_row=progress.advance)

    with engine:
        if out_file is None:
            try:
                written = write(sys.stdout)
            except BrokenPipeError:
                # The reader (e.g. `| head`) stopped early: not an error.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
        else:

            def write_file() -> int:
                with atomic_output(out_file) as stream:
                    return write(stream)

            written = write_file()
    summary = {"exported": written, "format": fmt, "out": str(out_file) if out_file else None}
    if as_json and out_file is not None:
        out.print_json(json.dumps(summary))
    else:
        err.print(f"exported {written} images" + (f" to {escape(str(out_file))}" if out_file else ""))


@with_options(STORE, CONFIG)
def prune(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Only check rows under these folders (default: every row).", show_default=False),
    ] = None,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Remove from the index every picture whose file is gone. Nothing is captioned."""
    from .progress import one_line

    engine = engine_from(options)
    with engine:
        report = engine.prune(paths or None)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    for path in report.removed:
        err.print(f"  removed {escape(one_line(path))}", highlight=False)
    err.print(f"{len(report.removed)} removed of {report.checked} checked in {report.seconds:.1f}s")


@with_options(EMBEDDER, STORE, CONFIG)
def reembed(
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Re-embed every stored caption with the embedding model in use (--embed-model).

    Nothing is captioned. The new index is built beside the old one and takes its place when complete; stopped part-way, the old index is left as it was.
    """
    from .progress import RichIndexProgress

    engine = engine_from(options)
    try:
        with engine, RichIndexProgress(err, "re-embedding") as progress:
            report = engine.reembed(progress)
    except KeyboardInterrupt:
        interrupted("the index is unchanged; run `imgsearch reembed` again to start over")
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    err.print(
        f"re-embedded {report.rows} captions with {escape(report.embedder)} "
        f"(was {escape(report.previous_embedder or '-')}) in {report.seconds:.1f}s; nothing captioned"
    )


def _print_status(info: "IndexStatus", keeper: "KeeperState | None", embedded: bool) -> None:
    from ..serving.status_text import caption_counts, run_progress
    from .hit_lines import LabelledLines

    table = LabelledLines()
    table.add_row("index", escape(info.uri))
    table.add_row("collection", escape(info.collection) + ("" if info.exists else " (not created yet)"))
    for label, value in caption_counts(info):
        table.add_row(label, value)
    if info.run is not None:
        table.add_row("indexing", escape(run_progress(info.run)))
    table.add_row("embedder", escape(f"{info.embedder} ({info.dimension}-d)") if info.embedder else "-")
    if info.captions_by_captioner:
        counts = ", ".join(f"{captioner} ({count})" for captioner, count in info.captions_by_captioner.items())
        table.add_row("captions by", escape(counts))
    else:
        table.add_row("captioners", escape(", ".join(info.captioners)) or "-")
    table.add_row("data dir", escape(info.data_dir))
    table.add_row("config file", escape(info.config_file or "none"))
    if embedded:
        table.add_row("kept loaded", escape(_keeper_line(keeper)))
    table.print()
