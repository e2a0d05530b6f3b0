"""Worker subprocesses seen from the benchmark: spawn, gate, wait for ready, stop, kill.

Owns: the parent side of the :mod:`bench.worker_proc` stdout protocol. Every
process started here is ended by :meth:`WorkerProc.aclose` (SIGTERM, then SIGKILL
after a deadline), by its own pid only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import TracebackType

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from bench.common import REPO_ROOT, worker_env
from streams.settings import Settings


class WorkerProc:
    """One ``python -m bench.worker_proc`` child."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        assert proc.stdout is not None
        self._out = BufferedByteReceiveStream(proc.stdout)
        self.ready_ms = 0.0

    @classmethod
    async def spawn(
        cls, settings: Settings, *, concurrency: int = 32, burst: bool = False, gate: bool = False
    ) -> WorkerProc:
        """Start a worker and wait until it has loaded (imports done)."""
        cmd = [sys.executable, "-m", "bench.worker_proc", "--concurrency", str(concurrency)]
        cmd += ["--burst"] if burst else []
        cmd += ["--gate"] if gate else []
        proc = await anyio.open_process(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            cwd=REPO_ROOT,
            env=worker_env(settings),
        )
        worker = cls(proc)
        await worker.expect("loaded", timeout_s=30)
        return worker

    async def __aenter__(self) -> WorkerProc:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def expect(self, word: str, *, timeout_s: float) -> str:
        """Read stdout lines until one starting with ``word``; return its argument."""
        with anyio.fail_after(timeout_s):
            while True:
                line = (await self._out.receive_until(b"\n", 4096)).decode().strip()
                head, _, rest = line.partition(" ")
                if head == word:
                    return rest

    async def go(self) -> None:
        """Open the gate of a worker started with ``gate=True``."""
        assert self.proc.stdin is not None
        await self.proc.stdin.send(b"go\n")

    async def wait_ready(self, timeout_s: float = 30) -> float:
        """Wait for ``ready``; returns (and keeps) its wall-clock time in ms."""
        self.ready_ms = float(await self.expect("ready", timeout_s=timeout_s))
        return self.ready_ms

    async def wait_done(self, timeout_s: float) -> int:
        """Wait for the worker to return (burst mode or after SIGTERM); jobs it started."""
        started = int(await self.expect("done", timeout_s=timeout_s))
        with anyio.fail_after(timeout_s):
            await self.proc.wait()
        return started

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.returncode is None

    def kill(self) -> None:
        """SIGKILL the worker (no clean-up on its side: its jobs must be reclaimed)."""
        self.proc.send_signal(signal.SIGKILL)

    async def aclose(self, deadline_s: float = 10) -> None:
        """Stop the worker if it still runs: SIGTERM, then SIGKILL after ``deadline_s``."""
        with anyio.CancelScope(shield=True):
            if self.proc.returncode is None:
                self.proc.terminate()
                with anyio.move_on_after(deadline_s):
                    await self.proc.wait()
                if self.proc.returncode is None:
                    self.proc.kill()
                    await self.proc.wait()
            await self.proc.aclose()
