"""A llama.cpp server the project starts, waits for, and always stops: the embedded default oracle.

Reusable for any GGUF::

    with ManagedLlamaServer("model.gguf", n_ctx=4096) as server:
        oracle = create_oracle(OracleConfig(name="local", options={"api_base": server.api_base}))

It binds to loopback only, on a free port, runs in its own session (the
terminal's Ctrl+C reaches us, and we stop it), and is stopped on ``stop()``, on
interpreter exit (atexit), and by itself when its parent process dies even by
SIGKILL (see ``_serve.py``).  A start that fails shows the tail of the server's
output.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cyclealign import embedded
from cyclealign.errors import LocalServerError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_gguf(spec: str | Path) -> Path:
    """``embedded:smollm2`` or a path to a GGUF file."""
    return embedded.resolve_gguf(spec, key="oracle.options.serve_gguf", error=LocalServerError, what="oracle model")


class ManagedLlamaServer:
    """``with ManagedLlamaServer(gguf) as server: ... server.api_base ...``"""

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        n_ctx: int = 4096,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 120.0,
        n_threads: int | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise LocalServerError(f"the managed server binds to loopback only, not {host!r}")
        self.gguf_path = Path(gguf_path)
        if not self.gguf_path.is_file():
            raise LocalServerError(f"GGUF file {self.gguf_path} does not exist")
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalServerError(
                'the managed local server needs llama-cpp-python: pip install "cyclealign-core[local]" '
                '(or pip install "llama-cpp-python[server]")'
            )
        self.n_ctx = n_ctx
        self.host = host
        self._fixed_port = port
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.n_threads = n_threads or os.cpu_count() or 1  # llama.cpp's default is half the cores
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, read on failure

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cyclealign_oracles._serve",
            str(os.getpid()),
            "llama_cpp.server",
            "--model",
            str(self.gguf_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
        ]

    def start(self) -> ManagedLlamaServer:
        """Start the server and wait until it answers; a port lost to a race is replaced (when we chose it)."""
        for _ in range(3):
            self._log.seek(0)
            self._log.truncate()
            self.process = subprocess.Popen(
                self._command(),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl+C is ours to handle; we stop it ourselves
            )
            atexit.register(self.stop)
            try:
                self._wait_ready()
                return self
            except LocalServerError:
                if self._fixed_port is None and "address already in use" in self._tail().lower():
                    self.port = free_port()
                    continue
                raise
            except BaseException:  # Ctrl+C while waiting: never leave a half-started server behind
                self.stop()
                raise
        raise LocalServerError(f"no free port for the llama.cpp server:\n{self._tail()}")

    def _tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise LocalServerError(f"llama.cpp server exited with code {code} while starting:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise LocalServerError(f"llama.cpp server not ready after {self.startup_timeout_s:.0f} s:\n{self._tail()}")

    def stop(self) -> None:
        """Terminate the server's process group, then kill it if it lingers; idempotent."""
        proc, self.process = self.process, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        else:
            proc.wait()

    def __enter__(self) -> ManagedLlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
