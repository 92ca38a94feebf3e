"""Local captioning with transformers: BLIP-style captioners and instruction VLMs behind one class."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_CAPTION_MODEL
from ..errors import CaptionerError, ConfigError, MissingDependencyError, install_hint
from ..local_models.fetch import ensure_model_available
from ..local_models.loading import DTYPES, load_hint, pick_device, pick_dtype, quiet_pil_fallback
from .base import Captioner, CaptionFailure, CaptionInput
from .prompts import DEFAULT_PRESET, PRESETS, max_new_tokens_of, preset_max_new_tokens, resolve_prompt

if TYPE_CHECKING:
    from ..config import Settings

# Instruction VLMs need to be asked; the search preset asks for what makes a caption searchable.
DEFAULT_CHAT_PROMPT = PRESETS[DEFAULT_PRESET]
# How a BLIP model runs on the CPU (cpu_runtimes.py): torch as loaded, or its vision encoder
# int8 in ONNX Runtime, alone or with an int8 text decoder. benchmarks/caption_runtimes.py measured
# both 2-3.5x float32 at batch 8; the int8 decoder alone, 1.2x there, is not offered.
CAPTION_RUNTIMES = ("torch", "onnx-int8-vision", "onnx-int8-vision+int8-decoder")
# Florence-2 is steered by task tokens rather than free text.
FLORENCE_TASK = "<MORE_DETAILED_CAPTION>"


class TransformersCaptioner(Captioner):
    """Any image-to-text model transformers loads with AutoModelForImageTextToText.

    Models with a chat template (SmolVLM, Qwen2-VL, LLaVA...) get the prompt as a user turn;
    others (BLIP, BLIP-2, Florence-2) take the prompt as a text prefix or task token.
    """

    def __init__(
        self,
        model: str = DEFAULT_CAPTION_MODEL,
        prompt: str = "",
        device: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        preset: str = "",
        dtype: str = "auto",
        min_new_tokens: int = 0,
        caption_runtime: str = "torch",
    ):
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if dtype == "int8" and device != "auto" and not device.startswith("cpu"):
            raise ConfigError(f"dtype int8 runs on the CPU only, not on {device!r}; use --device cpu")
        check_caption_runtime(caption_runtime, dtype, device)
        self.model_id = str(model)
        self._prompt = prompt
        # Only instruction (chat) models follow a preset; BLIP-style models take a text prefix.
        self.preset = preset
        if preset:
            resolve_prompt(preset)  # an unknown preset fails now, not after the model loads
        self.dtype = dtype
        self.caption_runtime = caption_runtime
        self.requested_device = device
        self.batch_size = batch_size
        # None: the preset's budget (a detailed description needs more room than a caption).
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else preset_max_new_tokens(preset, prompt)
        self.num_beams = num_beams
        # Above 0, generation may not stop earlier (benchmarks use it for a fixed length).
        self.min_new_tokens = min_new_tokens
        self._model: Any = None
        self._processor: Any = None
        self._uses_chat = False
        self._decoder_only = False
        self.device = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformersCaptioner:
        """Built from the caption model, prompt and generation settings; the model loads on first use."""
        batch = {"batch_size": settings.batch_size} if settings.batch_size else {}  # 0: this class's default
        return cls(
            model=settings.caption_model,
            prompt=settings.caption_prompt,
            device=settings.device,
            max_new_tokens=max_new_tokens_of(settings),
            num_beams=settings.num_beams,
            preset=settings.caption_preset,
            dtype=settings.dtype,
            caption_runtime=settings.caption_runtime,
            **batch,
        )

    @property
    def id(self) -> str:
        return f"transformers:{self.model_id}"

    @property
    def prompt(self) -> str:
        # Whether the model follows instructions (and so gets a preset) is known once loaded;
        # the prompt keys the caption cache, so it must be the one actually used.
        if not self._prompt and self._model is None:
            self.load()
        return self._prompt

    @property
    def image_side(self) -> int:  # type: ignore[override]
        """The side the model's processor resizes pictures to (read once the model is loaded)."""
        self.load()
        return processor_image_side(self._processor)

    @property
    def loaded_model(self) -> Any:
        """The transformers model once load() has run; None before (building one never loads it)."""
        return self._model

    @property
    def loaded_processor(self) -> Any:
        """The processor that prepares the model's inputs once load() has run; None before."""
        return self._processor

    @property
    def uses_chat_template(self) -> bool:
        """Whether the prompt goes in as a chat user turn (known once loaded)."""
        return self._uses_chat

    @property
    def decoder_only(self) -> bool:
        """Whether generation hands back the prompt before the answer (known once loaded)."""
        return self._decoder_only

    def check_model_available(self) -> None:
        """Fail in one line, before anything loads, when the model is neither local nor to be had."""
        ensure_model_available(self.model_id, "captioning model", CaptionerError)

    def load(self) -> None:
        """Load the model and processor once (from a local path, the cache, or the hub)."""
        if self._model is not None:
            return
        self.check_model_available()
        try:
            import torch  # noqa: F401
            from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise MissingDependencyError(f"transformers backend needs {exc.name}: {install_hint()}") from None
        source = os.path.expanduser(self.model_id)
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise CaptionerError(load_hint(self.model_id, exc)) from None
        if self.caption_runtime != "torch" and config.model_type != "blip":
            raise CaptionerError(
                f"caption runtime {self.caption_runtime!r} is for BLIP models; {self.model_id} is a "
                f"{config.model_type!r} model: leave --caption-runtime at torch"
            )
        # Dynamic int8 quantization and the ONNX vision encoder have CPU kernels only.
        on_cpu = self.dtype == "int8" or self.caption_runtime != "torch"
        self.device = "cpu" if on_cpu else pick_device(self.requested_device)
        try:
            model: Any = AutoModelForImageTextToText.from_pretrained(source, dtype=pick_dtype(self.device, self._dtype))
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc) or "model type" in str(exc):
                raise CaptionerError(
                    f"{self.model_id} is a {config.model_type!r} model, not a captioning or "
                    "image-text-to-text model; pick one such as "
                    f"{DEFAULT_CAPTION_MODEL} or HuggingFaceTB/SmolVLM-256M-Instruct"
                ) from None
            raise CaptionerError(load_hint(self.model_id, exc)) from None
        except OSError as exc:
            raise CaptionerError(load_hint(self.model_id, exc)) from None
        except ImportError as exc:
            raise MissingDependencyError(_missing_package_hint(self.model_id, exc)) from None
        try:
            with quiet_pil_fallback():
                processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise CaptionerError(load_hint(self.model_id, exc, "its processor")) from None
        except ImportError as exc:
            # e.g. Qwen2-VL's and SmolVLM2's processors need torchvision, SmolVLM2's num2words.
            raise MissingDependencyError(_missing_package_hint(self.model_id, exc, "its processor")) from None
        self._uses_chat = getattr(processor, "chat_template", None) is not None
        self._decoder_only = not getattr(config, "is_encoder_decoder", False) and config.model_type not in ("blip",)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and self._decoder_only:
            # Batched generation with a decoder-only model needs the padding on the left.
            tokenizer.padding_side = "left"
        if not self._prompt:
            if self._uses_chat:
                self._prompt = resolve_prompt(self.preset)
            elif config.model_type == "florence2":
                self._prompt = FLORENCE_TASK
        self._model = apply_runtime(model.to(self.device).eval(), self.dtype, self.caption_runtime)
        self._processor = processor

    @property
    def _dtype(self) -> str:
        # The other runtimes compute in float32 (int8 weights where named), whatever auto would pick.
        return "float32" if self.caption_runtime != "torch" and self.dtype == "auto" else self.dtype

    def prompt_texts(self, count: int) -> list[str] | None:
        """The text the processor gets beside count pictures; None when the pictures go in alone."""
        if self._uses_chat:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self._prompt}]}]
            text = self._processor.apply_chat_template(messages, add_generation_prompt=True)
            return [text] * count
        return [self._prompt] * count if self._prompt else None

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        import torch

        self.load()
        images = [item.image for item in items]
        if any(image is None for image in images):
            raise CaptionerError(f"{self.id} needs decoded images")
        texts = self.prompt_texts(len(images))
        kwargs: dict[str, Any] = {"images": images, "return_tensors": "pt"}
        if texts is not None:
            kwargs.update(text=texts, padding=True)
        if self._uses_chat:
            # One picture per chat prompt: SmolVLM's processor takes a flat list as one prompt's pictures.
            kwargs["images"] = [[image] for image in images]
        inputs = self._processor(**kwargs).to(self.device)
        dtype = pick_dtype(self.device, self._dtype)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(dtype)
        lengths: dict[str, int] = {"min_new_tokens": self.min_new_tokens} if self.min_new_tokens > 0 else {}
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
                **lengths,
            )
        if self._decoder_only and "input_ids" in inputs:
            # Decoder-only models return the prompt followed by the answer; keep the answer.
            output = output[:, inputs["input_ids"].shape[1] :]
        return list(self._processor.batch_decode(output, skip_special_tokens=True))


