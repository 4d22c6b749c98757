"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API, scriptable per call.

Used by the integration tests so that the oracle goes through litellm and real
HTTP exactly as against an API, while each test decides what the "model" does:
answer, fail with 429/500, hang, or reply with broken JSON.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """What the server does for one call."""

    content: str | None = None  # assistant message text (a 200 answer)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # raw body instead of a chat completion
    delay_s: float = 0.0
    finish_reason: str = "stop"  # "length": the answer was cut off at max_tokens


@dataclass
class Call:
    at: float
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    done_at: float | None = None  # when the server answered it, or saw its client hang up
    abandoned: bool = False  # the client hung up before the answer
    index: int = -1  # its place among the server's requests

    @property
    def last_user(self) -> str:
        users = [m["content"] for m in self.body.get("messages", []) if m.get("role") == "user"]
        return users[-1] if users else ""

    @property
    def first_user(self) -> str:
        users = [m["content"] for m in self.body.get("messages", []) if m.get("role") == "user"]
        return users[0] if users else ""


_TASK = re.compile(r"## Your task|Order the \d+ answers")


def shown_responses(call: Call) -> list[str]:
    """The candidate texts of the task part of a ranking prompt, in the order shown."""
    text = call.first_user
    m = _TASK.search(text)
    task = text[m.start() :] if m else text
    return re.findall(r"<<<Response-(\d+)>>>\n(.*?)\n<<<END Response-\1>>>", task, flags=re.DOTALL)


def ranking_reply(order: list[int], response: str = "A careful and helpful answer.", **kwargs: Any) -> Reply:
    """A 200 answer holding a ranking in the format the oracle asks for."""
    return Reply(content=json.dumps({"desired rank": order, "response": response}), **kwargs)


def default_behaviour(call: Call, index: int) -> Reply:
    """A well-behaved oracle: ranks the shown answers longest first and writes its own answer."""
    shown = shown_responses(call)
    order = sorted(range(len(shown)), key=lambda k: (-len(shown[k][1]), k))
    return ranking_reply(order)


Behaviour = Callable[[Call, int], Reply]


