"""A caption of several sentences, split so that each sentence counts in its vector.

One vector of a whole paragraph is dominated by its first sentences; the normalised mean of
per-sentence vectors finds the picture by any of them (benchmarks/long_captions.py: on
coco-mini, four human captions as one description, queried with the fifth).
"""

from __future__ import annotations

import re

# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "no",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
        "a.m",
        "p.m",
    ]
)
# A sentence ends at . ! ? (and any closing quotes or brackets) followed by space; the period
# of "3.5" has no space after it. Captions often start lower-case, so case is no clue.
_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of text, in order, none empty; a text of one sentence is [text.strip()].

    A line break ends a sentence too: a picture's captions by several captioners are one per line.
    """
    if "\n" in text:
        sentences = [sentence for line in text.split("\n") if line.strip() for sentence in _split_line(line)]
        return sentences or [text.strip()]
    return _split_line(text)


def _split_line(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for end in _END.finditer(text):
        candidate = text[start : end.start()]
        last_word = candidate.rstrip("\"')]").rsplit(None, 1)[-1].rstrip(".!?").lower() if candidate.strip() else ""
        # "Mr. Smith", "e.g. Paris", a lone initial "J. Smith": the period is not an ending.
        if candidate.rstrip("\"')]").endswith(".") and (
            last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word)
        ):
            continue
        pieces.append(text[start : end.end()])
        start = end.end()
    pieces.append(text[start:])
    sentences = [piece.strip() for piece in pieces if any(ch.isalnum() for ch in piece)]
    return sentences or [text.strip()]
