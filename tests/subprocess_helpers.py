"""Running the real `imgsearch` command in a subprocess with an isolated environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
IMGSEARCH = shutil.which("imgsearch") or str(Path(sys.executable).with_name("imgsearch"))


def imgsearch_env(data_dir: Path, pythonpath: list[Path] = (), **extra: str) -> dict[str, str]:
    """os.environ without the user's IMGSEARCH_* settings, pointed at data_dir, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_") or k == "IMGSEARCH_COCO_MINI"}
    env.update(
        IMGSEARCH_DATA_DIR=str(data_dir),
        XDG_CONFIG_HOME=str(data_dir / "config"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        # No background process keeps a test's index loaded unless the test asks for one.
        IMGSEARCH_KEEP_LOADED="0",
        # Every hit counts, as before the relevance floor (conftest.isolated_env says why).
        IMGSEARCH_MIN_SCORE="0",
    )
    if "IMGSEARCH_MODELS_DIR" in os.environ:  # the session's shared ONNX export (conftest)
        env["IMGSEARCH_MODELS_DIR"] = os.environ["IMGSEARCH_MODELS_DIR"]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_imgsearch(
    *args: object,
    env: dict[str, str] | None = None,
    env_extra: dict[str, str] | None = None,
    timeout: float = 300,
    check_code: int | None = None,
    **kwargs,
) -> subprocess.CompletedProcess:
    """`imgsearch ARGS` with its output captured.

    env None runs it in this process's environment (which conftest has isolated); env_extra
    is laid over whichever. check_code, when given, is the exit status it must end with.
    """
    if env_extra:
        env = {**(os.environ if env is None else env), **env_extra}
    proc = subprocess.run(
        [IMGSEARCH, *map(os.fsdecode, args)], env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check_code is not None:
        assert proc.returncode == check_code, proc.stderr
    return proc


def start_imgsearch(*args: object, env: dict[str, str], **kwargs) -> subprocess.Popen:
    """A background `imgsearch` in its own process group (so a kill takes all of it)."""
    return subprocess.Popen([IMGSEARCH, *map(os.fsdecode, args)], env=env, text=True, start_new_session=True, **kwargs)
