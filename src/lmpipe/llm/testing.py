"""Real parts for tests and benchmarks: a tiny random Hugging Face chat model, and a fault-injecting
OpenAI-compatible server (429 with Retry-After, 500, timeouts, garbage, truncated JSON, reset connections).

Neither is a mock: the tiny model is an ordinary Llama checkpoint on disk that ``EmbeddedBackend`` and
``serve-llm`` load like any other, and the fault server speaks HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lmpipe import tiny


def build_tiny_model(directory: str | Path, seed: int = 0, vocab_size: int = 512, hidden: int = 32) -> Path:
    """A tiny random chat model (ChatML) for the LLM layer: wide init for clear argmax gaps and varied text."""
    return tiny.build_tiny_model(directory, None, vocab_size, hidden, layers=2, heads=4, kv_heads=2, context=1024,
                                 seed=seed, chat=True, init_std=0.3, tie_embeddings=True)


# ---------------------------------------------------------------------------------- fault server
Action = str  # ok | slow | 400 | 429 | 500 | 503 | timeout | garbage | truncated | reset | empty_choices


def request_key(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


class FaultServer:
    """OpenAI-compatible endpoints whose answers follow ``script(request, attempt) -> action``.

    ``request`` is the parsed JSON body, ``attempt`` counts how often that body was seen (0-based). A
    successful answer's text is ``reply(body)``. The server counts requests, attempts per key and the
    most requests in flight at once.
    """

    def __init__(
        self,
        script: Callable[[dict, int], Action],
        reply: Callable[[dict], str] | None = None,
        retry_after: str = "1",
        hang_s: float = 3.0,
    ) -> None:
        self.script, self.reply = script, reply or default_reply
        self.retry_after, self.hang_s = retry_after, hang_s
        self.attempts: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = self.max_in_flight = 0
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.headers_seen: list[dict[str, str]] = []
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                key = request_key(body)
                with server._lock:
                    attempt = server.attempts[key]
                    server.attempts[key] += 1
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.arrivals.append(time.monotonic())
                    server.headers_seen.append(dict(self.headers))
                try:
                    req = json.loads(body)
                    action = server.script(req, attempt)
                    with server._lock:
                        server.actions[action] += 1
                    self._act(action, req)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _act(self, action: Action, req: dict) -> None:
                if action == "429":
                    return self._send(429, b'{"error": "rate limited"}', {"Retry-After": server.retry_after})
                if action == "400":
                    return self._send(400, b'{"error": "bad request"}')
                if action == "slow":
                    time.sleep(server.hang_s)
                if action in ("500", "503"):
                    return self._send(int(action), b'{"error": "internal"}')
                if action == "timeout":
                    time.sleep(server.hang_s)
                    self.close_connection = True
                    return None
                if action == "reset":  # RST instead of a response
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return None
                good = completion_payload(req, server.reply(req))
                if action == "garbage":
                    return self._send(200, b"<html><body>502 upstream hiccup</body></html>")
                if action == "truncated":
                    return self._send(200, good[: len(good) // 2])
                if action == "empty_choices":
                    return self._send(200, b'{"choices": []}')
                return self._send(200, good)

        return Handler


def completion_payload(req: dict, text: str) -> bytes:
    chat = "messages" in req
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    words = len(text.split())
    return json.dumps(
        {
            "object": "chat.completion" if chat else "text_completion",
            "model": req.get("model"),
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
        }
    ).encode()


def default_reply(req: dict) -> str:
    """A deterministic, well-formed paragraph that depends on the request (so outputs differ per prompt)."""
    content = json.dumps(req.get("messages") or req.get("prompt"), sort_keys=True)
    h = hashlib.sha256(content.encode()).hexdigest()
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
    ]
    picked = [words[int(c, 16)] for c in h[:14]]
    return f"Report {h[:8]}: the " + " ".join(picked) + " entries are linked through the same record."


# ------------------------------------------------------------------------------- serve-llm process
def start_serve_llm(
    model: str | Path, *args: str, timeout_s: float = 120.0, cpus: set[int] | None = None
) -> tuple[Any, str]:
    """Start ``lmpipe serve-llm`` as a real subprocess on a free port; returns (process, base url).

    ``cpus`` pins the server (all its threads) to those cores, e.g. to keep a benchmark's client off them."""
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "lmpipe.cli",
        "serve-llm",
        "--params",
        "",
        "--model",
        str(model),
        "--port",
        str(port),
        "--threads",
        "1",
        *args,
    ]
    import tempfile

    log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe (never blocks); lives as long as the server
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=pin)  # noqa: PLW1509
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"serve-llm exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base + "/v1"
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"serve-llm did not become healthy in {timeout_s}s")


def server_stats(base_url: str) -> dict:
    import httpx

    return httpx.get(base_url.removesuffix("/v1") + "/stats", timeout=10).json()
