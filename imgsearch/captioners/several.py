"""Several captioners for one picture: a short caption and a detailed description, two prompts...

A picture's row holds one text, the captions of every captioner one per line, and one vector,
the mean of the vectors of all their sentences (embedders/sentences.py), so a query finds the
picture by any of them. The row's captioner names them all, in order ("several:[...]"), which is
how the text is split back into each captioner's caption for display.

Each captioner's captions are kept in the caption cache under that captioner's own key: adding a
captioner to an index captions with the new one only, and removing one re-captions nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..results import CaptionUsage, join_captions, several_id
from .base import Captioner, CaptionFailure, CaptionInput

if TYPE_CHECKING:
    from ..cache.captions import CaptionCache


class SeveralCaptioners(Captioner):
    """Captions each picture with every one of parts; the caption is all of theirs, one per line.

    A part's caption already in the caption cache (under the part's own id and prompt) is taken
    from there: only the parts that lack one caption the picture. A picture one part fails to
    caption fails, and the captions the others made are kept in the cache for the next run.
    """

    cleans_captions = False

    def __init__(self, parts: Sequence[Captioner], labels: Sequence[str] = ()):
        """labels: what each part is called in rows and counts (default its id); two prompts of
        one model need two labels."""
        if len(parts) < 2:
            raise ValueError("several captioners need at least two")
        self.parts = list(parts)
        self.labels = list(labels) or [part.id for part in self.parts]
        if len(self.labels) != len(self.parts) or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"several captioners need one distinct label each, got {self.labels}")
        self.needs_pixels = any(part.needs_pixels for part in self.parts)
        self.batch_size = min(part.batch_size for part in self.parts)
        # Known for picture content only: a captioner whose captions follow files is asked each time.
        self.captions_follow_files = False
        self.cache: CaptionCache | None = None
        self._prompts: list[str] | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return several_id(self.labels)

    @property
    def prompt(self) -> str:
        return "\n".join(self._part_prompts())

    @property
    def image_side(self) -> int:  # type: ignore[override]
        return max(part.image_side for part in self.parts if part.needs_pixels)

    def use_cache(self, cache: CaptionCache) -> None:
        """Look each part's captions up in cache, and keep the ones made there."""
        self.cache = cache

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        """Every part's caption of each item, one per line; parts clean and check their own."""
        by_part = [self._part_captions(index, part, items) for index, part in enumerate(self.parts)]
        joined: list[str | CaptionFailure] = []
        for made in zip(*by_part):
            failed = [text for text in made if isinstance(text, CaptionFailure)]
            joined.append(failed[0] if failed else join_captions([str(text) for text in made]))
        return joined

    def _checked(self, raw: str | CaptionFailure) -> str | CaptionFailure:
        # Each part checked its own caption; the line breaks between them must stay.
        return raw

    def take_usage(self) -> CaptionUsage:
        usage = CaptionUsage()
        for part in self.parts:
            usage.add(part.take_usage())
        return usage

    def _part_captions(self, index: int, part: Captioner, batch: list[CaptionInput]) -> list[str | CaptionFailure]:
        """part's caption of each picture in batch: from the cache where it has one, else made now."""
        prompt = self._part_prompts()[index]
        cached: dict[str, str] = {}
        hashes = [item.content_hash for item in batch]
        if self.cache is not None and not part.captions_follow_files:
            cached = self.cache.get_many([digest for digest in hashes if digest], part.id, prompt)
        todo = [i for i, digest in enumerate(hashes) if not (digest and digest in cached)]
        made = part.caption([batch[i] for i in todo]) if todo else []
        found: list[str | CaptionFailure] = [cached.get(digest, "") for digest in hashes]
        for i, text in zip(todo, made):
            found[i] = text
        new = {hashes[i]: text for i, text in zip(todo, made) if isinstance(text, str) and hashes[i]}
        if new and self.cache is not None and not part.captions_follow_files:
            self.cache.put_many(new, part.id, prompt)
        return found

    def _part_prompts(self) -> list[str]:
        with self._lock:
            if self._prompts is None:
                self._prompts = [part.prompt for part in self.parts]
            return self._prompts
