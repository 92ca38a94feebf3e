"""The record of the folders an index was built from (indexed-folders.json in the data folder),
which a repair rebuilds the index from and check walks for pictures lost from it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..private_files import write_private_text

FOLDERS_FILE = "indexed-folders.json"


def remember_folders(data_dir: Path, folders: Iterable[Path]) -> None:
    """Record the folders an index was built from, so a repair can rebuild it without them."""
    path = data_dir / FOLDERS_FILE
    known = indexed_folders(data_dir)
    wanted = [*known, *(str(folder) for folder in folders if str(folder) not in known)]
    if wanted == known:
        return
    try:
        # 0600: a repair rebuilds the index from this list, so no other user may change it.
        write_private_text(path, json.dumps(wanted, indent=1))
    except OSError:  # a full disk: the index run itself goes on
        pass


def indexed_folders(data_dir: Path) -> list[str]:
    """The folders recorded by remember_folders; entries that are no folder name are left out."""
    try:
        folders = json.loads((data_dir / FOLDERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(folders, list):
        return []
    # A number or null (a damaged or hand-edited file) names no folder: as text it would be
    # a folder "5" or "None" under the current one, and "" the current folder itself.
    return [folder for folder in folders if isinstance(folder, str) and folder]
