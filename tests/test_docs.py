"""The docs stay whole: every command in the generated CLI reference, every nav page present,
the README short with its two commands first (the ones .ci/run reads), the site building strictly."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference_hook", DOCS / "hooks" / "cli_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _bash_blocks(text: str) -> list[str]:
    return [block.strip("\n") for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)]


def test_every_command_is_in_the_cli_reference() -> None:
    hook = _hook()
    names = list(hook.commands())
    reference = hook.cli_reference()
    assert {"index", "query", "serve", "mcp", "watch", "check"} <= set(names)
    missing = [name for name in names if f"## `imgsearch {name}`" not in reference]
    assert missing == []
    assert all(command.help for command in hook.commands().values()), "every command has help text"


def test_cli_page_holds_the_marker() -> None:
    assert _hook().MARKER in (DOCS / "cli.md").read_text()


def test_every_nav_page_exists() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert "index.md" in pages and "cli.md" in pages
    assert [page for page in pages if not (DOCS / page).is_file()] == []


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    install, tests = _bash_blocks(readme)[:2]
    assert install.startswith("pip install -e . torch==") and "imgsearch index" in install
    assert "pip install -e '.[dev]'" in tests and "pytest" in tests

    # .ci/run runs the second block: what its own extraction gives must be that block.
    ci = (REPO / ".ci" / "run").read_text()
    extract = re.search(r"^test_command=\$\((awk .*)\)$", ci, flags=re.MULTILINE)
    assert extract, ".ci/run still reads the test command with awk"
    ci_command = subprocess.run(
        ["bash", "-c", extract.group(1)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert ci_command.strip("\n") == tests


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        check=False,
        cwd=REPO,  # the changelog page includes CHANGELOG.md relative to the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert "WARNING" not in built.stderr, built.stderr[-4000:]
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "imgsearch index" in reference and "<!-- cli-reference -->" not in reference
    assert "Unreleased" in (tmp_path / "site" / "changelog" / "index.html").read_text()
