"""The options several commands share, declared once in groups, and the one place their values become settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from .option_groups import OptionGroup, Options

if TYPE_CHECKING:
    from ..config import Settings
    from ..engine import ImageSearch


def _option(kind: type, *names: str, help: str, **details: Any) -> Any:
    """A shared option of type kind; None (not given) leaves the setting it overrides as it was."""
    return Annotated[kind | None, typer.Option(*names, help=help, show_default=False, **details)]


# Each option is named for the setting it overrides (see settings_from).

# Where the index lives: every command that opens it.
STORE = OptionGroup(
    data_dir=_option(Path, "--data-dir", help="Where the index and caption cache live (env IMGSEARCH_DATA_DIR)."),
    milvus_uri=_option(
        str, "--uri", help="Milvus server/cluster URI instead of the embedded file (env IMGSEARCH_MILVUS_URI)."
    ),
    milvus_token=_option(str, "--token", help="Milvus token (env IMGSEARCH_MILVUS_TOKEN)."),
    collection=_option(str, "--collection", help="Milvus collection name (default: images)."),
)

# The text embedder, and the device every local model runs on (the captioner's too).
EMBEDDER = OptionGroup(
    embed_model=_option(str, "--embed-model", help="Sentence-transformers model id or folder."),
    visual_model=_option(
        str,
        "--visual-model",
        help="Image–text model (CLIP, SigLIP, SigLIP 2, MetaCLIP 2; id or folder): image vectors beside captions, search by picture (opt-in).",
    ),
    device=_option(str, "--device", help="auto, cpu, cuda, cuda:1, mps."),
)

# Captioning: index, watch, describe and eval.
CAPTIONER = OptionGroup(
    captioner=_option(
        str,
        "--captioner",
        help="Captioner: transformers (default), openai, anthropic, ollama, captions, or a plugin's name.",
    ),
    caption_model=_option(
        str, "--caption-model", "-m", help="Captioning model: a transformers id or folder, or the API's model name."
    ),
    caption_prompt=_option(str, "--prompt", help="Custom instruction (or a BLIP text prefix); overrides --preset."),
    caption_preset=_option(
        str,
        "--preset",
        help="Prompt preset for instruction models: search (one or two sentences, default), detailed (a paragraph, up to 200 tokens) or alt-text (one sentence).",
    ),
    captions_file=_option(Path, "--captions-file", help="JSONL of existing captions (captions captioner)."),
    also_caption=_option(
        str,
        "--also-caption",
        metavar="NAME[,key=value...]",
        help="Another captioner whose captions each picture gets too, e.g. 'transformers,model=HuggingFaceTB/SmolVLM-256M-Instruct,preset=detailed' (keys: model, preset, prompt (last), max_new_tokens, captions_file, api_base_url, beams; several separated by ';'; '' for none). Each captioner's captions are cached on their own: adding one captions with it only.",
    ),
    batch_size=_option(int, "--batch-size", help="Images per captioning batch."),
    caption_order=_option(
        str,
        "--caption-order",
        help="Which pictures are captioned first, once every picture is stored and findable: newest (by date taken, else file date; default), oldest, or path (env IMGSEARCH_CAPTION_ORDER).",
    ),
    max_new_tokens=_option(
        int, "--max-new-tokens", help="Longest caption, in tokens (default 60; 200 with --preset detailed)."
    ),
    num_beams=_option(int, "--beams", help="Beam search width for local models (1 = greedy)."),
    dtype=_option(
        str,
        "--dtype",
        help="Local model precision: auto, float32, float16, bfloat16, int8 (CPU: int8 weights, float32 activations).",
    ),
    caption_runtime=_option(
        str,
        "--caption-runtime",
        help="How BLIP runs on a CPU: torch (default), onnx-int8-vision or onnx-int8-vision+int8-decoder (2-3.5x float32 at batch 8, quality with real weights unmeasured; env IMGSEARCH_CAPTION_RUNTIME).",
    ),
    api_base_url=_option(
        str,
        "--api-base-url",
        help="API endpoint (vLLM, LM Studio, a proxy, an Ollama host); env IMGSEARCH_API_BASE_URL.",
    ),
    concurrency=_option(
        int,
        "--concurrency",
        help="API requests in flight at once, and with --ray the most captioning actors (default 4).",
    ),
    request_timeout=_option(float, "--timeout", help="Seconds to wait for one API answer (default 60)."),
    ocr=_option(
        bool, "--ocr/--no-ocr", help="Read text inside pictures and make it searchable (needs the 'ocr' extra)."
    ),
)

# Past one machine: index and watch. Alone, --ray starts a Ray instance here (see BareOptionCommand).
RAY = OptionGroup(
    ray=_option(
        str,
        "--ray",
        metavar="[ADDRESS]",
        help="Caption and embed on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or alone for a Ray instance on this machine (needs the 'ray' extra; env IMGSEARCH_RAY). Pictures must be at the same paths on every node.",
    ),
)

# What every hit of a query must be; gathered into the command's `filters`, not settings.
FILTERS = OptionGroup(
    into="filters",
    folder=_option(str, help="Only pictures under this folder.", rich_help_panel="Filters"),
    file_type=Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="TYPE", help="Only these file types (jpeg, png, ...; repeat).", rich_help_panel="Filters"
        ),
    ],
    taken_after=_option(str, help="Taken on or after this date (YYYY-MM-DD).", rich_help_panel="Filters"),
    taken_before=_option(str, help="Taken before this date (YYYY-MM-DD).", rich_help_panel="Filters"),
    camera=_option(str, help="Only this camera (EXIF make and model).", rich_help_panel="Filters"),
    min_width=_option(int, help="At least this many pixels wide.", rich_help_panel="Filters", min=0),
    max_width=_option(int, help="At most this many pixels wide.", rich_help_panel="Filters", min=0),
    min_height=_option(int, help="At least this many pixels high.", rich_help_panel="Filters", min=0),
    max_height=_option(int, help="At most this many pixels high.", rich_help_panel="Filters", min=0),
)

# Every command.
CONFIG = OptionGroup(
    config_file=_option(Path, "--config", help="TOML config file (env IMGSEARCH_CONFIG)."),
)

# Every command; not a setting, so each command declares it as its own parameter.
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

# The value an option given without one takes.
_BARE_OPTION_VALUES = {"--ray": "local"}


class BareOptionCommand(TyperCommand):
    """A command whose options in _BARE_OPTION_VALUES may also be given without a value.

    Typer has no options with an optional value, so `--ray` alone becomes `--ray=local` before
    parsing. `--ray` followed by something that is no Ray address (a folder to index) is alone.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_bare_options_filled(args, self._bare_options()))

    def _bare_options(self) -> dict[str, str]:
        names = {name for param in self.params for name in getattr(param, "opts", ())}
        return {name: value for name, value in _BARE_OPTION_VALUES.items() if name in names}