class OpenAIServer:
    """``with OpenAIServer(behaviour) as s: ... s.api_base ... s.requests``."""

    def __init__(
        self,
        behaviour: Behaviour | list[Reply] | None = None,
        latency_s: float = 0.0,
        models: tuple[str, ...] = (),
        api_keys: set[str] | None = None,
        protect_models: bool = True,
    ) -> None:
        self.behaviour = behaviour or default_behaviour
        self.latency_s = latency_s
        self.models = models or ("test-model",)  # what GET /v1/models lists
        # With keys, a request whose bearer token is not one of them gets OpenAI's 401 (the key echoed in the
        # message, as some providers do); ``protect_models=False`` leaves the listing open, as many servers do.
        self.api_keys = api_keys
        self.protect_models = protect_models
        self.rejected: list[str] = []  # paths of the requests refused for their key
        self.requests: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.abandoned = 0  # calls whose client disconnected before the answer
        self.last_done = 0.0
        self._lock = threading.Lock()
        self._holding = False
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _wait(self, seconds: float) -> bool:
                """Sleep, watching the connection: False as soon as the client closes it."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(0.05, left))
                    if readable:
                        if self._gone():
                            return False
                        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))  # pipelined bytes: keep waiting
                return True

            def _refused(self) -> bool:
                """Answer 401 when the server checks keys and this request's is not one of them."""
                if outer.api_keys is None or (self.command == "GET" and not outer.protect_models):
                    return False
                key = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if key in outer.api_keys:
                    return False
                with outer._lock:
                    outer.rejected.append(self.path)
                message = f"Incorrect API key provided: {key}. You can find your API key in your account settings."
                body = {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
                self._send(401, json.dumps(body))
                return True

            def do_GET(self) -> None:
                if self._refused():
                    return
                if self.path.rstrip("/").endswith(("/models", "/health")):
                    models = [{"id": m, "object": "model"} for m in outer.models]
                    self._send(200, json.dumps({"object": "list", "data": models}))
                else:
                    self._send(404, json.dumps({"error": {"message": "not found"}}))

            def _gone(self) -> bool:
                """The client closed the connection (a killed process's sockets are closed by the kernel)."""
                readable, _, _ = select.select([self.connection], [], [], 0)
                try:
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _recorded(self, call: Call) -> bool:
                """Count the call unless the server holds: the check and the count are one step for hold()."""
                with outer._lock:
                    if outer._holding:
                        return False
                    call.index = len(outer.requests)
                    outer.requests.append(call)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    return True

            def _dropped_after_hold(self) -> bool:
                """A request that came while the server held waits, unrecorded; dropped if its client died meanwhile."""
                outer._released.wait()
                if not self._gone():
                    return False
                self.close_connection = True
                return True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                call = Call(time.monotonic(), self.path, body, dict(self.headers.items()))
                while not self._recorded(call):  # held: it waits, unrecorded, until released
                    if self._dropped_after_hold():
                        return
                try:
                    if self._refused():
                        return
                    reply = outer._reply(call, call.index)
                    if not self._wait(outer.latency_s + reply.delay_s):
                        with outer._lock:
                            outer.abandoned += 1  # the client hung up before the answer: it gave up on the call
                            call.abandoned = True
                        return
                    if reply.body is not None or reply.status != 200:
                        body_text = reply.body
                        if body_text is None:
                            body_text = json.dumps({"error": {"message": f"status {reply.status}", "type": "test"}})
                        self._send(reply.status, body_text, reply.headers)
                        return
                    completion = _completion(body, reply.content or "", reply.finish_reason)
                    self._send(200, json.dumps(completion), reply.headers)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1
                        outer.last_done = call.done_at = time.monotonic()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, and every test stops a server.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _reply(self, call: Call, index: int) -> Reply:
        if isinstance(self.behaviour, list):
            return self.behaviour[index] if index < len(self.behaviour) else default_behaviour(call, index)
        return self.behaviour(call, index)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def hold(self) -> None:
        """From now on new requests wait unrecorded and unanswered (sent, but not yet received by the API)."""
        with self._lock:
            self._holding = True
            self._released.clear()

    def release(self) -> None:
        """Let held requests through; those whose client is gone are dropped without a trace."""
        with self._lock:
            self._holding = False
        self._released.set()

    def quiet_for(self, seconds: float) -> bool:
        """No call in flight and none answered within ``seconds``: the client holds no unanswered request."""
        with self._lock:
            return self.in_flight == 0 and time.monotonic() - self.last_done >= seconds

    @property
    def chat_calls(self) -> list[Call]:
        return [c for c in self.requests if c.path.endswith("/chat/completions")]


def _completion(request: dict[str, Any], content: str, finish_reason: str = "stop") -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content", ""))) // 4 for m in request.get("messages", []))
    completion_tokens = max(1, len(content) // 4)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def oracle_for(server: OpenAIServer, cache_dir: Path | None = None, **overrides: Any) -> Any:
    """A ``local`` litellm oracle aimed at ``server``, with test-sized backoff (overridable).

    An override that is no ``OracleConfig`` field (``api_key_file``, ``json_schema``, …) is the backend's option.
    """
    from cyclealign.config import OracleConfig
    from cyclealign.plugins import create_oracle

    options: dict[str, Any] = {"api_base": server.api_base, "serve_gguf": None}
    options.update({k: overrides.pop(k) for k in list(overrides) if k not in OracleConfig.model_fields})
    settings: dict[str, Any] = {
        "name": "local",
        "model": "openai/test-oracle",
        "options": options,
        # Generous: a loaded machine must not turn a slow answer into a retry; tests of the timeout set their own.
        "timeout_s": 10.0,
        "max_retries": 2,
        "max_parse_retries": 1,
        "backoff_base_s": 0.05,
        "backoff_max_s": 5.0,
        "cache": cache_dir is not None,
        "cache_path": (cache_dir / "cache.sqlite") if cache_dir else None,
        **overrides,
    }
    return create_oracle(OracleConfig(**settings))


def main() -> None:
    """Serve the default behaviour in this process until stdin closes: ``python -m tests.support.openai_server``.

    The benchmarks run the server so, apart from the measured process, as a real
    API or local server is: in the same process its request threads would take
    the interpreter lock from the client they answer.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    with OpenAIServer(latency_s=args.latency) as server:
        print(server.api_base, flush=True)
        sys.stdin.read()  # until the parent closes the pipe (or dies)


if __name__ == "__main__":
    main()
