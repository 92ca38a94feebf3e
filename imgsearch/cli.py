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
# Captioning options, shared by index and describe.
CaptionerName = Annotated[Optional[str], typer.Option("--captioner", help="Captioner: transformers (default), openai, anthropic, ollama, captions, or a plugin's name.", show_default=False)]
CaptionModel = Annotated[Optional[str], typer.Option("--caption-model", "-m", help="Captioning model: a transformers id or folder, or the API's model name.", show_default=False)]
Prompt = Annotated[Optional[str], typer.Option("--prompt", help="Custom instruction (or a BLIP text prefix); overrides --preset.", show_default=False)]
Preset = Annotated[Optional[str], typer.Option("--preset", help="Prompt preset: search (detailed, default) or alt-text (one sentence).", show_default=False)]
MaxNewTokens = Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest caption, in tokens.", show_default=False)]
Beams = Annotated[Optional[int], typer.Option("--beams", help="Beam search width for local models (1 = greedy).", show_default=False)]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="Local model precision: auto, float32, float16, bfloat16.", show_default=False)]
ApiBaseUrl = Annotated[Optional[str], typer.Option("--api-base-url", help="API endpoint (vLLM, LM Studio, a proxy, an Ollama host); env IMGSEARCH_API_BASE_URL.", show_default=False)]
Concurrency = Annotated[Optional[int], typer.Option("--concurrency", help="API requests in flight at once (default 4).", show_default=False)]
Timeout = Annotated[Optional[float], typer.Option("--timeout", help="Seconds to wait for one API answer (default 60).", show_default=False)]
CaptionsFile = Annotated[Optional[Path], typer.Option("--captions-file", help="JSONL of existing captions (captions captioner).", show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Images per captioning batch.", show_default=False)]
Ocr = Annotated[Optional[bool], typer.Option("--ocr/--no-ocr", help="Read text inside pictures and make it searchable (needs the 'ocr' extra).", show_default=False)]


def _engine(config: Path | None = None, **overrides: Any) -> ImageSearch:
    from .config import load_settings
    from .engine import ImageSearch

    settings = load_settings(overrides, config_file=config)
    return ImageSearch(settings)


def _indexing_engine(
    config: Path | None, *, prompt: str | None, preset: str | None, captions_file: Path | None, beams: int | None,
    uri: str | None, token: str | None, timeout: float | None, **same_named: Any,
) -> ImageSearch:
    """The engine for commands that caption (index, watch): their flags mapped to settings in one place."""
    return _engine(
        config, caption_prompt=prompt, caption_preset=preset, captions_file=str(captions_file) if captions_file else None,
        num_beams=beams, milvus_uri=uri, milvus_token=token, request_timeout=timeout, **same_named,
    )


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
    captioner: CaptionerName = None,
    caption_model: CaptionModel = None,
    prompt: Prompt = None,
    preset: Preset = None,
    captions_file: CaptionsFile = None,
    batch_size: BatchSize = None,
    max_new_tokens: MaxNewTokens = None,
    beams: Beams = None,
    dtype: Dtype = None,
    api_base_url: ApiBaseUrl = None,
    concurrency: Concurrency = None,
    timeout: Timeout = None,
    ocr: Ocr = None,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    keep_missing: Annotated[bool, typer.Option("--keep-missing", help="Keep the rows of pictures that are gone from PATHS (default: remove them).")] = False,
    as_json: JsonOut = False,
) -> None:
    """Caption, embed and store every picture under PATHS. Unchanged pictures are skipped.

    Pictures gone from PATHS leave the index (unless --keep-missing); moved ones keep their caption. Ctrl-C stops after the current batch; running the same command resumes.
    """
    from .progress import RichIndexProgress
    from .stopping import stop_on_signals

    engine = _run(lambda: _indexing_engine(
        config, captioner=captioner, caption_model=caption_model, prompt=prompt, preset=preset,
        captions_file=captions_file, batch_size=batch_size, max_new_tokens=max_new_tokens, beams=beams,
        dtype=dtype, api_base_url=api_base_url, concurrency=concurrency, timeout=timeout, ocr=ocr,
        embed_model=embed_model, device=device, data_dir=data_dir, uri=uri, token=token, collection=collection,
    ))
    with engine, RichIndexProgress(err) as progress, stop_on_signals(_stopping_notice) as stop:
        report = _run(lambda: engine.index(paths, progress=progress, stop=stop, keep_missing=keep_missing))
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


def _stopping_notice(signum: int) -> None:
    err.print("stopping after the current batch (press Ctrl-C again to stop at once)")


def _this_command() -> str:
    import shlex

    return shlex.join(["imgsearch", *sys.argv[1:]])


def _print_report(report: Any) -> None:
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
    if report.seen and report.unchanged == report.seen:
        err.print("nothing changed: no image needed captioning")
    _print_usage(report.usage)
    for failure in report.failed:
        err.print(f"  [red]failed[/] {escape(one_line(failure.path))}: {escape(failure.reason)}", highlight=False)


@app.command()
def query(
    text: Annotated[Optional[str], typer.Argument(help="What to look for, in plain words.", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many results.", min=1, max=1000)] = 10,
    mode: Annotated[
        Optional[str], typer.Option(help="dense (meaning), keyword (words, file and folder names) or hybrid [default: hybrid].")
    ] = None,
    min_score: Annotated[
        Optional[float], typer.Option(help="Drop results scoring below this; none left means no good match.")
    ] = None,
    like: Annotated[
        Optional[Path], typer.Option(help="More like this: pictures whose captions are closest to this indexed picture's.")
    ] = None,
    folder: Annotated[Optional[str], typer.Option(help="Only pictures under this folder.", rich_help_panel="Filters")] = None,
    file_type: Annotated[
        Optional[list[str]], typer.Option("--type", help="Only these file types (jpeg, png, ...; repeat).", rich_help_panel="Filters")
    ] = None,
    taken_after: Annotated[
        Optional[str], typer.Option(help="Taken on or after this date (YYYY-MM-DD).", rich_help_panel="Filters")
    ] = None,
    taken_before: Annotated[
        Optional[str], typer.Option(help="Taken before this date (YYYY-MM-DD).", rich_help_panel="Filters")
    ] = None,
    camera: Annotated[Optional[str], typer.Option(help="Only this camera (EXIF make and model).", rich_help_panel="Filters")] = None,
    min_width: Annotated[Optional[int], typer.Option(rich_help_panel="Filters", min=0)] = None,
    max_width: Annotated[Optional[int], typer.Option(rich_help_panel="Filters", min=0)] = None,
    min_height: Annotated[Optional[int], typer.Option(rich_help_panel="Filters", min=0)] = None,
    max_height: Annotated[Optional[int], typer.Option(rich_help_panel="Filters", min=0)] = None,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Show the pictures that best match TEXT (or are most like --like PATH), best first."""
    if (text is None) == (like is None):
        _fail("give either TEXT to search for or --like PATH", 2)
    from .search import SearchFilters

    filters = SearchFilters(
        folder=folder, file_types=tuple(file_type or ()), taken_after=taken_after, taken_before=taken_before,
        camera=camera, min_width=min_width, max_width=max_width, min_height=min_height, max_height=max_height,
    )
    engine = _run(lambda: _engine(
        config, embed_model=embed_model, device=device, data_dir=data_dir,
        milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    with engine:
        if like is not None:
            hits = _run(lambda: engine.similar(like, k=k, filters=filters, min_score=min_score))
        else:
            hits = _run(lambda: engine.query(text or "", k=k, mode=mode, filters=filters, min_score=min_score))
    if as_json:
        out.print_json(json.dumps([hit.to_dict() for hit in hits]))
        return
    if not hits:
        err.print("no good match: nothing in the index scores high enough for this query and its filters")
        return
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("caption", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        shown_text = f"\n[dim]text in image: {escape(hit.ocr_text)}[/]" if hit.ocr_text else ""
        table.add_row(str(rank), f"{hit.score:.3f}", escape(hit.path), escape(hit.caption) + shown_text)
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


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl (one JSON object a line) or csv.")] = "jsonl",
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to FILE (created when complete) instead of stdout.", show_default=False)] = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Write every indexed picture's path, caption and metadata as JSONL or CSV, streamed."""
    from .export import EXPORT_FORMATS, atomic_output, export_columns, write_rows
    from .progress import RichRowProgress
    from .store import ROW_FIELDS

    if fmt not in EXPORT_FORMATS:
        _fail(f"unknown --format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}", EXIT_USAGE)
    engine = _run(lambda: _engine(
        config, data_dir=data_dir, milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    columns = export_columns(ROW_FIELDS)

    def write(stream: Any) -> int:
        rows = engine.records()
        with RichRowProgress(err, "exporting", engine.store.count()) as progress:
            return write_rows(rows, stream, fmt, columns, on_row=progress.advance)

    with engine:
        if out_file is None:
            try:
                written = _run(lambda: write(sys.stdout))
            except BrokenPipeError:
                # The reader (e.g. `| head`) stopped early: not an error.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
        else:
            def write_file() -> int:
                with atomic_output(out_file) as stream:
                    return write(stream)

            written = _run(write_file)
    summary = {"exported": written, "format": fmt, "out": str(out_file) if out_file else None}
    if as_json and out_file is not None:
        out.print_json(json.dumps(summary))
    else:
        err.print(f"exported {written} images" + (f" to {escape(str(out_file))}" if out_file else ""))


# prune, reembed and watch live in their own module and register on `app` when imported.
from . import cli_upkeep  # noqa: E402,F401


def _print_usage(usage: Any) -> None:
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


@app.command()
def describe(
    image: Annotated[Path, typer.Argument(help="The picture to describe.", show_default=False)],
    captioner: CaptionerName = None,
    caption_model: CaptionModel = None,
    preset: Preset = None,
    prompt: Prompt = None,
    max_new_tokens: MaxNewTokens = None,
    beams: Beams = None,
    dtype: Dtype = None,
    api_base_url: ApiBaseUrl = None,
    timeout: Timeout = None,
    ocr: Ocr = None,
    device: Device = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Print a caption for IMAGE (or the answer to --prompt about it); the index is not touched."""
    engine = _run(lambda: _engine(
        config, captioner=captioner, caption_model=caption_model, caption_prompt=prompt,
        caption_preset=preset, max_new_tokens=max_new_tokens, num_beams=beams, dtype=dtype,
        api_base_url=api_base_url, request_timeout=timeout, ocr=ocr, device=device, data_dir=data_dir,
    ))
    with engine:
        described = _run(lambda: engine.describe(image))
    if as_json:
        out.print_json(json.dumps(described.to_dict()))
        return
    out.print(escape(described.text), highlight=False)
    if described.ocr_text:
        out.print(f"text in image: {escape(described.ocr_text)}", highlight=False)
    if described.truncated:
        err.print("[yellow]cut at the token limit[/]: raise --max-new-tokens for the rest")


@app.command()
def serve(
    folders: Annotated[Optional[list[Path]], typer.Option("--folder", help="A folder whose pictures the server may show and index (repeatable) [env IMGSEARCH_SERVE_FOLDERS].", show_default=False)] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on [default: 127.0.0.1; env IMGSEARCH_SERVE_HOST].", show_default=False)] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port to listen on [default: 8000; env IMGSEARCH_SERVE_PORT].", show_default=False)] = None,
    new_token: Annotated[bool, typer.Option("--new-token", help="Require a freshly made access token and print the URL that carries it.")] = False,
    max_k: Annotated[int, typer.Option("--max-k", help="Most results one search may ask for.", min=1, max=1000)] = 100,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Serve the HTTP API and the web page; requests need IMGSEARCH_SERVE_TOKEN when it is set."""
    import secrets

    from .config import load_settings
    from .web.run import build_server, is_loopback

    joined = os.pathsep.join(str(f) for f in folders) if folders else None
    settings = _run(lambda: load_settings(dict(
        embed_model=embed_model, device=device, data_dir=data_dir, milvus_uri=uri, milvus_token=token,
        collection=collection, serve_host=host, serve_port=port, serve_folders=joined,
    ), config_file=config))
    access_token = secrets.token_urlsafe(24) if new_token else settings.serve_token
    served = [Path(f) for f in settings.serve_folders.split(os.pathsep) if f]
    server = _run(lambda: build_server(
        settings, host=settings.serve_host, port=settings.serve_port, folders=served,
        token=access_token, max_k=max_k, access_log=access_log,
    ))
    if as_json:
        out.print_json(json.dumps({"url": server.url, "token_required": bool(access_token), "folders": [str(f) for f in served]}))
    opening = f"{server.url}?token={access_token}" if new_token else server.url
    err.print(f"serving at {escape(opening)} (Ctrl-C to stop)")
    if not is_loopback(settings.serve_host) and not access_token:
        err.print("[yellow]warning:[/] listening beyond this machine with no access token; set IMGSEARCH_SERVE_TOKEN")
    _run(server.run)


@app.command(name="eval")
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="A folder with images/ and captions.jsonl.", show_default=False)],
    live: Annotated[
        bool, typer.Option("--live", help="Caption with the configured captioner instead of indexing human caption 0.")
    ] = False,
    modes: Annotated[Optional[list[str]], typer.Option("--mode", help="Search modes to compare (repeat) [default: all].")] = None,
    captioner: CaptionerName = None,
    model: CaptionModel = None,
    embed_model: EmbedModel = None,
    device: Device = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure search quality on a captioned dataset (Recall@1/5/10, MRR, nDCG@10, latency).

    The index is built in a throw-away folder; your own index is never touched.
    """
    from .evaluation import run_eval
    from .search import SEARCH_MODES, check_mode

    engine_settings = _run(lambda: _engine(
        config, captioner=captioner, caption_model=model, embed_model=embed_model, device=device
    )).settings
    chosen = [_run(lambda m=m: check_mode(m)) for m in (modes or SEARCH_MODES)]
    with err.status("evaluating…") as spinner:
        report = _run(lambda: run_eval(
            dataset, engine_settings, live=live, modes=chosen, progress=lambda text: spinner.update(text)
        ))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"{dataset} ({'live' if live else 'oracle'} mode, {report.images} images)")
    for column in ("queries", "mode", "n", "R@1", "R@5", "R@10", "MRR", "nDCG@10", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column in ("queries", "mode") else "right")
    for row in report.scores:
        table.add_row(
            row.query_set, row.mode, str(row.queries), *(f"{row.recall[c]:.1f}" for c in (1, 5, 10)),
            f"{row.mrr:.3f}", f"{row.ndcg10:.3f}", f"{row.latency_p50_ms:.1f}", f"{row.latency_p95_ms:.1f}",
        )
    out.print(table)


def main() -> None:  # pragma: no cover - console-script shim for `python -m imgsearch`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
