"""Captions the index holds that the caption cache has lost, found and written back from the rows.

A damaged cache keeps only what could be salvaged from it, a deleted one nothing; the rows
still hold every caption. Written back under the key a rebuild looks them up by, they spare
a later rebuild of the index from captioning those pictures again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..pictures.ocr import captioner_of_row
from ..store import MilvusStore
from ..store.schema import MAX_CAPTION, fit_row
from .captions import FOR_FILE, CaptionCache

# Rows whose captions are looked up in the cache at a time.
ROWS_PER_LOOKUP = 1000
# What a row must give to have its caption written back.
_FIELDS = ["path", "caption", "captioner", "content_hash"]


def stored_caption(caption: str) -> str:
    """A caption as a row keeps it (the store trims very long ones)."""
    # A character is at most four bytes in UTF-8: most captions cannot reach the limit.
    return caption if len(caption) * 4 <= MAX_CAPTION else fit_row({"caption": caption})["caption"]


def uncached(rows: Iterable[dict[str, Any]], cache: CaptionCache) -> Iterator[dict[str, Any]]:
    """The rows whose caption the cache keeps for their picture under no key at all."""
    for page in _pages(rows):
        kept = cache.captions_of(row["content_hash"] for row in page)
        for row in page:
            held = {stored_caption(caption) for caption in kept.get(row["content_hash"], ())}
            if row["caption"] and row["caption"] not in held:
                yield row


def write_back_captions(
    store: MilvusStore, cache: CaptionCache, context_of: Callable[[str], str | None] = lambda _: None
) -> int:
    """Write the captions of the rows that the cache lacks back into it; how many were written.

    Each goes under the key a rebuild with the row's captioner looks up: that captioner's
    prompt, or its file for captioners whose captions follow files. context_of(captioner id)
    gives it where the caller knows it (the prompt, or FOR_FILE), else None: then the newest
    entry the cache still holds by that captioner tells, and with none the prompt is taken
    to be empty (a repair, which takes any cached caption, finds those all the same).
    """
    replaced = cache.replacements
    written = _write_back(store, cache, context_of)
    if cache.replacements != replaced:
        # Found damaged while being read: what it held before may be gone too.
        written += _write_back(store, cache, context_of)
    cache.set_may_lack_captions(False)
    return written


def _write_back(store: MilvusStore, cache: CaptionCache, context_of: Callable[[str], str | None]) -> int:
    contexts: dict[str, str] = {}
    written = 0
    for page in _pages(uncached(store.iter_rows(fields=_FIELDS), cache)):
        for_files: dict[str, dict[tuple[str, str], str]] = {}
        for_prompts: dict[tuple[str, str], dict[str, str]] = {}
        for row in page:
            captioner = captioner_of_row(row["captioner"])
            if captioner not in contexts:
                contexts[captioner] = _context(captioner, cache, context_of)
            context = contexts[captioner]
            if context == FOR_FILE:
                for_files.setdefault(captioner, {})[(row["content_hash"], row["id"])] = row["caption"]
            else:
                for_prompts.setdefault((captioner, context), {})[row["content_hash"]] = row["caption"]
        for captioner, captions in for_files.items():
            cache.put_for_files(captions, captioner)
        for (captioner, prompt), by_hash in for_prompts.items():
            cache.put_many(by_hash, captioner, prompt)
        written += len(page)
    return written


def _context(captioner: str, cache: CaptionCache, context_of: Callable[[str], str | None]) -> str:
    """FOR_FILE when captioner's captions follow files, else the prompt they are kept under."""
    known = context_of(captioner)
    if known is not None:
        return known
    newest = cache.newest_prompt(captioner)
    if newest is None:
        return ""
    return FOR_FILE if newest.startswith(FOR_FILE) else newest


def _pages(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    page: list[dict[str, Any]] = []
    for row in rows:
        page.append(row)
        if len(page) >= ROWS_PER_LOOKUP:
            yield page
            page = []
    if page:
        yield page
