"""Loading a transformers model on this machine: on which device and in which dtype, with
transformers' noise kept down, and one line saying why a model did not load.

Shared by the local captioner (captioners/transformers_local.py) and the visual embedder
(embedders/visual.py); torch is imported only when a device or dtype is picked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError

# int8: nn.Linear weights quantized after loading (torch dynamic quantization), CPU only.
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")


def pick_device(requested: str = "auto") -> str:
    """cuda, then mps, then cpu, unless a device is named."""
    import torch

    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str = "auto") -> Any:
    """The named dtype; for auto, half precision on accelerators (bf16 where supported), and on
    a CPU bf16 where it computes bf16 natively, else fp32."""
    import torch

    if requested and requested != "auto":
        if requested not in DTYPES:
            raise ConfigError(f"unknown dtype {requested!r} (known: {', '.join(DTYPES)})")
        # int8 models load and compute their activations in float32.
        return torch.float32 if requested == "int8" else getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    # Measured with full-size models (benchmarks/caption_throughput.py): on a CPU with AMX,
    # bf16 captions 2-3x faster than fp32; without native bf16 it is emulated and slower.
    return torch.bfloat16 if cpu_computes_bf16() else torch.float32


def cpu_computes_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic (Intel AMX or AVX-512 BF16), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
                cpuinfo = info.read(1 << 16)
        except OSError:  # not Linux: fp32, which is always right
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


class _PilFallbackFilter(logging.Filter):
    """Drops transformers' notice that an image processor runs on PIL for want of torchvision."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


@contextlib.contextmanager
def quiet_pil_fallback() -> Iterator[None]:
    """While processors load: PIL is the processors' intended backend here, not a degraded one,
    so transformers' advice to install torchvision is noise to an imgsearch user."""
    logger = logging.getLogger("transformers.utils.import_utils")
    quiet = _PilFallbackFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_hint(model_id: str, exc: BaseException, part: str = "", kind: str = "captioning model") -> str:
    """One line saying why model_id (of kind) did not load, and what to do about it."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    source = os.path.expanduser(model_id)
    what = f"{kind} {model_id!r}" + (f" ({part})" if part else "")
    if os.path.isdir(source):
        hint = "the folder should hold a model and its processor, saved with save_pretrained"
    elif os.path.isabs(source) or model_id.startswith((".", "~")):
        # Hub ids never start with these; without this, transformers says "Repo id must be...".
        return f"cannot load {what}: no such folder"
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        hint = "the hub is unreachable offline: download it once while online, or give a local folder"
    else:
        hint = "check the model id, your network, or give a local folder"
    return f"cannot load {what}: {reason[:200]} ({hint})"
