"""Image–text models (CLIP, SigLIP, SigLIP 2, MetaCLIP 2, sentence-transformers CLIP models):
pictures and words in one vector space.

The picture tower embeds each indexed picture; the text tower embeds queries, in any language
the model was trained on. Loaded with transformers' Auto classes, by hub id or local folder.
With cache_dir, the text tower is also exported to ONNX the first time the model loads, and
later instances embed queries with that export, never importing torch.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, EmbedderError, MissingDependencyError
from .base import unit_vector
from .fast_path import FastPath

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings
    from .onnx_encoder import OnnxTextEncoder

log = logging.getLogger(__name__)

# Model types whose text tower was trained on padding to a fixed length: other lengths shift
# its vectors (SigLIP pools the last token).
_FIXED_LENGTH_TEXT = {"siglip": 64, "siglip2": 64}
VISUAL_ID_PREFIX = "visual:"


class VisualEmbedder:
    """One image–text model: encode_images for pictures, encode_texts for queries, unit vectors."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 16,
        dtype: str = "auto",
        cache_dir: str | Path | None = None,
    ):
        self.model_name = model
        self.requested_device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = "cpu"
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._model: Any = None
        self._processor: Any = None
        self._text_length: int | None = None
        self._dimension: int | None = None
        self._load_lock = threading.Lock()
        self._fast = FastPath(self.cache_dir, self.id, lambda: os.path.expanduser(self.model_name))

    @classmethod
    def from_settings(cls, settings: Settings) -> VisualEmbedder | None:
        """The visual model the settings name (--visual-model), or None when there is none."""
        if not settings.visual_model:
            return None
        return cls(
            settings.visual_model, device=settings.device, dtype=settings.dtype, cache_dir=settings.resolved_models_dir
        )

    @property
    def id(self) -> str:
        """Recorded in the index beside the caption embedder's."""
        return VISUAL_ID_PREFIX + self.model_name

    @property
    def dimension(self) -> int:
        # Asked of the model itself: configs name the shared space's size differently
        # (projection_dim, projection_size, a tower's hidden size).
        if self._dimension is None:
            self._dimension = len(self.encode_texts(["a picture"])[0])
        return self._dimension

    @property
    def image_side(self) -> int:
        """The picture size the model looks at (pictures are decoded at least this large)."""
        self._load()
        size = getattr(self._processor.image_processor, "size", None) or {}
        side = size.get("shortest_edge") or max(size.get("height", 0), size.get("width", 0))
        return int(side or 224)

    def encode_images(self, images: list[Image.Image]) -> list[list[float]]:
        """One unit vector per picture (upright RGB)."""
        self._load()
        vectors: list[list[float]] = []
        for start in range(0, len(images), max(1, self.batch_size)):
            batch = self._processor(images=images[start : start + self.batch_size], return_tensors="pt")
            vectors += self._features("get_image_features", batch)
        return vectors

    @property
    def fast_path_active(self) -> bool:
        """True when texts are embedded by the text tower's ONNX export: the torch model is not loaded."""
        return self._model is None and self._fast_encoder() is not None

    def encode_texts(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in the pictures' space."""
        encoder = self._fast_encoder() if self._model is None else None
        if encoder is not None:
            made_by = f"visual model {self.model_name}"
            return [unit_vector(row, made_by) for row in encoder.encode(texts).tolist()]
        self._load()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), 64):
            vectors += self._features("get_text_features", self._text_batch(texts[start : start + 64]))
        return vectors

    def encode_query(self, text: str) -> list[float]:
        return self.encode_texts([text])[0]

    def _text_batch(self, texts: list[str]) -> Any:
        """The text tower's input tensors for texts."""
        padding: dict[str, Any] = (
            {"padding": "max_length", "max_length": self._text_length} if self._text_length else {"padding": True}
        )
        return self._processor(text=texts, truncation=True, return_tensors="pt", **padding)

    def _fast_encoder(self) -> OnnxTextEncoder | None:
        return self._fast.encoder()

    def _export_for_next_time(self) -> None:
        """Export the just-loaded text tower unless a valid export exists (a damaged one is set aside first)."""
        cache = self._fast.cache()
        if cache is not None and self._fast.encoder() is None:
            cache.build_if_missing(self._model, export=self._export_text_tower)
        self._fast.close()

    def _export_text_tower(self, model: Any, folder: Path, labels: dict[str, str]) -> object:
        from .onnx_export import export_text_tower

        return export_text_tower(
            model, self._processor.tokenizer, self._text_batch, folder, labels, fixed_length=self._text_length
        )

    def _features(self, method: str, batch: Any) -> list[list[float]]:
        import torch

        batch = {name: value.to(self.device) for name, value in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self._model.dtype)
        with torch.inference_mode():
            out = getattr(self._model, method)(**batch)
        # transformers 5 returns the projected vectors as the pooler output.
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        return [unit_vector(row, f"visual model {self.model_name}") for row in features.float().cpu().tolist()]

    def _load(self) -> None:
        with self._load_lock:
            if self._model is None:
                self._model, self._processor = self._load_model()
                self._export_for_next_time()

    def _load_model(self) -> tuple[Any, Any]:
        try:
            from transformers import AutoConfig, AutoModel, AutoProcessor
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise MissingDependencyError(f"visual models need {exc.name}") from None
        from ..local_models.fetch import ensure_model_available
        from ..local_models.loading import load_hint, pick_device, pick_dtype, quiet_pil_fallback
        from .sentence_transformers_clip import clip_module_folder

        ensure_model_available(self.model_name, "visual model", EmbedderError)
        source = os.path.expanduser(self.model_name)
        where: dict[str, Any] = {}
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            # A sentence-transformers CLIP keeps its transformers model in a module folder.
            module = clip_module_folder(self.model_name)
            if not module:
                raise EmbedderError(load_hint(self.model_name, exc, kind="visual model")) from None
            if os.path.isdir(source):
                source = os.path.join(source, module)
            else:
                where = {"subfolder": module}
            try:
                config = AutoConfig.from_pretrained(source, **where)
            except (OSError, ValueError) as exc:
                raise EmbedderError(load_hint(self.model_name, exc, kind="visual model")) from None
        if getattr(config, "vision_config", None) is None or getattr(config, "text_config", None) is None:
            raise ConfigError(
                f"{self.model_name} is a {config.model_type!r} model, not an image–text embedding model; "
                "pick one such as google/siglip2-base-patch16-224 or openai/clip-vit-base-patch32"
            )
        self.device = pick_device(self.requested_device)
        try:
            model = AutoModel.from_pretrained(source, dtype=pick_dtype(self.device, self.dtype), **where)
            with quiet_pil_fallback():
                processor = AutoProcessor.from_pretrained(source, **where)
        except (OSError, ValueError) as exc:
            raise EmbedderError(load_hint(self.model_name, exc, kind="visual model")) from None
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ConfigError(
                f"{self.model_name} ({config.model_type!r}) has no picture and text towers to embed with; "
                "pick a CLIP, SigLIP, SigLIP 2 or MetaCLIP 2 model"
            )
        self._text_length = _FIXED_LENGTH_TEXT.get(config.model_type)
        if self._text_length:
            limit = getattr(config.text_config, "max_position_embeddings", self._text_length)
            self._text_length = min(self._text_length, int(limit))
        return model.to(self.device).eval(), processor
