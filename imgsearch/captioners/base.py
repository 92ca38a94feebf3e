"""The one interface every captioner implements, plus shared caption clean-up."""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CaptionerError
from ..results import CaptionUsage

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class CaptionInput:
    """One picture to caption: its path, its decoded pixels when the captioner needs them, and
    its content hash when known (for captioners that look their captions up in the cache)."""

    path: Path
    image: Image.Image | None = None
    content_hash: str = ""


@dataclass(frozen=True)
class CaptionFailure:
    """Stands in for the caption of one picture that could not be captioned."""

    reason: str


class Captioner(ABC):
    """Base class: subclasses implement caption_batch; this class batches and checks."""

    #: Whether caption_batch needs decoded pixels (False for captions read from files).
    needs_pixels: bool = True
    #: Whether captions lose prompt echoes and boilerplate openings ("This image shows...").
    #: That is for model output; a caption a person wrote is kept as written (whitespace aside).
    cleans_captions: bool = True
    batch_size: int = 8
    #: The picture size the captioner looks at: pictures are decoded with both sides at
    #: least this large where they are (a JPEG at reduced scale), never much larger.
    image_side: int = 2048
    #: Whether a caption belongs to the file it was written for rather than to the picture's
    #: content (captions a person wrote, beside a file or listed by its name): two copies of
    #: one photo keep their own captions, and an edited caption re-makes its file's row. Such
    #: captioners implement written_caption and take no prompt. A model's caption belongs to
    #: the picture, so a copied or moved photo keeps it.
    captions_follow_files: bool = False

    @property
    @abstractmethod
    def id(self) -> str:
        """Stable identity stored with each caption, e.g. 'transformers:Salesforce/blip-...'."""

    @property
    def prompt(self) -> str:
        """The prompt used, part of the caption cache key ('' when there is none)."""
        return ""

    @abstractmethod
    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        """Return one raw caption (or a CaptionFailure) per input, in order."""

    def written_caption(self, path: Path) -> str | None:
        """The caption path's own source gives now, as caption() would return it; None when it
        has none. Asked of every file on every run when captions_follow_files, so it must be
        cheap (a small read, a lookup): it is how an edited caption is seen without reading pictures.
        """
        return None

    def caption_batch_keeping(
        self, items: list[CaptionInput], keep_partial: Callable[[dict[int, str]], None]
    ) -> list[str | CaptionFailure]:
        """caption_batch, for a backend whose batch can stop part-way with some captions already
        finished (requests paid for): it hands those to keep_partial ({index in items: raw
        caption}) before the stop goes on up. Others need not override it."""
        return self.caption_batch(items)

    def caption(
        self,
        items: list[CaptionInput],
        on_batch: Callable[[int], None] | None = None,
        keep: Callable[[dict[int, str]], None] | None = None,
    ) -> list[str | CaptionFailure]:
        """Caption items in batches of batch_size; captions come back cleaned, never empty.

        keep, when given, is called with each batch's finished captions ({index in items:
        caption}) as soon as the batch is done, and, when captioning stops early (a refused
        key, Ctrl-C), with the stopped batch's captions already finished: the caller commits
        what was paid for before the stop goes on up.
        """
        captions: list[str | CaptionFailure] = []
        for start in range(0, len(items), max(1, self.batch_size)):
            batch = items[start : start + self.batch_size]

            def keep_finished(raw: dict[int, str], start: int = start) -> None:
                if keep is not None:
                    checked = {start + i: self._checked(text) for i, text in raw.items()}
                    keep({i: text for i, text in checked.items() if isinstance(text, str)})

            started = time.monotonic()
            try:
                raw = self.caption_batch_keeping(batch, keep_finished)
            finally:
                self._usage_tally().seconds += time.monotonic() - started
            if len(raw) != len(batch):
                raise CaptionerError(f"{self.id} returned {len(raw)} captions for {len(batch)} images")
            checked = [self._checked(text) for text in raw]
            captions.extend(checked)
            if keep is not None:
                keep({start + i: text for i, text in enumerate(checked) if isinstance(text, str)})
            if on_batch:
                on_batch(len(batch))
        return captions

    def take_usage(self) -> CaptionUsage:
        """Requests, tokens, time and cut-off captions since the last call, then start afresh."""
        usage = self._usage_tally()
        self._usage = CaptionUsage()
        return usage

    def _usage_tally(self) -> CaptionUsage:
        # Created on first use: subclasses need not call a base __init__.
        if getattr(self, "_usage", None) is None:
            self._usage = CaptionUsage()
        return self._usage

    def _checked(self, raw: str | CaptionFailure) -> str | CaptionFailure:
        if isinstance(raw, CaptionFailure):
            return raw
        text = clean_caption(raw, self.prompt) if self.cleans_captions else " ".join(raw.split())
        return text if text else CaptionFailure(f"{self.id} produced an empty caption")


_BOILERPLATE = re.compile(
    r"^\s*(?:"
    r"arafed|araffe|arafe"  # a known artefact of BLIP's training captions
    r"|(?:this|the) (?:image|picture|photo(?:graph)?) (?:shows|depicts|features|displays|contains|is of)"
    r"|in (?:this|the) (?:image|picture|photo(?:graph)?),?"
    r"|(?:an? )?(?:image|picture|photo(?:graph)?) of"
    r"|there (?:is|are)"
    r")\s*[:,]?\s*",
    re.IGNORECASE,
)


def clean_caption(text: str, prompt: str = "") -> str:
    """Strip prompt echo and boilerplate openings; collapse whitespace."""
    text = " ".join((text or "").split())
    if prompt:
        text = _without_echo(text, prompt).lstrip(" :,.-")
    previous = None
    while previous != text:
        previous = text
        text = _BOILERPLATE.sub("", text, count=1)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    return text


def _without_echo(text: str, prompt: str) -> str:
    """text minus a leading copy of prompt, matched ignoring case and whitespace.

    Tokenizers give the prompt back re-spaced ("a photo of:" decodes as "a photo of :").
    """
    wanted = "".join(prompt.split()).lower()
    if not wanted:
        return text
    matched = 0
    for pos, char in enumerate(text):
        if char.isspace():
            continue
        if char.lower() != wanted[matched]:
            return text
        matched += 1
        if matched == len(wanted):
            return text[pos + 1 :]
    return text
