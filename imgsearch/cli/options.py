"""Every option more than one command takes, defined once, and the one place flags become settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from ..config import Settings
    from ..engine import ImageSearch

# Where the index lives: every command that opens it.
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where the index and caption cache live (env IMGSEARCH_DATA_DIR).", show_default=False)]
Uri = Annotated[Optional[str], typer.Option("--uri", help="Milvus server/cluster URI instead of the embedded file (env IMGSEARCH_MILVUS_URI).", show_default=False)]
Token = Annotated[Optional[str], typer.Option("--token", help="Milvus token (env IMGSEARCH_MILVUS_TOKEN).", show_default=False)]
Collection = Annotated[Optional[str], typer.Option("--collection", help="Milvus collection name (default: images).", show_default=False)]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML config file (env IMGSEARCH_CONFIG).", show_default=False)]
EmbedModel = Annotated[Optional[str], typer.Option("--embed-model", help="Sentence-transformers model id or folder.", show_default=False)]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

# Captioning: index, watch, describe and eval.
CaptionerName = Annotated[Optional[str], typer.Option("--captioner", help="Captioner: transformers (default), openai, anthropic, ollama, captions, or a plugin's name.", show_default=False)]
CaptionModel = Annotated[Optional[str], typer.Option("--caption-model", "-m", help="Captioning model: a transformers id or folder, or the API's model name.", show_default=False)]
Prompt = Annotated[Optional[str], typer.Option("--prompt", help="Custom instruction (or a BLIP text prefix); overrides --preset.", show_default=False)]
Preset = Annotated[Optional[str], typer.Option("--preset", help="Prompt preset: search (detailed, default) or alt-text (one sentence).", show_default=False)]
MaxNewTokens = Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest caption, in tokens.", show_default=False)]
Beams = Annotated[Optional[int], typer.Option("--beams", help="Beam search width for local models (1 = greedy).", show_default=False)]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="Local model precision: auto, float32, float16, bfloat16, int8 (CPU: int8 weights, float32 activations).", show_default=False)]
ApiBaseUrl = Annotated[Optional[str], typer.Option("--api-base-url", help="API endpoint (vLLM, LM Studio, a proxy, an Ollama host); env IMGSEARCH_API_BASE_URL.", show_default=False)]
Concurrency = Annotated[Optional[int], typer.Option("--concurrency", help="API requests in flight at once, and with --ray the most captioning actors (default 4).", show_default=False)]
Timeout = Annotated[Optional[float], typer.Option("--timeout", help="Seconds to wait for one API answer (default 60).", show_default=False)]
CaptionsFile = Annotated[Optional[Path], typer.Option("--captions-file", help="JSONL of existing captions (captions captioner).", show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Images per captioning batch.", show_default=False)]
Ocr = Annotated[Optional[bool], typer.Option("--ocr/--no-ocr", help="Read text inside pictures and make it searchable (needs the 'ocr' extra).", show_default=False)]

# Past one machine: index and watch. Alone, --ray starts a Ray instance here (see BareOptionCommand).
RayAddress = Annotated[Optional[str], typer.Option("--ray", metavar="[ADDRESS]", help="Caption and embed on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or alone for a Ray instance on this machine (needs the 'ray' extra; env IMGSEARCH_RAY). Pictures must be at the same paths on every node.", show_default=False)]
# The value an option given without one takes.
_BARE_OPTION_VALUES = {"--ray": "local"}

# Parameters named for their flag rather than for the setting they override.
_SETTING_OF_FLAG = {
    "uri": "milvus_uri",
    "token": "milvus_token",
    "prompt": "caption_prompt",
    "preset": "caption_preset",
    "beams": "num_beams",
    "timeout": "request_timeout",
}


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


def settings_from_flags(config: Path | None, **flags: Any) -> Settings:
    """Settings from defaults, the config file, the environment, then the flags given (None = not given)."""
    from ..config import load_settings

    # Settings hold file paths as text; a Path would be refused as a str setting.
    overrides = {
        _SETTING_OF_FLAG.get(name, name): str(value) if isinstance(value, Path) else value
        for name, value in flags.items()
    }
    return load_settings(overrides, config_file=config)


def engine_from_flags(config: Path | None, **flags: Any) -> ImageSearch:
    """The library engine a command works through, configured by its flags."""
    from ..engine import ImageSearch

    return ImageSearch(settings_from_flags(config, **flags))
