"""The captions of one index run: the ones pictures already have, and committing new ones."""

from __future__ import annotations

import threading

from ..cache.captions import FOR_FILE, CaptionCache
from ..captioners.base import Captioner
from ..captioners.several import SeveralCaptioners
from ..errors import ImgsearchError
from ..pictures.ocr import TextReader
from .reading import Picture


class RunCaptions:
    """What a run knows of captions: the caption cache, read and written for one captioner.

    A model's caption belongs to the picture (kept under its content hash and the prompt); a
    caption a person wrote belongs to its file (kept under the file too). Rebuilding an index
    (reuse_any_caption), a picture's newest cached caption serves, whichever captioner made it.
    Asked from reader threads and the captioning thread alike.
    """

    def __init__(self, captioner: Captioner, cache: CaptionCache, reuse_any_caption: bool = False):
        self.captioner = captioner
        self.cache = cache
        if isinstance(captioner, SeveralCaptioners):
            # Each of its captioners' captions is looked up and kept under that captioner's own key.
            captioner.use_cache(cache)
        self.reuse_any_caption = reuse_any_caption
        self.follows_files = bool(getattr(captioner, "captions_follow_files", False))
        # The captioner's prompt and image size are asked once, by the first picture that
        # needs them: a captioner may have to load its model to know them.
        self._facts_lock = threading.Lock()
        self._prompt: str | None = None

    def cached_one(self, picture: Picture) -> str | None:
        """The caption this picture already has in the cache."""
        return self.cached([picture])[0]

    def cached(self, pictures: list[Picture]) -> list[str | None]:
        """The caption each picture already has in the cache, or None."""
        files = [(p.content_hash, p.key) for p in pictures]
        if self.reuse_any_caption:
            # Text read from pictures is kept in the cache too: it is no caption.
            found = self.cache.latest_for_files(files, ignored=[TextReader.id])
            return [found.get(file) for file in files]
        if self.follows_files:
            kept = self.cache.written_for_files(files, self.captioner.id)
            # A kept caption serves while the file's source still gives it; a file whose source
            # gives none takes the one kept for a copy of it (a photo moved without its caption).
            return [
                caption if picture.written_caption is None or caption == picture.written_caption else None
                for picture, caption in zip(pictures, (kept.get(file) for file in files))
            ]
        digests = self.cache.get_many([p.content_hash for p in pictures], self.captioner.id, self.prompt_used())
        return [digests.get(p.content_hash) for p in pictures]

    def remember(self, captions: list[tuple[Picture, str]]) -> None:
        """Commit captions to the cache: a model's under the picture, a written one under each file."""
        if not captions:
            return
        if self.follows_files:
            self.cache.put_for_files({(p.content_hash, p.key): text for p, text in captions}, self.captioner.id)
        else:
            self.cache.put_many({p.content_hash: text for p, text in captions}, self.captioner.id, self.prompt_used())

    def sharing_groups(self, pictures: list[Picture]) -> list[list[Picture]]:
        """pictures in groups that share one caption, the one to caption first in each.

        The same picture at two paths shares one, except that a caption written for a file is
        that file's own: copies share one only when their sources give the same words, and a
        copy whose source gives none shares that of a copy that has one.
        """
        groups: dict[str | tuple[str, str], list[Picture]] = {}
        for picture in pictures:
            written = picture.written_caption if self.follows_files else None
            key = picture.content_hash if written is None else (picture.content_hash, written)
            groups.setdefault(key, []).append(picture)
        with_words: dict[str, list[Picture]] = {}
        for key, group in groups.items():
            if isinstance(key, tuple):
                with_words.setdefault(key[0], group)
        for digest in [key for key in groups if isinstance(key, str) and key in with_words]:
            with_words[digest].extend(groups.pop(digest))
        return list(groups.values())

    def cache_context(self, captioner_id: str) -> str | None:
        """What the cache keeps captioner_id's captions under in this run (FOR_FILE, or its
        prompt); None for other captioners."""
        if captioner_id != self.captioner.id:
            return None
        if self.follows_files:
            return FOR_FILE
        try:
            return self.prompt_used()
        except ImgsearchError:
            return None  # its model cannot load here: the cache's own entries tell

    def prompt_used(self) -> str:
        with self._facts_lock:
            if self._prompt is None:
                self._prompt = self.captioner.prompt
            return self._prompt

    def image_side(self) -> int | None:
        """The picture size the captioner looks at; None when it reads no pixels."""
        if not self.captioner.needs_pixels:
            return None
        with self._facts_lock:
            return self.captioner.image_side
