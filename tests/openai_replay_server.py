"""An OpenAI-compatible chat-completions server on the loopback address that answers like a perfect
teacher: for a prompt it knows, it replays that task's expert trace turn by turn as `tool_calls` (the
turn is the number of assistant messages in the request). Only the wire protocol is real; it lets the
tests drive `OpenAITeacher` through the `openai` client end to end.

    with ReplayServer({user_text: trace}, model="teacher") as server:
        OpenAITeacher(server.url, "teacher")
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ReplayServer:
    def __init__(self, traces: dict[str, list[dict]], model: str = "teacher", fail_first: int = 0,
                 always_fail: bool = False):
        self.traces, self.model = traces, model
        self.fail_first, self.always_fail = fail_first, always_fail
        self.chat_requests = 0
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "ReplayServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: dict) -> dict:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        turn = sum(m["role"] == "assistant" for m in request["messages"])
        assistant_turns = [m for m in self.traces[user] if m["role"] == "assistant"]
        step = assistant_turns[min(turn, len(assistant_turns) - 1)]
        message: dict = {"role": "assistant", "content": step.get("content") or None}
        if step.get("reasoning"):
            message["reasoning_content"] = step["reasoning"]
        calls = step.get("tool_calls") or []
        if calls:
            message["tool_calls"] = [{"id": f"srv_{turn}_{i}", "type": "function",
                                      "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                                     for i, c in enumerate(calls)]
        return {"id": f"chatcmpl-{turn}", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                                 "created": 0, "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.chat_requests += 1
                    server.requests.append(request)
                    failing = server.always_fail or server.chat_requests <= server.fail_first
                if failing:
                    self._send(500, {"error": {"message": "injected failure", "type": "server_error"}})
                    return
                self._send(200, server.answer(request))

        return Handler
