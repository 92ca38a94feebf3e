"""What `imgsearch query` prints: plain tab-separated lines when piped, a table in a terminal, and
never a path broken over two lines; with --sort date, each hit's date."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from dated_pictures import NEWEST_FIRST, PICTURES, QUERY, dated_engine, dated_folder
from subprocess_helpers import IMGSEARCH, imgsearch_env, run_imgsearch

# Deep enough that every picture's path is longer than an 80-column terminal is wide.
LONG_FOLDER = "a-folder-whose-name-is-long-enough-to-matter/and-another-level-below-it"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embedder):
    """The dated pictures under a long folder name, and a data folder indexed over them."""
    base = tmp_path_factory.mktemp("cli-output")
    folder = dated_folder(base / LONG_FOLDER)
    data = base / "data"
    dated_engine(folder, embedder, data).close()
    return folder, data


def _in_terminal(args: list[str], env: dict[str, str], columns: int) -> str:
    """stdout of `imgsearch ARGS` run in a pseudo-terminal columns wide, colours stripped."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns), "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    with subprocess.Popen([IMGSEARCH, *args], stdout=child, stderr=subprocess.PIPE, env=env) as proc:
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child's end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=120)
        assert proc.returncode == 0, proc.stderr.read()
    os.close(main)
    return _ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


@pytest.mark.slow
def test_piped_query_prints_one_plain_line_a_hit_with_whole_paths(indexed):
    folder, data = indexed
    proc = run_imgsearch(
        "query", QUERY, "-k", str(len(PICTURES)), "--min-score=-1", env=imgsearch_env(data), check_code=0
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == len(PICTURES)
    fields = [line.split("\t") for line in lines]
    assert all(len(row) == 3 for row in fields), lines
    paths = [row[0] for row in fields]
    assert sorted(paths) == sorted(str(folder / name) for name in PICTURES)
    assert all(float(row[1]) >= -1 for row in fields)
    captions = {Path(row[0]).name: row[2] for row in fields}
    assert captions["dog-park.jpg"] == PICTURES["dog-park.jpg"][0]
    assert "─" not in proc.stdout and "┃" not in proc.stdout  # no table


@pytest.mark.slow
def test_piped_query_sorted_by_date_shows_each_date(indexed):
    _folder, data = indexed
    proc = run_imgsearch(
        "query",
        QUERY,
        "-k",
        str(len(PICTURES)),
        "--min-score=-1",
        "--sort",
        "date",
        env=imgsearch_env(data),
        check_code=0,
    )
    fields = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [Path(row[0]).name for row in fields] == NEWEST_FIRST
    dates = {Path(row[0]).name: row[2] for row in fields}
    # The camera's clock as EXIF gives it; the car has no EXIF date, so its file's date stands in.
    assert dates["puppy-grass.jpg"] == "2023-08-20 09:15"
    assert dates["car-street.jpg"] == "2021-01-05 14:00"
    assert dates["snowy-peaks.jpg"] == "2010-12-24 08:00"


@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 60])
def test_a_narrow_terminal_never_breaks_a_path(indexed, columns):
    folder, data = indexed
    assert len(str(folder / "dog-park.jpg")) > columns
    shown = _in_terminal(["query", QUERY, "-k", "3", "--min-score=-1", "--sort", "date"], imgsearch_env(data), columns)
    lines = shown.splitlines()
    whole = [name for name in PICTURES if any(str(folder / name) in line for line in lines)]
    assert len(whole) == 3, shown
    assert "2023-08-20 09:15" in shown


@pytest.mark.slow
def test_a_wide_terminal_shows_a_table_with_a_date_column(indexed):
    folder, data = indexed
    shown = _in_terminal(["query", QUERY, "-k", "2", "--min-score=-1", "--sort", "date"], imgsearch_env(data), 250)
    header = next(line for line in shown.splitlines() if "path" in line)
    assert "date" in header and "caption" in header and "score" in header
    assert str(folder / "puppy-grass.jpg") in shown and "2023-08-20 09:15" in shown
    by_score = _in_terminal(["query", QUERY, "-k", "2", "--min-score=-1"], imgsearch_env(data), 250)
    assert "date" not in next(line for line in by_score.splitlines() if "path" in line)


@pytest.mark.parametrize("command", [[], ["query"], ["index"], ["status"]])
def test_help_shows_flags_as_flags(command, tmp_path):
    shown = run_imgsearch(*command, "--help", env=imgsearch_env(tmp_path / "data", COLUMNS="200"), check_code=0).stdout
    flags = [line for line in shown.splitlines() if re.search(r"--(json|help|version|ocr|rebuild)\b", line)]
    assert flags, shown
    assert not any("<bool>" in line for line in flags), "\n".join(flags)
    # Options that take a value still say which.
    if command == ["query"]:
        assert re.search(r"--sort\s+<str>", shown)


def test_every_command_but_mcp_takes_json_as_the_readme_says():
    import typer.main

    from imgsearch.cli import app

    from conftest import REPO

    commands = typer.main.get_command(app).commands
    without = sorted(
        name for name, command in commands.items() if not any("--json" in param.opts for param in command.params)
    )
    assert without == ["mcp"]
    assert "Every command but `mcp` (which speaks JSON-RPC anyway) takes `--json`" in (REPO / "README.md").read_text()
