"""A real Milvus standalone server on 127.0.0.1 for tests, from the `milvus` PyPI package.

`milvus-server` (milvus 2.3.5, "v2.3.5-lite") is a Python wrapper that unpacks the Milvus
binaries into its data folder (hundreds of MB, so the first start in a folder is the slow
one) and starts a child
`milvus run standalone` with an embedded etcd and local storage. Every port is picked free here,
etcd's too: its --etcd-port flag does not move the embedded etcd, which would otherwise always
listen on 2379/2380 and make a second server crash. Killing the wrapper leaves the child running,
and the child ignores SIGTERM for several seconds, so the server runs in its own process group
and stop() signals the whole group: SIGTERM, a short grace period, then SIGKILL.

    server = MilvusServer(tmp_dir).start()
    MilvusClient(server.uri).list_collections()
    server.stop()
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

EXECUTABLE = "milvus-server"
# Every port milvus-server lets us choose. Its defaults (etcd 2379, proxy 19530, ...) would
# collide with a stray server from an earlier run or a real Milvus on this machine.
PORT_FLAGS = (
    "--proxy-port",
    "--proxy-internal-port",
    "--etcd-port",
    "--root-coord-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def _executable() -> str | None:
    return installed_command(EXECUTABLE)


def installed_command(name: str) -> str | None:
    """A console script found on PATH, or beside this interpreter when the venv is used
    without being activated."""
    beside = Path(sys.executable).with_name(name)
    return shutil.which(name) or (str(beside) if os.access(beside, os.X_OK) else None)


def milvus_server_available() -> bool:
    """Whether the `milvus-server` command (pip install milvus) is installed."""
    return _executable() is not None


def free_ports(count: int) -> list[int]:
    # Keep every socket open until all are bound, so the kernel hands out distinct ports.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class MilvusServer:
    """One milvus-server process tree, its data and logs in data_dir."""

    def __init__(self, data_dir: str | os.PathLike, start_timeout: float = 180.0):
        self.data_dir = Path(data_dir).absolute()
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "milvus-server.log"
        self.port = 0
        self.started_in = 0.0  # seconds start() took, for reports
        self._proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusServer:
        executable = _executable()
        if executable is None:
            raise RuntimeError(f"{EXECUTABLE} not found: pip install milvus==2.3.5")
        began = time.monotonic()
        *ports, etcd_peer_port = free_ports(len(PORT_FLAGS) + 1)
        ports = dict(zip(PORT_FLAGS, ports))
        self.port = ports["--proxy-port"]
        command = [executable, "--data", str(self.data_dir)]
        for flag, port in ports.items():
            command += [flag, str(port)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        etcd_config = self.data_dir / "embed-etcd.yaml"
        etcd_config.write_text(_etcd_config(ports["--etcd-port"], etcd_peer_port))
        # Milvus reads any config key from the environment: ETCD_CONFIG_PATH is etcd.config.path.
        env = {**os.environ, "ETCD_CONFIG_PATH": str(etcd_config)}
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so stop() reaches the child too
            )
        atexit.register(self.stop)  # never leave a server behind, even if the tests crash
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _wait_ready(self) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._exited():
                raise RuntimeError(f"Milvus exited before it was ready:\n{self.log_tail()}")
            try:
                client = MilvusClient(uri=self.uri, timeout=5)
                try:
                    client.list_collections(timeout=5)
                    return
                finally:
                    client.close()
            except Exception as exc:  # not listening yet, or still starting its services
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Milvus at {self.uri} not ready after {self.start_timeout:.0f} s ({exc}):\n{self.log_tail()}"
                    ) from None
            time.sleep(0.5)

    def _exited(self) -> bool:
        """Whether the wrapper, or the `milvus` child it started, has exited.

        The wrapper outlives a crashed child (it only polls the child's health), so look for
        the child too: an exited child stays a zombie of the wrapper (Linux /proc).
        """
        if self._proc.poll() is not None:
            return True
        pid = self._proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            stats = [Path(f"/proc/{child}/stat").read_text() for child in children]
            states = [stat.rsplit(")", 1)[1].split()[0] for stat in stats]  # the field after "(name)"
        except (OSError, IndexError):
            return False  # no /proc, or a child just went: the timeout still applies
        return any(state in ("Z", "X") for state in states)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the wrapper's output and of the Milvus process's own stderr log."""
        parts = []
        for path in (self.log_path, self.data_dir / "logs" / "milvus-stderr.log"):
            tail = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else []
            if tail:
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(no log output)"

    def stop(self, grace: float = 5.0) -> None:
        """Stop the wrapper and its `milvus run standalone` child; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        group = proc.pid  # start_new_session made the wrapper its group leader
        _signal_group(group, signal.SIGTERM)
        if not _wait_group(proc, group, grace):
            _signal_group(group, signal.SIGKILL)
            _wait_group(proc, group, grace)


def _etcd_config(client_port: int, peer_port: int) -> str:
    """Settings for the embedded etcd (etcd's own config file format), on the given ports."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return (
        f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _wait_group(proc: subprocess.Popen, group: int, timeout: float) -> bool:
    """Wait until every process in the group has gone; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the wrapper; the orphaned child is reaped by init
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
