"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

It is a real HTTP server (``http.server`` in a thread, port 0), so the proposer's whole
wire path runs: httpx, time-outs, status codes, headers. Replies are taken in order from
``script``; when it runs out, ``default`` answers. Every request is recorded.

    with FakeVlmServer([Reply(429, headers={"Retry-After": "0"}), Reply.answer('["sepia"]')]) as server:
        VlmConfig(url=server.url, ...)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    """One scripted reply."""

    status: int = 200
    body: Any = None  # a dict (sent as JSON) or a str (sent as is)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to provoke a client time-out)

    @classmethod
    def answer(cls, content: str, **kwargs: Any) -> Reply:
        """A 200 chat completion whose assistant message is ``content``."""
        body = {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
        }
        return cls(200, body, **kwargs)

    @classmethod
    def error(cls, status: int, message: str = "scripted error", **kwargs: Any) -> Reply:
        return cls(status, {"error": {"message": message, "type": "test"}}, **kwargs)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def image_urls(self) -> list[str]:
        """The ``image_url`` URLs of the first message, in order."""
        content = self.body["messages"][0]["content"]
        return [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]

    def text(self) -> str:
        content = self.body["messages"][0]["content"]
        return "\n".join(part["text"] for part in content if part.get("type") == "text")


class FakeVlmServer:
    """Context manager: start on enter, stop on exit; ``url`` ends in ``/v1``."""

    def __init__(self, script: Sequence[Reply] = (), default: Reply | None = None) -> None:
        self.script = list(script)
        self.default = default or Reply.error(500, "script exhausted")
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                reply = owner._record(RecordedRequest("POST", self.path, dict(self.headers), body))
                if reply.delay:
                    # Wait in small steps so stopping the server is never held up.
                    deadline = time.monotonic() + reply.delay
                    while time.monotonic() < deadline and not owner._stop.is_set():
                        time.sleep(0.01)
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                    content_type = "application/json"
                else:
                    payload = (reply.body or "").encode()
                    content_type = "text/plain"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out): that is the point of a delay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval makes shutdown quick (the default waits up to 0.5 s).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.script.pop(0) if self.script else self.default
