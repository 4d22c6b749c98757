"""A llama.cpp server the project starts, waits for, and always stops: the embedded default oracle.

It binds to 127.0.0.1 only, on a free port, and is stopped on ``close()``, on
interpreter exit and when the parent dies of a signal; reusable for any GGUF.
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


class LocalServerError(RuntimeError):
    """The local server could not be started or did not become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.n_threads = n_threads or os.cpu_count() or 1  # llama.cpp's default is half the cores
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, read on failure

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ManagedLlamaServer:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        self.process = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl+C is ours to handle; we stop it ourselves
        )
        atexit.register(self.stop)
        self._wait_ready()
        return self

    def _tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise LocalServerError(
                    f"llama.cpp server exited with code {self.process.returncode} while starting:\n{self._tail()}"
                )
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
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> ManagedLlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
