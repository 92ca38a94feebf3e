"""The commands that keep an index in step with the disk: `prune`, `reembed` and `watch`.

They register on the `imgsearch` app from cli.py, and render and exit the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from .cli import (
    EXIT_INTERRUPTED,
    ApiBaseUrl,
    BatchSize,
    Beams,
    CaptionerName,
    CaptionModel,
    CaptionsFile,
    Collection,
    Concurrency,
    ConfigFile,
    DataDir,
    Device,
    Dtype,
    EmbedModel,
    JsonOut,
    MaxNewTokens,
    Ocr,
    Preset,
    Prompt,
    Timeout,
    Token,
    Uri,
    _engine,
    _indexing_engine,
    _print_report,
    _run,
    _stopping_notice,
    app,
    err,
    out,
)


@app.command()
def prune(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Only check rows under these folders (default: every row).", show_default=False)] = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Remove from the index every picture whose file is gone. Nothing is captioned."""
    from .progress import one_line

    engine = _run(lambda: _engine(config, data_dir=data_dir, milvus_uri=uri, milvus_token=token, collection=collection))
    with engine:
        report = _run(lambda: engine.prune(paths or None))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    for path in report.removed:
        err.print(f"  removed {escape(one_line(path))}", highlight=False)
    err.print(f"{len(report.removed)} removed of {report.checked} checked in {report.seconds:.1f}s")


@app.command()
def reembed(
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Re-embed every stored caption with the embedding model in use (--embed-model).

    Nothing is captioned. The new index is built beside the old one and takes its place when complete; stopped part-way, the old index is left as it was.
    """
    from .progress import RichIndexProgress

    engine = _run(lambda: _engine(
        config, embed_model=embed_model, device=device, data_dir=data_dir,
        milvus_uri=uri, milvus_token=token, collection=collection,
    ))
    try:
        with engine, RichIndexProgress(err, "re-embedding") as progress:
            report = _run(lambda: engine.reembed(progress))
    except typer.Exit as stopped:
        if stopped.exit_code == EXIT_INTERRUPTED:
            err.print("the index is unchanged; run `imgsearch reembed` again to start over")
        raise
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    err.print(
        f"re-embedded {report.rows} captions with {escape(report.embedder)} "
        f"(was {escape(report.previous_embedder or '-')}) in {report.seconds:.1f}s; nothing captioned"
    )


@app.command()
def watch(
    paths: Annotated[list[Path], typer.Argument(help="Folders to watch (recursively).", show_default=False)],
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
    debounce: Annotated[float, typer.Option("--debounce", help="Seconds of quiet before a batch of changes is indexed.", min=0.05)] = 1.0,
    embed_model: EmbedModel = None,
    device: Device = None,
    data_dir: DataDir = None,
    uri: Uri = None,
    token: Token = None,
    collection: Collection = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Index PATHS, then keep the index current as pictures appear, change, move and vanish.

    Changes are batched (after --debounce seconds of quiet). Ctrl-C or SIGTERM stops after the current batch. With --json, each batch's report is one JSON line on stdout.
    """
    from .progress import RichIndexProgress
    from .stopping import stop_on_signals

    engine = _run(lambda: _indexing_engine(
        config, captioner=captioner, caption_model=caption_model, prompt=prompt, preset=preset,
        captions_file=captions_file, batch_size=batch_size, max_new_tokens=max_new_tokens, beams=beams,
        dtype=dtype, api_base_url=api_base_url, concurrency=concurrency, timeout=timeout, ocr=ocr,
        embed_model=embed_model, device=device, data_dir=data_dir, uri=uri, token=token, collection=collection,
    ))

    def show(report: Any) -> None:
        if as_json:
            out.print(json.dumps(report.to_dict()), highlight=False, soft_wrap=True)
        else:
            _print_report(report)

    def busy(message: str) -> None:
        err.print(f"waiting: {escape(message)}", highlight=False)

    with engine, stop_on_signals(_stopping_notice) as stop:
        err.print(f"watching {escape(', '.join(str(p) for p in paths))} (Ctrl-C to stop)", highlight=False)
        _run(lambda: engine.watch(
            paths, stop, show, progress=lambda: RichIndexProgress(err), on_busy=busy, debounce=debounce,
        ))
    err.print("stopped watching")
