"""RayCaptionService: the indexer's CaptionService, captioning, embedding and encoding pictures on a Ray cluster."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .. import errors
from ..captioners.base import Captioner, CaptionFailure
from ..errors import ClusterError, ConfigError, ImgsearchError
from ..factory import build_visual
from ..pictures.files import display_path
from .connection import RayConnection
from .pipeline import BATCH_RETRIES, build_pipeline, plan_pipeline
from .stand_in import ClusterCaptioner, ClusterVisual
from .workers import (
    CAPTION,
    CONTENT_HASH,
    ENCODE,
    FAILURE,
    INDEX,
    KNOWN,
    PATH,
    SIDE,
    VECTOR,
    VISUAL,
    captioner_facts,
    unreadable_paths,
    visual_facts,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..indexing.reading import Picture

# Pictures every node is asked to read before a run starts (the first, the last, and between).
VISIBILITY_SAMPLE = 16
# Seconds to wait for the nodes to answer that check.
VISIBILITY_TIMEOUT = 120.0
# Settings that may name a file or folder on this machine, which workers must find by an absolute path.
_PATH_SETTINGS = ("caption_model", "captions_file", "embed_model", "visual_model")
# Lines of a worker's traceback that name the error raised: imgsearch's own, or any.
_OWN_ERROR_LINE = re.compile(r"^imgsearch\.errors\.(?P<name>\w+): (?P<message>.+)$", re.MULTILINE)
_ERROR_LINE = re.compile(r"^[\w.]+(?:Error|Exception|Exit|Interrupt): .+$", re.MULTILINE)

Finished = list[tuple["Picture", "str | CaptionFailure", "list[float] | None"]]


class RayCaptionService:
    """Captions and embeds pictures on a Ray cluster, streaming finished ones back; with a visual
    model in settings, it encodes their image vectors there too.

    configured is the run's captioner as built here; it is asked only for its identity. The
    driver's indexer uses self.captioner instead, which learns the prompt from the cluster,
    and self.visual (None without a visual model), which learns its vectors' length there.
    The cluster builds its captioners, embedders and image–text models from settings, as the
    engine does here.
    """

    def __init__(self, settings: Settings, configured: Captioner, address: str):
        self.settings = _as_workers_see_it(settings)
        self.connection = RayConnection(address)
        self.captioner = ClusterCaptioner(configured, self._captioner_facts)
        visual = build_visual(settings)
        self.visual = ClusterVisual(visual, self._visual_facts) if visual is not None else None
        # Captioners that call an API, or read captions from files, need no GPU.
        self._wants_gpu = (
            configured.needs_pixels and not _calls_an_api(configured) and not settings.device.startswith("cpu")
        )
        self._visual_wants_gpu = visual is not None and not settings.device.startswith("cpu")

    def connect(self) -> None:
        """Join the cluster (from the main thread: where Ray sets itself up to be stopped)."""
        self.connection.ray()

    def caption_and_embed(self, pictures: list[Picture]) -> Generator[Finished, None, None]:
        """Finished (picture, caption or CaptionFailure, vector) lists, in the order blocks finish.

        A picture sent with its caption is only embedded (and encoded); one that needs an image
        vector has it set as its visual_vector. Closing the iterator stops the pipeline and its actors.
        """
        if not pictures:
            return
        ray = self.connection.ray()
        shape = self.connection.shape()
        self._check_readable(ray, shape.node_ids, pictures)
        to_caption = any(picture.caption is None for picture in pictures)
        encode = [self.visual is not None and picture.needs_visual for picture in pictures]
        # Decoded at the side the local reader uses: the captioner's, or the visual model's if larger.
        caption_side = self.captioner.image_side if to_caption else 0
        visual_side = self.visual.image_side if self.visual is not None and any(encode) else 0
        rows: list[dict[str, Any]] = [
            {
                INDEX: i,
                PATH: str(picture.file.path),
                CONTENT_HASH: picture.content_hash,
                CAPTION: picture.caption or "",
                KNOWN: picture.caption is not None,
                ENCODE: encode[i],
                SIDE: max(caption_side if picture.caption is None else 0, visual_side if encode[i] else 0),
            }
            for i, picture in enumerate(pictures)
        ]
        wants_gpu = (to_caption and self._wants_gpu) or (any(encode) and self._visual_wants_gpu)
        plan = plan_pipeline(shape, self.settings, self.captioner.batch_size, max(row[SIDE] for row in rows), wants_gpu)
        dataset = build_pipeline(ray, rows, self.settings, plan, captions=to_caption, visual=any(encode))
        batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except ray.exceptions.RayError as exc:
                    raise _run_error(exc) from None
                yield _finished(pictures, batch, encode)
        finally:
            # Shuts the pipeline down (its actors with it) when the run stops before the end.
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Leave the cluster (stopping a Ray instance started for this run)."""
        self.connection.close()

    def _captioner_facts(self) -> tuple[str, int]:
        """Asked once, by the first picture that needs a caption: a run with nothing new loads no model."""
        prompt, side = self._ask_facts(captioner_facts, self._wants_gpu)
        return prompt, side

    def _visual_facts(self) -> tuple[int, int]:
        """Asked once, when the index is made or a picture needs an image vector."""
        dimension, side = self._ask_facts(visual_facts, self._visual_wants_gpu)
        return dimension, side

    def _ask_facts(self, facts: Any, wants_gpu: bool) -> Any:
        """facts(settings), run as a Ray task needing what a captioning actor needs (the model loads there)."""
        ray = self.connection.ray()
        shape = self.connection.shape()
        gpus = 1 if wants_gpu and shape.gpus >= 1 else 0
        # max_calls=1: the worker exits afterwards, so its copy of the model leaves the GPU.
        task = ray.remote(num_cpus=min(1.0, shape.cpus), num_gpus=gpus, max_calls=1, max_retries=BATCH_RETRIES)(facts)
        try:
            return ray.get(task.remote(self.settings))
        except ray.exceptions.RayError as exc:
            raise _run_error(exc) from None

    def _check_readable(self, ray: Any, node_ids: tuple[str, ...], pictures: list[Picture]) -> None:
        """Refuse the run when a node cannot read the pictures as this machine does."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        samples = [(str(p.file.path), p.file.size) for p in _spread(pictures, VISIBILITY_SAMPLE)]
        check = ray.remote(num_cpus=0)(unreadable_paths)
        answers = [
            check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(samples)
            for node_id in node_ids
        ]
        try:
            found = ray.get(answers, timeout=VISIBILITY_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(
                f"the Ray nodes did not say within {VISIBILITY_TIMEOUT:.0f} s whether they can read the pictures"
            ) from None
        except ray.exceptions.RayError as exc:
            raise _run_error(exc) from None
        for node, problems in found:
            if problems:
                path, why = problems[0]
                raise ConfigError(
                    f"Ray node {node} cannot read {display_path(path)} ({why}): pictures indexed with --ray "
                    "must be on a filesystem every node mounts at the same path"
                )


def _finished(pictures: list[Picture], batch: dict[str, Any], encode: list[bool]) -> Finished:
    finished: Finished = []
    seen = batch.get(VISUAL)
    for row, (index, caption, failure, vector) in enumerate(
        zip(batch[INDEX], batch[CAPTION], batch[FAILURE], batch[VECTOR])
    ):
        picture = pictures[int(index)]
        if failure:
            finished.append((picture, CaptionFailure(str(failure)), None))
            continue
        if seen is not None and encode[int(index)]:
            picture.visual_vector = seen[row].tolist()
        finished.append((picture, str(caption), vector.tolist()))
    return finished


def _spread(items: list[Any], count: int) -> list[Any]:
    """Up to count items, the first and the last among them, evenly spaced."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _run_error(exc: BaseException) -> ImgsearchError:
    """What stopped the cluster's work: imgsearch's own error when it was one (a model that
    cannot load, a refused API key), else a ClusterError naming the first error raised."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # Ray's task errors also pass for their cause's class, with a traceback for a message.
        if isinstance(current, ImgsearchError) and not isinstance(current, RayError):
            return current
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    # Ray Data hands back only the text of what a worker raised: the error is found in it.
    text = str(exc)
    if own := _OWN_ERROR_LINE.search(text):
        kind = getattr(errors, own["name"], None)
        if isinstance(kind, type) and issubclass(kind, ImgsearchError):
            return kind(own["message"])
    raised = _ERROR_LINE.search(text)
    first = raised[0] if raised else (text.strip().splitlines() or [type(exc).__name__])[-1]
    return ClusterError(f"the Ray cluster could not finish the run: {first.strip()[:300]}")


def _calls_an_api(captioner: Captioner) -> bool:
    from ..captioners.api_base import ApiCaptioner

    return isinstance(captioner, ApiCaptioner)


def _as_workers_see_it(settings: Settings) -> Settings:
    """settings with the files they name here made absolute: workers start in other folders.

    The embedder's ONNX export goes where this machine keeps it; a node that cannot write
    there embeds with the full model, which gives the same vectors.
    """
    changes: dict[str, Any] = {"data_dir": settings.data_dir.absolute()}
    if settings.models_dir:
        changes["models_dir"] = os.path.abspath(os.path.expanduser(settings.models_dir))
    for name in _PATH_SETTINGS:
        value = getattr(settings, name)
        if value and os.path.exists(os.path.expanduser(value)):
            changes[name] = os.path.abspath(os.path.expanduser(value))
    return dataclasses.replace(settings, **changes)
