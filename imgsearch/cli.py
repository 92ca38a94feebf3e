"""The `imgsearch` command: parses options, calls the library, renders results and errors.

Exit codes: 0 success; 1 the run finished but some files failed; 2 bad usage or settings;
3 a model or the store could not be used; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from .engine import ImageSearch

EXIT_FILES_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130

# Model-loading progress bars would fight with ours for the terminal.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="Search a folder of pictures with plain words.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Options shared by every command, defined once.
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where the index and caption cache live [env IMGSEARCH_DATA_DIR].", show_default=False)]
Uri = Annotated[Optional[str], typer.Option("--uri", help="Milvus server/cluster URI instead of the embedded file [env IMGSEARCH_MILVUS_URI].", show_default=False)]
Token = Annotated[Optional[str], typer.Option("--token", help="Milvus token [env IMGSEARCH_MILVUS_TOKEN].", show_default=False)]
Collection = Annotated[Optional[str], typer.Option("--collection", help="Milvus collection name [default: images].", show_default=False)]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML config file [env IMGSEARCH_CONFIG].", show_default=False)]
EmbedModel = Annotated[Optional[str], typer.Option("--embed-model", help="Sentence-transformers model id or folder.", show_default=False)]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _engine(config: Path | None = None, **overrides: Any) -> ImageSearch:
    from .config import load_settings
    from .engine import ImageSearch

    settings = load_settings(overrides, config_file=config)
    return ImageSearch(settings)


def _fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _run(func: Any) -> Any:
    """Call into the library, turning its typed errors into one red line and an exit code."""
    from .errors import CaptionerError, ConfigError, ImgsearchError, PluginNotFoundError

    try:
        return func()
    except (ConfigError, PluginNotFoundError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except CaptionerError as exc:
        _fail(str(exc), EXIT_RUNTIME)
    except ImgsearchError as exc:
        _fail(str(exc), EXIT_RUNTIME)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to index (recursively).", show_default=False)],
    captioner: Annotated[Optional[str], typer.Option("--captioner", help="Captioner name: transformers (default), captions.", show_default=False)] = None,
    caption_model: Annotated[Optional[str], typer.Option("--caption-model", "-m", help="Captioning model id or folder.", show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Prompt for the captioning model.", show_default=False)] = None,
    captions_file: Annotated[Optional[Path], typer.Option("--captions-file", help="JSONL of existing captions (captions captioner).", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per captioning batch.", show_default=False)] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest caption, in tokens.", show_default=False)] = None,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Caption, embed and store every picture under PATHS. Unchanged pictures are skipped."""
    from .progress import RichIndexProgress

    engine = _run(lambda: _engine(
        config, captioner=captioner, caption_model=caption_model, caption_prompt=prompt,
        captions_file=str(captions_file) if captions_file else None, batch_size=batch_size,
        max_new_tokens=max_new_tokens, embed_model=embed_model, device=device, data_dir=data_dir,
        milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    with engine, RichIndexProgress(err) as progress:
        report = _run(lambda: engine.index(paths, progress=progress))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    if report.interrupted:
        err.print("stopped early; run the same command again to resume (finished captions are kept)")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FILES_FAILED)


def _print_report(report: Any) -> None:
    parts = [
        f"[green]{report.new} new[/]",
        f"{report.updated} updated",
        f"{report.unchanged} unchanged",
        f"[{'red' if report.failed else 'green'}]{len(report.failed)} failed[/]",
    ]
    err.print(
        f"{', '.join(parts)} in {report.seconds:.1f}s "
        f"({report.captioned} captioned, {report.captions_reused} captions reused)"
    )
    if report.seen and report.unchanged == report.seen:
        err.print("nothing changed: no image needed captioning")
    for failure in report.failed:
        err.print(f"  [red]failed[/] {escape(failure.path)}: {escape(failure.reason)}", highlight=False)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="What to look for, in plain words.", show_default=False)],
    k: Annotated[int, typer.Option("-k", "--top", help="How many results.", min=1, max=1000)] = 10,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Show the pictures whose captions best match TEXT, best first."""
    engine = _run(lambda: _engine(
        config, embed_model=embed_model, device=device, data_dir=data_dir,
        milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    with engine:
        hits = _run(lambda: engine.query(text, k=k))
    if as_json:
        out.print_json(json.dumps([hit.to_dict() for hit in hits]))
        return
    if not hits:
        err.print("no images in the index match")
        return
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("caption", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", escape(hit.path), escape(hit.caption))
    out.print(table)


@app.command()
def status(
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Print where the index lives, which models built it, and how many images it holds."""
    engine = _run(lambda: _engine(
        config, data_dir=data_dir, milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    with engine:
        info = _run(engine.status)
    if as_json:
        out.print_json(json.dumps(info.to_dict()))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("index", escape(info.uri))
    table.add_row("collection", escape(info.collection) + ("" if info.exists else " (not created yet)"))
    table.add_row("images", str(info.images))
    table.add_row("embedder", escape(f"{info.embedder} ({info.dimension}-d)") if info.embedder else "-")
    table.add_row("captioners", escape(", ".join(info.captioners)) or "-")
    table.add_row("data dir", escape(info.data_dir))
    table.add_row("config file", escape(info.config_file or "none"))
    out.print(table)


def main() -> None:  # pragma: no cover - console-script shim for `python -m imgsearch`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
