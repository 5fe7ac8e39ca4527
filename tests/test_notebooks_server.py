"""The walkthrough as its users meet it: `jupyter lab` serving the notebooks.

Starts JupyterLab headless on loopback (127.0.0.1, a port the OS picks, a random token, a private
runtime and config folder), then opens every notebook through the server's REST contents API, as the
browser front end does, and checks that each arrives as a valid notebook with its committed outputs.
nbval (pyproject's addopts) separately re-runs every notebook and compares outputs; this test covers
what nbval cannot: that the server starts and really serves them. Everything is bounded in time.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
EXPECTED_PREFIXES = [f"{i:02d}_" for i in range(1, 9)]  # the walkthrough, 01_ to 08_
START_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class LabServer:
    """A running `jupyter lab` process and how to talk to it."""

    def __init__(self, proc: subprocess.Popen, info: dict, token: str, log: Path):
        self.proc, self.info, self.token, self.log = proc, info, token, log
        self.base = f"http://127.0.0.1:{info['port']}{info['base_url']}"

    def request(self, path: str, method: str = "GET", token: bool = True, query: dict | None = None):
        """(status, headers, body bytes) of one HTTP request; HTTP errors are returned, not raised."""
        url = self.base + path.lstrip("/") + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        if token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, path: str, **query):
        status, _, body = self.request(path, query=query or None)
        assert status == 200, f"GET {path} -> HTTP {status}: {body[:300]!r}\n{self.log_tail()}"
        return json.loads(body)

    def log_tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "server log (last lines):\n" + "\n".join(lines[-n:])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # twice: jupyter asks for confirmation after the first
    time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LabServer:
    tmp = tmp_path_factory.mktemp("jupyter")
    runtime, config, log = tmp / "runtime", tmp / "config", tmp / "server.log"
    runtime.mkdir()
    config.mkdir()  # empty: no user or machine configuration changes what is tested
    token = secrets.token_hex(24)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(config))
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",  # loopback only
        "--ServerApp.port=0",  # the OS picks a free port; the server writes it to its runtime file
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={REPO}",
        "--LabApp.news_url=None",  # no network: no news feed, no update check
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers often run as root
        cmd.append("--allow-root")
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        info_file = runtime / f"jpserver-{proc.pid}.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not info_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")
                pytest.fail(f"jupyter lab did not start within {START_TIMEOUT_S:.0f} s (exit code "
                            f"{proc.poll()}):\n{text[-3000:]}")
            time.sleep(0.2)
        info = {}
        while "port" not in info:  # the file may be seen before it is completely written
            try:
                info = json.loads(info_file.read_text())
            except json.JSONDecodeError:
                time.sleep(0.1)
        server = LabServer(proc, info, token, log)
        while server.request("api/status")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer /api/status in time\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)


def _numbered_notebooks() -> list[str]:
    return sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_serves_on_loopback_with_a_token(lab):
    assert lab.info["hostname"] == "127.0.0.1"
    assert lab.info["token"] == lab.token
    status, _, _ = lab.request("api/contents/notebooks", token=False)
    assert status == 403, f"a request without the token got HTTP {status}, expected 403"
    status, headers, body = lab.request("lab")
    assert status == 200 and headers.get_content_type() == "text/html", status
    assert b"JupyterLab" in body


def test_lists_the_whole_walkthrough(lab):
    listing = lab.json("api/contents/notebooks", content=1)
    assert listing["type"] == "directory"
    served = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
    numbered = [n for n in served if n[:2].isdigit()]
    assert numbered == _numbered_notebooks()
    prefixes = [n[:3] for n in numbered]
    assert prefixes == EXPECTED_PREFIXES, f"expected one notebook per step 01_..08_, got {numbered}"


@pytest.mark.parametrize("name", _numbered_notebooks())
def test_opens_each_notebook(lab, name):
    model = lab.json(f"api/contents/notebooks/{urllib.parse.quote(name)}", content=1, type="notebook")
    assert model["type"] == "notebook" and model["format"] == "json", (model["type"], model["format"])
    nb = nbformat.from_dict(model["content"])
    nbformat.validate(nb)  # raises ValidationError with the reason
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "starts with a title"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    # committed with outputs (so it reads well on a code host), and no cell left with an error
    assert any(c.outputs for c in code), "committed without outputs"
    errors = [c.source[:60] for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells committed with an error output: {errors}"
