"""The commands that run the captioner: `index` and `watch` fill the index, `describe` leaves it alone."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# string annotations would be evaluated anew each time (about 25 ms of start-up for all commands).

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from .application import EXIT_FILES_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, err, fail, out
from .option_groups import Options, with_options
from .options import CAPTIONER, CONFIG, EMBEDDER, RAY, STORE, JsonOut, engine_from, settings_from

if TYPE_CHECKING:
    from ..results import CaptionUsage, IndexReport


@with_options(CAPTIONER, EMBEDDER, STORE, RAY, CONFIG)
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to index (recursively).", show_default=False)],
    options: Options,
    keep_missing: Annotated[
        bool,
        typer.Option(
            "--keep-missing", help="Keep the rows of pictures that are gone from PATHS (default: remove them)."
        ),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Build the index anew beside the current one, which answers until the new one is complete (then kept as index.db.replaced-TIME); cached captions are reused.",
        ),
    ] = False,
    as_json: JsonOut = False,
) -> None:
    """Caption, embed and store every picture under PATHS. Unchanged pictures are skipped.

    Pictures gone from PATHS leave the index (unless --keep-missing); moved ones keep their caption. Ctrl-C stops after the current batch; running the same command resumes.

    With --ray, a Ray cluster captions and embeds (one model per actor, --concurrency actors at most) while this machine finds the pictures and writes the index.
    """
    from .progress import RichIndexProgress
    from .stopping import stop_on_signals

    check_paths(paths)
    options = with_folder_captions(options, paths)
    engine = engine_from(options)
    with engine, RichIndexProgress(err) as progress, stop_on_signals(_stopping_notice) as stop:
        print_notes(engine.follow_recorded_models(captioning=True))
        report = engine.index(
            paths,
            progress=progress,
            stop=stop,
            keep_missing=keep_missing,
            rebuild=rebuild,
        )
    print_warnings(report.warnings)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    if report.interrupted:
        err.print(
            f"stopped early; run `{escape(_this_command())}` again to resume (finished captions are kept)",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FILES_FAILED)


# --debounce sits beside the captioning options it paces.
@with_options(CAPTIONER, "debounce", EMBEDDER, STORE, RAY, CONFIG)
def watch(
    paths: Annotated[list[Path], typer.Argument(help="Folders to watch (recursively).", show_default=False)],
    options: Options,
    debounce: Annotated[
        float, typer.Option("--debounce", help="Seconds of quiet before a batch of changes is indexed.", min=0.05)
    ] = 1.0,
    as_json: JsonOut = False,
) -> None:
    """Index PATHS, then keep the index current as pictures appear, change, move and vanish.

    Changes are batched (after --debounce seconds of quiet). Ctrl-C or SIGTERM stops after the current batch. With --json, each batch's report is one JSON line on stdout.
    """
    from .progress import RichIndexProgress
    from .stopping import stop_on_signals

    check_paths(paths)
    options = with_folder_captions(options, paths)
    engine = engine_from(options)

    def show(report: "IndexReport") -> None:
        if as_json:
            out.print(json.dumps(report.to_dict()), highlight=False, soft_wrap=True)
        else:
            _print_report(report)

    def busy(message: str) -> None:
        err.print(f"waiting: {escape(message)}", highlight=False)

    with engine, stop_on_signals(_stopping_notice) as stop:
        print_notes(engine.follow_recorded_models(captioning=True))
        err.print(f"watching {escape(', '.join(str(p) for p in paths))} (Ctrl-C to stop)", highlight=False)
        engine.watch(
            paths,
            stop,
            show,
            progress=lambda: RichIndexProgress(err),
            on_busy=busy,
            debounce=debounce,
        )
    err.print("stopped watching")


# One picture and no index: no options for batches, parallel requests or Milvus.
@with_options(
    CAPTIONER.only(
        "captioner",
        "caption_model",
        "caption_preset",
        "caption_prompt",
        "captions_file",
        "max_new_tokens",
        "num_beams",
        "dtype",
        "api_base_url",
        "request_timeout",
        "ocr",
        "also_caption",
    ),
    EMBEDDER.only("device"),
    STORE.only("data_dir"),
    CONFIG,
)
def describe(
    image: Annotated[Path, typer.Argument(help="The picture to describe.", show_default=False)],
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Print a caption for IMAGE (or the answer to --prompt about it) with the captioner the index was built
    with, unless one is named; the index is not touched."""
    engine = engine_from(options)
    with engine:
        print_notes(engine.follow_recorded_captioner())
        described = engine.describe(image)
    if as_json:
        out.print_json(json.dumps(described.to_dict()))
        return
    if len(described.captions) > 1:
        for part in described.captions:
            out.print(f"[bold]{escape(part.captioner)}[/]: {escape(part.text)}", highlight=False)
    else:
        out.print(escape(described.text), highlight=False)
    if described.ocr_text:
        out.print(f"text in image: {escape(described.ocr_text)}", highlight=False)
    if described.truncated:
        err.print("[yellow]cut at the token limit[/]: raise --max-new-tokens for the rest")


