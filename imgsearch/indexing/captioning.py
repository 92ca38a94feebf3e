"""The captioning stage of an index run: here, batch after batch, or on a cluster.

The indexer's one loop hands each read picture that still needs a caption to a stage
(take), then asks it for the rest once every picture was read (finish). Either way a caption
is committed to the caption cache before its picture goes on to be stored, so a crash or a
stop from there on loses no caption.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Protocol

from ..captioners.base import Captioner, CaptionFailure, CaptionInput
from .captions import RunCaptions
from .reading import Picture
from .tally import CAPTIONING, STORING, RunTally

# Pictures read ahead of the captioner at most (each holds its decoded pixels).
MAX_READ_AHEAD = 256
# Pictures whose caption was already known are stored in batches of at least this many.
MIN_WRITE_BATCH = 64


class CaptionService(Protocol):
    """Captions and embeds pictures somewhere else (a cluster), streaming results back.

    caption_and_embed yields lists of (picture, caption or CaptionFailure, vector or None) as
    they finish, in any order; the pictures' files must be readable where the work runs.
    Captions come back cleaned as Captioner.caption cleans them; vectors from the same
    embedder as this run's. Closing the iterator early stops the outstanding work.

    In a run with image vectors, a picture may be sent with its caption known (it comes back
    as it went, embedded): it needs only its image vector. A service that makes them sets each
    sent picture's visual_vector where it needs one (needs_visual).
    """

    def caption_and_embed(
        self, pictures: list[Picture]
    ) -> Generator[list[tuple[Picture, str | CaptionFailure, list[float] | None]], None, None]: ...


class CaptioningStage(Protocol):
    #: Whether the reader decodes pixels for this stage (a cluster reads the files itself).
    decodes: bool
    #: Pictures with a known caption are handed to the writer in batches of this many.
    write_batch: int

    def read_ahead(self, readers: int) -> int:
        """How many pictures the reader may have read ahead of this stage."""

    def take(self, picture: Picture) -> list[Picture]:
        """Accept a picture that needs a caption; the pictures captioned meanwhile, if any."""

    def finish(self) -> Generator[list[Picture], None, None]:
        """Caption what is left, yielding pictures as they get their caption; closing it stops."""


class LocalCaptioning:
    """Captions here, on this thread, in the captioner's batches."""

    decodes = True

    def __init__(self, captioner: Captioner, captions: RunCaptions, tally: RunTally, before: Callable[[], None]):
        self.captioner = captioner
        self.captions = captions
        self.tally = tally
        # Called before each batch: captioning waits for the writer's embedder to be loaded,
        # so captions never run far ahead of rows.
        self.before = before
        self.batch_size = max(1, captioner.batch_size)
        self.write_batch = max(self.batch_size, MIN_WRITE_BATCH)
        self._waiting: list[Picture] = []

    def read_ahead(self, readers: int) -> int:
        # The next two batches are decoded while one is captioned.
        return min(MAX_READ_AHEAD, 2 * self.batch_size + readers)

    def take(self, picture: Picture) -> list[Picture]:
        self._waiting.append(picture)
        return self._caption_waiting() if len(self._waiting) >= self.batch_size else []

    def finish(self) -> Generator[list[Picture], None, None]:
        if self._waiting:
            yield self._caption_waiting()

    def _caption_waiting(self) -> list[Picture]:
        """Caption the waiting batch (the same picture at two paths once, unless its captions
        follow files); the pictures that got a caption."""
        pictures, self._waiting = self._waiting, []
        self.before()
        # A picture captioned in an earlier batch of this run may turn up again at another path.
        for picture, cached in zip(pictures, self.captions.cached(pictures)):
            if cached is not None:
                picture.caption, picture.cached = cached, True
        groups = self.captions.sharing_groups([p for p in pictures if p.caption is None])
        leader_of = {picture.key: group[0] for group in groups for picture in group}
        finished: dict[str, str] = {}  # by the path key of the picture captioned
        refused: dict[str, str] = {}
        if groups:
            captions = self._caption_groups(groups)
            for group, caption in zip(groups, captions):
                if isinstance(caption, CaptionFailure):
                    refused[group[0].key] = caption.reason
                else:
                    finished[group[0].key] = caption
            self.tally.captioned(len(finished))
        captioned: list[Picture] = []
        for picture in pictures:
            if not picture.needs_visual:
                picture.image = None  # its pixels are not needed any more
            leader = leader_of.get(picture.key)
            if leader is not None and leader.key in finished:
                picture.caption = finished[leader.key]
                if picture is not leader:
                    self.tally.caption_reused()
            elif picture.caption is not None:
                self.tally.caption_reused()
            if picture.caption is None:
                self.tally.dropped(picture, refused.get(leader_of[picture.key].key, "not captioned"))
            else:
                captioned.append(picture)
        return captioned

    def _caption_groups(self, groups: list[list[Picture]]) -> list[str | CaptionFailure]:
        """One caption per group, each committed to the cache as soon as its batch is done;
        a stopped run (a refused key, Ctrl-C) keeps the captions already paid for."""

        def keep(finished: dict[int, str]) -> None:
            self.captions.remember([(picture, text) for i, text in finished.items() for picture in groups[i]])

        inputs = [CaptionInput(group[0].file.path, group[0].image, group[0].content_hash) for group in groups]
        try:
            return self.captioner.caption(inputs, on_batch=lambda n: self.tally.stage(CAPTIONING, done=n), keep=keep)
        finally:
            self.tally.report.usage.add(self.captioner.take_usage())


