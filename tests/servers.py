"""An OpenAI-compatible chat server on 127.0.0.1 for tests (the backend tests, the fault
tests, the domain-spec test): a stdlib HTTP server whose answers the test scripts with
`reply(request) -> (status, headers, body)`. It records every request: each prompt's number
of attempts (`hits`) and the arrivals in order."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    prompt: str  # the last message's content (a plain completion request: its `prompt`)
    hit: int  # this prompt's 1-based attempt number

    @property
    def wants_json(self) -> bool:
        return "response_format" in self.body


#: (status, extra headers, body) for one request
Reply = tuple[int, dict[str, str], bytes]


def completion(text: str, prompt_tokens: int = 5, completion_tokens: int = 2) -> bytes:
    """A chat-completion body answering `text`."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}).encode()


class ChatServer:
    def __init__(self, reply: Callable[[Request], Reply]) -> None:
        self.reply = reply
        self.hits: Counter[str] = Counter()
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                # a chat request's last message, or a plain completion request's prompt
                prompt = body["messages"][-1]["content"] if "messages" in body else str(body.get("prompt", ""))
                with outer.lock:
                    outer.hits[prompt] += 1
                    outer.arrivals.append((prompt, time.monotonic()))
                    hit = outer.hits[prompt]
                try:
                    status, headers, payload = outer.reply(Request(self.path, body, dict(self.headers), prompt, hit))
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client is gone (gave up on a hang, or was killed)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def prompts(self) -> list[str]:
        """Every prompt received, in order (retries included)."""
        with self.lock:
            return [prompt for prompt, _ in self.arrivals]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