def check_paths(paths: "list[Path]") -> None:
    """Stop with one line and exit code 2 on a path that is not there or cannot be read, before
    any model loads (which takes seconds): a typo should not cost a model load."""
    from .progress import one_line

    for path in paths:
        shown = one_line(str(path))
        if not os.path.lexists(path.expanduser()):
            fail(f"{shown}: no such file or folder", EXIT_USAGE)
        wanted = os.R_OK | os.X_OK if path.expanduser().is_dir() else os.R_OK
        if path.expanduser().exists() and not os.access(path.expanduser(), wanted):
            fail(f"{shown}: permission denied (cannot be read)", EXIT_USAGE)


def with_folder_captions(options: Options, paths: "list[Path]") -> Options:
    """options with --captions-file set to the captions.jsonl in an indexed folder, when the
    captions captioner is to run without a captions file; said in one line."""
    from ..captioners.existing import FOLDER_CAPTIONS_NAME, folder_captions_files

    settings = settings_from(options)
    if settings.captioner != "captions" or settings.captions_file:
        return options
    found = folder_captions_files(paths)
    if len(found) > 1:
        err.print(
            f"several {FOLDER_CAPTIONS_NAME} files in the indexed folders: captions come from a .txt beside each "
            "picture unless --captions-file names one",
            highlight=False,
        )
        return options
    if not found:
        return options
    err.print(f"captions from {escape(str(found[0]))} (--captions-file names another)", highlight=False)
    return {**options, "captions_file": found[0]}


def _stopping_notice(signum: int) -> None:
    err.print("stopping after the current batch (press Ctrl-C again to stop at once)")


def _this_command() -> str:
    """The command line as typed, to repeat when asking the user to run it again."""
    import shlex

    return shlex.join(["imgsearch", *sys.argv[1:]])


def print_notes(notes: "list[str]") -> None:
    """Lines saying which of the index's recorded models a command took."""
    for note in notes:
        err.print(escape(note), highlight=False)


def print_warnings(warnings: "list[str]") -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _print_report(report: "IndexReport") -> None:
    from .progress import one_line

    parts = [
        f"[green]{report.new} new[/]",
        f"{report.updated} updated",
        f"{report.unchanged} unchanged",
        f"{report.moved} moved",
        f"{report.removed} removed",
        f"[{'red' if report.failed else 'green'}]{len(report.failed)} failed[/]",
    ]
    err.print(
        f"{', '.join(parts)} in {report.seconds:.1f}s "
        f"({report.captioned} captioned, {report.captions_reused} captions reused)"
    )
    if report.findable_seconds:
        caption_seconds = report.seconds - report.findable_seconds
        rate = (
            f" ({report.captioned / caption_seconds:.2f} pictures/s)"
            if report.captioned and caption_seconds > 0
            else ""
        )
        err.print(
            f"every picture was stored and findable after {report.findable_seconds:.1f}s; "
            f"the caption stage took {caption_seconds:.1f}s{rate}"
        )
    if report.seen and report.unchanged == report.seen and not report.captioned:
        err.print("nothing changed: no image needed captioning")
    _print_usage(report.usage)
    for failure in report.failed:
        err.print(f"  [red]failed[/] {escape(one_line(failure.path))}: {escape(failure.reason)}", highlight=False)


def _print_usage(usage: "CaptionUsage") -> None:
    """API requests, tokens and captioning time; captions cut at the token limit."""
    if usage.requests:
        err.print(
            f"captioning: {usage.requests} requests ({usage.retries} retried), "
            f"{usage.input_tokens:,} tokens in, {usage.output_tokens:,} out, {usage.seconds:.1f}s"
        )
    if usage.truncated:
        err.print(
            f"[yellow]{len(usage.truncated)} caption{' was' if len(usage.truncated) == 1 else 's were'} "
            "cut at the token limit[/] "
            "(raise --max-new-tokens to get all of them):",
            highlight=False,
        )
        for path in usage.truncated[:20]:
            err.print(f"  {escape(path)}", highlight=False)