def with_bare_options_filled(args: list[str], bare: dict[str, str]) -> list[str]:
    """args with each option of bare given without a value turned into OPTION=VALUE."""
    filled: list[str] = []
    for number, arg in enumerate(args):
        if arg == "--":
            return filled + args[number:]
        if arg in bare and not _value_follows(args[number + 1 : number + 2]):
            filled.append(f"{arg}={bare[arg]}")
        else:
            filled.append(arg)
    return filled


def _value_follows(following: list[str]) -> bool:
    from ..cluster.connection import looks_like_address

    return bool(following) and not following[0].startswith("-") and looks_like_address(following[0])


def settings_from(options: Options, **more: Any) -> Settings:
    """Settings from defaults, the config file, the environment, then the options given and more.

    more: settings a command sets from options of its own, by setting name (None = not given).
    """
    from ..config import load_settings
    from ..private_files import check_data_dir

    overrides = {**options, **more}
    config_file = overrides.pop("config_file", None)
    # Settings hold file paths as text; a Path would be refused as a str setting.
    overrides = {name: str(value) if isinstance(value, Path) else value for name, value in overrides.items()}
    settings = load_settings(overrides, config_file=config_file)
    # Before any command reads what the folder holds: a cache or model another user put there is not trusted.
    check_data_dir(settings.data_dir)
    return settings


def engine_from(options: Options) -> ImageSearch:
    """The library engine a command works through, configured by its options."""
    from ..engine import ImageSearch

    return ImageSearch(settings_from(options))
