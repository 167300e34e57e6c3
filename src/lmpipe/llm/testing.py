"""Real parts for tests and benchmarks: a tiny random Hugging Face chat model, and a fault-injecting
OpenAI-compatible server (429 with Retry-After, 500, timeouts, garbage, truncated JSON, reset connections).

Neither is a mock: the tiny model is an ordinary Llama checkpoint on disk that ``EmbeddedBackend`` and
``serve-llm`` load like any other, and the fault server speaks HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(directory: str | Path, seed: int = 0, vocab_size: int = 512, hidden: int = 32) -> Path:
    """A randomly initialised 2-layer Llama + byte-level BPE tokenizer with a ChatML template (~100 KB)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "The observatory was founded in 1851 by a guild of clockmakers in the old harbour town.",
        "Entities, relations and summaries: people, places, organisations, dates and objects.",
        '{"entities": ["a", "b"], "summary": "one sentence."} Think step by step. 1. 2. 3.',
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.3,
    )  # wider than default: clear argmax gaps, varied text
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


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
def start_serve_llm(model: str | Path, *args: str, timeout_s: float = 120.0) -> tuple[Any, str]:
    """Start ``lmpipe serve-llm`` as a real subprocess on a free port; returns (process, base url)."""
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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
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
