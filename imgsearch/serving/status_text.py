"""The index's status in words: how many pictures wait for their caption, and the index run under way.

One wording for every place that shows it (the CLI, the MCP tools); the web page says the same in app.js.
"""

from __future__ import annotations

from typing import Any

from ..results import IndexStatus


def human_duration(seconds: float) -> str:
    """A rough duration a person reads at a glance: "40 s", "12 min", "3 h 20 min", "2 days"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{round(hours / 24)} days"


def caption_counts(status: IndexStatus) -> list[tuple[str, str]]:
    """Label and value of each count: stored, captioned, caption pending, and image vectors where the index has them."""
    counts = [
        ("images", str(status.images)),
        ("captioned", str(status.captioned)),
        ("caption pending", str(status.caption_pending)),
    ]
    if status.visual_model:
        counts.append(("with image vectors", str(status.with_image_vectors)))
    return counts


def run_progress(run: dict[str, Any]) -> str:
    """The index run under way: "120 found, 120 stored, 30 of 120 captioned, 0.5 pictures/s, ETA 3 min"."""
    parts = [f"{run.get('found', 0)} found", f"{run.get('stored', 0)} stored"]
    parts.append(f"{run.get('captioned', 0)} of {run.get('to_caption', 0)} captioned")
    rate = run.get("caption_rate")
    if rate:
        parts.append(f"{rate:.2g} pictures/s" if rate < 10 else f"{rate:.0f} pictures/s")
    eta = run.get("eta_seconds")
    if eta is not None:
        parts.append(f"ETA {human_duration(eta)}")
    return ", ".join(parts)


def status_lines(status: IndexStatus) -> list[str]:
    """The counts on one line, then the run under way (if any) on the next."""
    counts = [f"{value} {'images stored' if label == 'images' else label}" for label, value in caption_counts(status)]
    lines = [", ".join(counts)]
    if status.run is not None:
        lines.append(f"indexing: {run_progress(status.run)}")
    return lines
