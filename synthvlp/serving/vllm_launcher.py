"""Start ``vllm serve`` from its own interpreter, wait until it is healthy, stop it cleanly.

vLLM pins its own torch build, so it never shares our environment: users point ``--vllm-python`` at the python of
a venv where vLLM is installed, and we run ``python -m vllm.entrypoints.cli.main serve MODEL ...`` there. The
flags are the ones report writing wants: prefix caching (every request shares the system prompt and examples),
a bounded context, loopback binding and an optional API key.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.serving.health import NotHealthy, wait_healthy


@dataclass
class VllmSettings:
    model: str
    python: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    api_key: str | None = None
    served_model_name: str | None = None
    extra_args: list[str] = field(default_factory=list)


def command(settings: VllmSettings) -> list[str]:
    """The command line that starts the server (the API key goes through the environment, not argv)."""
    cmd = [str(settings.python), "-m", "vllm.entrypoints.cli.main", "serve", settings.model,
           "--host", settings.host, "--port", str(settings.port),
           "--max-model-len", str(settings.max_model_len),
           "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
           "--tensor-parallel-size", str(settings.tensor_parallel_size),
           "--enable-prefix-caching", "--disable-log-requests"]
    if settings.served_model_name:
        cmd += ["--served-model-name", settings.served_model_name]
    return cmd + list(settings.extra_args)


class VllmServer:
    """A running ``vllm serve``: ``start()`` returns once /health answers 200; ``stop()`` sends SIGTERM, then SIGKILL."""

    def __init__(self, settings: VllmSettings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    def start(self, timeout_s: float = 900.0, poll_s: float = 1.0) -> None:
        if not Path(self.settings.python).is_file():
            raise UserError(f"--vllm-python {self.settings.python}: no such interpreter; point it at the python of the venv where vLLM is installed")
        env = dict(os.environ)
        if self.settings.api_key:
            env["VLLM_API_KEY"] = self.settings.api_key
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command(self.settings), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.wait_healthy(timeout_s, poll_s)

    def wait_healthy(self, timeout_s: float, poll_s: float) -> None:
        """Poll /health until 200; fail early (with the exit code) if the process dies, or after ``timeout_s``."""
        url = f"http://{self.settings.host}:{self.settings.port}/health"
        try:
            wait_healthy(self.process, url, timeout_s, poll_s)
        except NotHealthy as exc:
            if exc.exit_code is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise UserError(f"vllm serve {exc}{where}") from None
            self.stop()
            raise UserError(f"vllm serve {exc}; raise --startup-timeout for large models") from None

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM the server's process group (vLLM has worker children), SIGKILL after ``grace_s``."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()
