"""Runs the built-in server in a child process on 127.0.0.1, optionally behind a fault injector.

The fault injector stands in for a misbehaving server: it answers some requests itself (HTTP 500, a garbled JSON
completion, a stall longer than the client's timeout, or a refusal of response_format for a server without
structured output) and passes the rest to the real app. Its pattern is set at run time with POST /_faults, so one
server process serves several tests. The child can be killed with SIGKILL to test recovery.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from synthvlp.serving.health import NotHealthy, wait_healthy

SCRIPT = r'''
import asyncio, itertools, json, sys
import torch
torch.set_num_threads(1)
import uvicorn
from synthvlp.llm.engine import LocalModel
from synthvlp.serving.openai_server import create_app

model_path, port, max_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app(LocalModel(model_path), max_batch=max_batch, max_tokens_limit=4096)  # room for a request that outlasts its client


class Faults:
    """ASGI wrapper: for chat completions, the n-th request gets pattern[n % len(pattern)]."""

    def __init__(self, app):
        self.app, self.pattern, self.count = app, ["pass"], itertools.count()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/_faults":
            body = json.loads((await receive())["body"])
            self.pattern, self.count = body["pattern"], itertools.count()
            return await self._send(send, 200, {"ok": True})
        if scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        fault = self.pattern[next(self.count) % len(self.pattern)]
        if fault == "500":
            return await self._send(send, 500, {"error": {"message": "injected"}})
        if fault == "garbled":
            return await self._send(send, 200, {"choices": [{"message": {"role": "assistant", "content": '{"findings": "The lu'}}]})
        if fault == "stall":
            await asyncio.sleep(5)
        if fault == "text-only":
            message = await receive()
            request = json.loads(message["body"])
            if "response_format" in request:
                return await self._send(send, 400, {"error": {"message": "response_format json_schema is not supported"}})
            content = "FINDINGS: The lungs are clear.\nIMPRESSION: No acute cardiopulmonary abnormality."
            return await self._send(send, 200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
        return await self.app(scope, receive, send)

    async def _send(self, send, status, payload):
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


uvicorn.run(Faults(app), host="127.0.0.1", port=port, log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: Path, folder: Path, port: int | None = None, max_batch: int = 8) -> None:
        self.model, self.port, self.max_batch = model, port or free_port(), max_batch
        self.script = folder / "serve_with_faults.py"
        self.script.write_text(SCRIPT)
        self.log = folder / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(self.script), str(self.model), str(self.port), str(self.max_batch)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_healthy(self.process, f"{self.url}/health", timeout_s, poll_s=0.2)
        except NotHealthy as exc:
            self.kill()
            raise RuntimeError(f"server {exc}: {self.log.read_text()[-2000:]}") from None
        return self

    def faults(self, *pattern: str) -> None:
        httpx.post(f"{self.url}/_faults", json={"pattern": list(pattern) or ["pass"]}, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
