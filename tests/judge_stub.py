"""A stub OpenAI-compatible judge on 127.0.0.1 for the judge reward's tests: scripted faults, recorded requests.

`StubJudge(script, reply)` serves POST /v1/chat/completions. Each request takes the next action of `script`
(then "ok" for good): "ok" (200, a chat completion whose content is `reply(user_message)`), an HTTP status
("500", "429", ...; `retry_after` sets the header), "hang" (sleep `hang_s`, then answer), "malformed" (200 with a
body that is not JSON), "drop" (close the connection without answering). `requests` records each request's
time, headers and JSON body. Use it as a context manager; `url` is the /v1 base.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo_score(message: str) -> str:
    """A judge that gives the completion itself as its score: the text after the last "Answer: "."""
    return f"Score: {message.rsplit('Answer: ', 1)[-1].strip()}"


class StubJudge:
    def __init__(self, script=(), reply=echo_score, retry_after: str | None = None, hang_s: float = 3.0):
        self.script, self.reply, self.retry_after, self.hang_s = list(script), reply, retry_after, hang_s
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub.lock:
                    stub.requests.append(
                        {"time": time.monotonic(), "headers": dict(self.headers), "body": body}
                    )
                    action = stub.script.pop(0) if stub.script else "ok"
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "hang":
                    time.sleep(stub.hang_s)
                    action = "ok"
                if action == "malformed":
                    return self._send(200, b'{"choices": [{"message": ')
                if action != "ok":
                    headers = (
                        {"Retry-After": stub.retry_after} if stub.retry_after and action == "429" else {}
                    )
                    return self._send(int(action), b'{"error": {"message": "stub says no"}}', headers)
                content = stub.reply(body["messages"][-1]["content"])
                answer = {
                    "id": "stub",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                }
                self._send(200, json.dumps(answer).encode())

            def _send(self, status: int, data: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def contents(self) -> list[str]:
        """The user message of each request, in order."""
        return [r["body"]["messages"][-1]["content"] for r in self.requests]
