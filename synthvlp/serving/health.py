"""Wait for a freshly started server process until its ``/health`` answers 200.

Every launcher of a server (vLLM, ``synthvlp serve`` in tests and benchmarks) needs the same loop: poll the URL,
stop early if the process has already died, give up after a deadline. Callers turn ``NotHealthy`` into their own
error with their own advice.
"""

from __future__ import annotations

import subprocess
import time


class NotHealthy(Exception):
    """The server died (``exit_code`` set) or did not answer 200 in time (``exit_code`` None)."""

    def __init__(self, url: str, timeout_s: float, exit_code: int | None) -> None:
        reason = f"exited with status {exit_code} before becoming healthy" if exit_code is not None else f"did not answer {url} within {timeout_s:g} s"
        super().__init__(reason)
        self.exit_code = exit_code


def wait_healthy(process: subprocess.Popen, url: str, timeout_s: float, poll_s: float = 0.5) -> None:
    """Return once ``url`` answers 200; raise ``NotHealthy`` if ``process`` exits first or ``timeout_s`` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise NotHealthy(url, timeout_s, code)
        try:
            if httpx.get(url, timeout=max(poll_s, 1.0)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise NotHealthy(url, timeout_s, None)
