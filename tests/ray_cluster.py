"""A real one-node Ray cluster on 127.0.0.1 for tests: `ray start --head --block` in a session of its own.

Every port Ray opens is picked free here (its defaults, such as 10001 for Ray Client and 52365
for the node agent, would collide with another Ray on this machine), its files live in a
temporary folder of their own, and it is kept small (2 CPUs, a few hundred MB of object store).
Ray's worker processes leave the head's process group but not its session, so stop() signals
every process of that session: SIGTERM, a short grace period, then SIGKILL.

With hidden, the cluster runs in a mount namespace of its own where that folder is an empty
tmpfs: files there exist for the tests (the driver) but not for the cluster, as on a machine
whose workers do not mount the driver's disk. That needs `unshare` and the right to mount.

    cluster = RayCluster(tmp_dir).start()
    cluster.address  # "127.0.0.1:PORT" for ray.init / --ray
    cluster.client_env  # what a driver's environment needs to join (its token)
    cluster.stop()

The cluster uses token authentication with a token of its own, as Ray clusters do by default,
so nothing depends on ~/.ray/auth_token.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from milvus_server import free_ports, installed_command

REPO = Path(__file__).resolve().parents[1]
PORT_FLAGS = (
    "--port",
    "--ray-client-server-port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)
READY_LINE = "Ray runtime started"


def ray_installed() -> bool:
    return _executable() is not None


def can_hide_folders() -> bool:
    """Whether this machine lets a process mount a tmpfs in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = tempfile.mkdtemp(prefix="imgsearch-hide-")
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--fork", "sh", "-c", f"mount -t tmpfs none {probe}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        os.rmdir(probe)


def _executable() -> str | None:
    return installed_command("ray")


class RayCluster:
    """One `ray start --head` process tree; its log in work_dir."""

    def __init__(
        self, work_dir: str | os.PathLike, hidden: Path | None = None, token: str = "", start_timeout: float = 120.0
    ):
        self.work_dir = Path(work_dir).absolute()
        self.hidden = hidden
        self.start_timeout = start_timeout
        self.log_path = self.work_dir / "ray-head.log"
        self.port = 0
        self._proc: subprocess.Popen | None = None
        # Drivers joining by address turn token authentication on only when told to. A process
        # reads both once, when it first uses Ray: tests set them before that (see client_env).
        self.client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or secrets.token_hex(16)}
        # Unix socket paths must stay short: Ray's session folders live under /tmp, not the test folder.
        self._temp_dir = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RayCluster:
        executable = _executable()
        if executable is None:
            raise RuntimeError("ray not installed: pip install -e '.[ray]'")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.port = ports["--port"]
        command = [
            executable,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--num-gpus=0",
            f"--object-store-memory={300 * 2**20}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self._temp_dir}",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]
        if self.hidden is not None:
            # The cluster's processes see an empty folder where the tests keep pictures.
            command = [
                "unshare",
                "--mount",
                "--fork",
                "sh",
                "-c",
                f'mount -t tmpfs none "{self.hidden}" && exec "$@"',
                "sh",
                *command,
            ]
        env = {
            **os.environ,
            # Workers import the imgsearch under test, whatever is installed.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            **self.client_env,
        }
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # stop() finds every process it started by this session
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            if self._proc.poll() is not None:
                raise RuntimeError(f"ray start exited before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray not ready after {self.start_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def pids_running(self, name_part: str) -> list[int]:
        """The cluster's processes whose title contains name_part (actors show their class)."""
        return [pid for pid in _session_pids(self._session) if name_part in _command_line(pid)]

    @property
    def _session(self) -> int:
        return self._proc.pid if self._proc is not None else -1

    def stop(self, grace: float = 3.0) -> None:
        """Stop every process of the cluster's session; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        session = proc.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in _session_pids(session):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc.poll()
                if not _session_pids(session):
                    break
                time.sleep(0.2)
            else:
                continue
            break
        shutil.rmtree(self._temp_dir, ignore_errors=True)


def _session_pids(session: int) -> list[int]:
    """Live processes in a session (Linux /proc), zombies left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after_name = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # Fields after "(name)": state, ppid, pgrp, session, ...
        if int(after_name[3]) == session and after_name[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
