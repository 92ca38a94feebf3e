"""The Ray Data pipeline of an index run: read and decode on CPU tasks, caption (and encode image
vectors) in one actor pool and embed in another, rows streaming back to the driver as blocks finish."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .connection import ClusterShape
from .workers import CaptioningWorker, EmbeddingWorker, decode_pictures

if TYPE_CHECKING:
    from ..config import Settings

# Ray restarts an actor whose process dies (its node lost, killed for memory) this many times
# and retries the batch it held; a model that crashes its process on every batch then fails the
# run instead of restarting for ever (Ray Data's own default).
ACTOR_RESTARTS = 4
BATCH_RETRIES = 4
# Logical CPUs: reading, decoding and embedding are light beside captioning, and a two-CPU
# machine must hold one captioning actor, one embedding actor and a decode task at once.
DECODE_CPUS = 0.5
EMBED_CPUS = 0.5
# One embedding actor keeps up with several captioners (a caption embeds in about a millisecond).
CAPTIONERS_PER_EMBEDDER = 4
# A block is the unit of work and of retry: small enough that results stream back steadily
# and a lost actor redoes little, large enough that scheduling costs nothing much.
BLOCK_BATCHES = 4
MAX_BLOCK_ROWS = 256
# Decoded pixels held per block at most (RGB at the captioner's side).
MAX_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class PipelinePlan:
    """How the pipeline is laid out on the cluster for one run."""

    side: int  # the largest side pictures are decoded at; 0: they are only checked to be whole
    batch_size: int  # pictures per captioning call
    captioning_actors: int
    cpus_per_captioner: float
    gpus_per_captioner: float
    embedding_actors: int
    block_rows: int


def plan_pipeline(shape: ClusterShape, settings: Settings, batch_size: int, side: int, wants_gpu: bool) -> PipelinePlan:
    """Captioning actors: one per GPU where the cluster has them (up to --concurrency), else
    CPU actors sharing the CPUs left after decoding and embedding."""
    batch_size = max(1, batch_size)
    spare_cpus = shape.cpus - DECODE_CPUS - EMBED_CPUS
    if wants_gpu and shape.gpus >= 1:
        actors = max(1, min(settings.concurrency, int(shape.gpus)))
        # A CPU each to feed its GPU, where the nodes have that many to spare.
        cpus, gpus = min(1.0, max(0.0, spare_cpus) / actors), 1.0
    else:
        actors = max(1, min(settings.concurrency, int(spare_cpus)))
        # Torch in an actor uses as many threads as the CPUs it holds.
        cpus, gpus = float(int(spare_cpus // actors)) if spare_cpus >= 1 else 0.0, 0.0
    pixel_bytes = side * side * 3
    rows = min(BLOCK_BATCHES * batch_size, MAX_BLOCK_ROWS)
    if pixel_bytes:
        rows = min(rows, MAX_BLOCK_BYTES // pixel_bytes)
    return PipelinePlan(
        side=side,
        batch_size=batch_size,
        captioning_actors=actors,
        cpus_per_captioner=cpus,
        gpus_per_captioner=gpus,
        embedding_actors=max(1, math.ceil(actors / CAPTIONERS_PER_EMBEDDER)),
        block_rows=max(batch_size, rows),
    )


def build_pipeline(
    ray: ModuleType,
    rows: list[dict[str, Any]],
    settings: Settings,
    plan: PipelinePlan,
    captions: bool = True,
    visual: bool = False,
) -> Any:
    """The dataset whose batches are finished rows: index, caption, failure, vector, and with
    visual the image vector. captions: whether any row needs captioning (else no captioner loads)."""
    blocks = max(1, math.ceil(len(rows) / plan.block_rows))
    pictures = ray.data.from_items(rows, override_num_blocks=blocks)
    # The driver draws its own progress bar; Ray Data's would fight it for the terminal.
    pictures.context.enable_progress_bars = False
    pictures.context.print_on_execution_start = False
    with warnings.catch_warnings():
        # Ray 2.60 marks restart and retry options as deprecated (its defaults restart for ever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        decoded = pictures.map_batches(
            decode_pictures,
            batch_size=None,  # one task per block
            batch_format="numpy",
            num_cpus=DECODE_CPUS,
        )
        captioned = decoded.map_batches(
            CaptioningWorker,
            fn_constructor_kwargs={"settings": settings, "captions": captions, "visual": visual},
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.captioning_actors),
            num_cpus=plan.cpus_per_captioner,
            num_gpus=plan.gpus_per_captioner,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=BATCH_RETRIES,
        )
        return captioned.map_batches(
            EmbeddingWorker,
            fn_constructor_kwargs={"settings": settings},
            # A block at a time: a larger batch would hold finished captions back to fill it.
            batch_size=None,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.embedding_actors),
            num_cpus=EMBED_CPUS,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=BATCH_RETRIES,
        )