def processor_image_side(processor: Any, fallback: int = 2048) -> int:
    """The longest side a processor feeds its model, from its size settings.

    BLIP asks for height/width 384, CLIP-like processors a shortest edge, SmolVLM a longest
    edge before it cuts tiles; decoding larger than that only costs time.
    """
    image_processor = getattr(processor, "image_processor", processor)
    sides: list[int] = []
    for name in ("size", "crop_size"):
        size = getattr(image_processor, name, None)
        if isinstance(size, int):
            sides.append(size)
            continue
        # A plain dict in saved configs, a SizeDict (attributes) once loaded.
        for key in ("height", "width", "shortest_edge", "longest_edge"):
            value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
            if isinstance(value, int) and value > 0:
                sides.append(value)
    return max(sides) if sides else fallback


def check_caption_runtime(runtime: str, dtype: str = "auto", device: str = "auto") -> None:
    """ConfigError unless runtime is known and goes with dtype and device (before anything loads)."""
    if runtime not in CAPTION_RUNTIMES:
        raise ConfigError(f"unknown caption runtime {runtime!r} (known: {', '.join(CAPTION_RUNTIMES)})")
    if runtime == "torch":
        return
    if dtype not in ("auto", "float32"):
        raise ConfigError(f"caption runtime {runtime} sets its own precision; leave --dtype at auto, not {dtype}")
    if device != "auto" and not device.startswith("cpu"):
        raise ConfigError(f"caption runtime {runtime} runs on the CPU only, not on {device!r}; use --device cpu")


def apply_runtime(model: Any, dtype: str, runtime: str) -> Any:
    """The loaded model with --dtype int8 or the caption runtime's int8 parts applied."""
    if dtype != "int8" and runtime == "torch":
        return model
    from . import cpu_runtimes

    if dtype == "int8":
        return cpu_runtimes.quantize_linear_int8(model)
    model = cpu_runtimes.use_onnx_int8_vision(model)
    if runtime == "onnx-int8-vision+int8-decoder":
        model = cpu_runtimes.quantize_text_decoder_int8(model)
    return model


def _missing_package_hint(model_id: str, exc: ImportError, part: str = "") -> str:
    # transformers names the missing package in its message's first sentence, wrapped over lines.
    message = " ".join(str(exc).split())
    reason = message.split(". ")[0].rstrip(".") if message else f"it needs the {exc.name} package"
    what = f"captioning model {model_id!r}" + (f" ({part})" if part else "")
    return f"cannot load {what}: {reason[:300]}; install it and try again"
