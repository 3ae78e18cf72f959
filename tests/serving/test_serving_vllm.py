"""The vLLM launcher against a fake `python` that stands in for vLLM's: argv, health wait, clean stop, failures.

vLLM cannot run here (it pins its own torch and wants a GPU), so the test writes an executable that parses the
same command line and serves /health and /v1/models on loopback, which is all the launcher relies on.
"""

from __future__ import annotations

import json
import sys

import httpx
import pytest
from serving_harness import free_port

from synthvlp.errors import UserError
from synthvlp.serving.vllm_launcher import VllmServer, VllmSettings, command

FAKE = r'''#!{python}
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
argv = sys.argv[1:]
with open({record!r}, "w") as f:
    json.dump({{"argv": argv, "key": os.environ.get("VLLM_API_KEY")}}, f)
mode = {mode!r}
if mode == "crash":
    sys.exit(3)
port = int(argv[argv.index("--port") + 1])
started = time.monotonic()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ready = mode != "never-ready" and time.monotonic() - started > 0.5
        if self.path == "/health":
            self.send_response(200 if ready else 503); self.end_headers()
        elif self.path == "/v1/models":
            body = json.dumps({{"data": [{{"id": argv[argv.index("serve") + 1]}}]}}).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body)
        else:
            self.send_response(404); self.end_headers()
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", port), Handler)
def stop(*_):
    with open({record!r} + ".stopped", "w") as f:
        f.write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
'''


def fake_python(tmp_path, mode="ok"):
    path = tmp_path / f"python-{mode}"
    path.write_text(FAKE.format(python=sys.executable, record=str(tmp_path / "argv.json"), mode=mode))
    path.chmod(0o755)
    return path


def test_command_line_has_the_flags_report_writing_needs(tmp_path):
    cmd = command(VllmSettings(model="meta-llama/Llama-3.1-70B-Instruct", python=tmp_path / "py", port=8011, tensor_parallel_size=4,
                               served_model_name="llama70b", extra_args=["--quantization", "fp8"]))
    assert cmd[:5] == [str(tmp_path / "py"), "-m", "vllm.entrypoints.cli.main", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    for flag, value in (("--host", "127.0.0.1"), ("--port", "8011"), ("--max-model-len", "4096"), ("--tensor-parallel-size", "4"), ("--served-model-name", "llama70b")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enable-prefix-caching" in cmd and cmd[-2:] == ["--quantization", "fp8"]


def test_launcher_waits_for_health_serves_and_stops_cleanly(tmp_path):
    server = VllmServer(VllmSettings(model="my-model", python=fake_python(tmp_path), port=free_port(), api_key="sekret"), tmp_path / "vllm.log")
    server.start(timeout_s=30, poll_s=0.1)
    try:
        assert httpx.get(f"{server.base_url}/models").json()["data"][0]["id"] == "my-model"
        record = json.loads((tmp_path / "argv.json").read_text())
        assert record["key"] == "sekret" and "sekret" not in record["argv"]
    finally:
        code = server.stop(grace_s=10)
    assert code == 0 and (tmp_path / "argv.json.stopped").read_text() == "SIGTERM"


def test_launcher_reports_a_crash_and_a_server_that_never_gets_healthy(tmp_path):
    crash = VllmServer(VllmSettings(model="m", python=fake_python(tmp_path, "crash"), port=free_port()))
    with pytest.raises(UserError, match="exited with status 3 before becoming healthy"):
        crash.start(timeout_s=30, poll_s=0.1)
    stuck = VllmServer(VllmSettings(model="m", python=fake_python(tmp_path, "never-ready"), port=free_port()))
    with pytest.raises(UserError, match="did not answer .* within 2 s"):
        stuck.start(timeout_s=2, poll_s=0.1)
    assert stuck.process.poll() is not None, "a server that never got healthy is stopped, not left running"
    with pytest.raises(UserError, match="no such interpreter"):
        VllmServer(VllmSettings(model="m", python=tmp_path / "missing")).start()