class ServiceCaptioning:
    """Captions and embeds on a service (a cluster) once every picture was read here.

    The first picture of each group sharing a caption is sent; the others take its caption (and
    its image vector). A picture with a known caption that needs an image vector is sent too,
    for the service reads the pictures itself: the image–text model need not load here.
    """

    decodes = False
    write_batch = MIN_WRITE_BATCH

    def __init__(self, service: CaptionService, captions: RunCaptions, tally: RunTally):
        self.service = service
        self.captions = captions
        self.tally = tally
        self._waiting: list[Picture] = []
        self._to_encode: list[Picture] = []  # their caption known, their image vector not

    def read_ahead(self, readers: int) -> int:
        return MAX_READ_AHEAD

    def take(self, picture: Picture) -> list[Picture]:
        if picture.caption is not None:
            self.tally.caption_known(picture)
            self._to_encode.append(picture)
        else:
            self._waiting.append(picture)
        return []

    def finish(self) -> Generator[list[Picture], None, None]:
        groups = {group[0].key: group for group in self.captions.sharing_groups(self._waiting)}
        to_encode, self._waiting, self._to_encode = self._to_encode, [], []
        if not groups and not to_encode:
            return
        results = self.service.caption_and_embed([group[0] for group in groups.values()] + to_encode)
        with contextlib.closing(results):
            for finished in results:
                yield self._commit(finished, groups)

    def _commit(
        self,
        finished: list[tuple[Picture, str | CaptionFailure, list[float] | None]],
        groups: dict[str, list[Picture]],
    ) -> list[Picture]:
        """Cache the captions that came back (before their rows are written); the pictures to store."""
        ready = self._encoded([item for item in finished if item[0].caption is not None and item[0].key not in groups])
        finished = [item for item in finished if item[0].caption is None or item[0].key in groups]
        self.captions.remember(
            [
                (picture, caption)
                for sent, caption, _ in finished
                if isinstance(caption, str)
                for picture in groups.get(sent.key, [sent])
            ]
        )
        self.tally.captioned(sum(isinstance(caption, str) for _, caption, _ in finished))
        self.tally.stage(CAPTIONING, done=len(finished))
        for sent, caption, vector in finished:
            for number, picture in enumerate(groups.get(sent.key, [sent])):
                if isinstance(caption, CaptionFailure):
                    self.tally.dropped(picture, caption.reason)
                    continue
                picture.caption, picture.vector = caption, list(vector) if vector is not None else None
                picture.visual_vector = picture.visual_vector or sent.visual_vector
                if number:
                    self.tally.caption_reused()
                ready.append(picture)
        return ready

    def _encoded(self, finished: list[tuple[Picture, str | CaptionFailure, list[float] | None]]) -> list[Picture]:
        """The pictures sent with their caption only for their image vector that are ready to store
        (the writer keeps their vectors in the cache); their captioning was counted when taken."""
        ready: list[Picture] = []
        for picture, caption, vector in finished:
            if isinstance(caption, CaptionFailure):
                self.tally.stage(STORING, total_less=1)
                self.tally.failed(picture.file.path, caption.reason)
                continue
            picture.vector = list(vector) if vector is not None else None
            ready.append(picture)
        return ready
