"""Loading the model as a person names it: a hub id downloaded once is read from the local cache, and the Hub is
not asked about it again (headshots.hub.cached_first); one not downloaded is fetched from the Hub."""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

from tests.conftest import REPO

LOADS = """
import os
import urllib.request

import torch
from headshots.config import load_config
from headshots.errors import WeightsError
from headshots.sdxl import load_components, load_pipeline

def model(hub_id):
    return load_config("x", "tiny", overrides=[f"model.pretrained={hub_id}"]).model


def refused(load):
    try:
        load()
    except WeightsError as exc:
        print("refused:", exc.message)


load_components(model("test/tiny-parts"))  # what training loads: the parts one by one, never the pipeline's index
load_pipeline(model("test/tiny-sdxl"), torch.device("cpu"))  # what generation loads
load_components(model(os.environ["RELATIVE_MODEL"]))  # a folder, named relatively (it looks like a hub id: owner/name)
try:  # the stand-in writes down where the loads of the downloaded model end
    urllib.request.urlopen(os.environ["HF_ENDPOINT"] + "/end-of-the-downloaded-model")
except OSError:
    pass
for hub_id in ("test/not-downloaded", "test/part-downloaded"):
    refused(lambda: load_pipeline(model(hub_id), torch.device("cpu")))

# No network: a port nothing listens on, where the Hub was (the connection is refused, as with no network)
from huggingface_hub import constants
constants.ENDPOINT = os.environ["CLOSED_ENDPOINT"]
refused(lambda: load_components(model("test/unreachable")))
refused(lambda: load_pipeline(model("test/unreachable"), torch.device("cpu")))
"""


def _hub_cache(root: Path, model: Path, repo_id: str) -> Path:
    """`model` laid out as huggingface_hub's cache holds a download of `repo_id`."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


class _Hub(http.server.BaseHTTPRequestHandler):
    """A stand-in for huggingface.co that knows no model and writes down every question."""

    asked: ClassVar[list[str]] = []

    def _not_found(self) -> None:
        type(self).asked.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _not_found

    def log_message(self, *args) -> None:
        pass


def test_a_downloaded_hub_model_loads_without_asking_the_hub(tmp_path, tiny_model):
    """Also: a model not downloaded with no network is said at once. Training's download asked about each file five
    times with growing waits (ten minutes of retry warnings for SDXL) before failing, and generation's said "outgoing
    traffic has been disabled": the Hub is asked once, and the person told that it cannot be reached."""
    cache = _hub_cache(tmp_path / "hub", tiny_model, "test/tiny-sdxl")
    parts = _hub_cache(cache, tiny_model, "test/tiny-parts")  # as training downloads it: no model_index.json
    next((parts / "models--test--tiny-parts" / "snapshots").iterdir()).joinpath("model_index.json").unlink()
    broken = _hub_cache(cache, tiny_model, "test/part-downloaded")  # a download that stopped before the VAE's weights
    for weights in next((broken / "models--test--part-downloaded" / "snapshots").iterdir()).glob("vae/*.safetensors"):
        weights.unlink()
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}", "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(REPO), "CLOSED_ENDPOINT": nowhere,
           "RELATIVE_MODEL": f"{tiny_model.parent.name}/{tiny_model.name}"}  # run beside its folder (models0, or models1 ...)
    try:
        result = subprocess.run([sys.executable, "-c", LOADS], check=False, cwd=tiny_model.parent.parent, env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        hub.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    end = _Hub.asked.index("GET /end-of-the-downloaded-model")
    assert _Hub.asked[:end] == []  # not even the usage details' list of AI agents (telemetry, on by default), nor the folder
    # the stand-in is the Hub these loads would ask: a model not downloaded, or not all of it, is asked for there
    # (and refused: the stand-in knows no model)
    for hub_id in ("test/not-downloaded", "test/part-downloaded"):
        assert any(hub_id in question for question in _Hub.asked[end:]), _Hub.asked
        assert f"refused: Could not load the SDXL pipeline from '{hub_id}'" in result.stdout, result.stdout
    said = f"the Hugging Face Hub ({nowhere}) cannot be reached"
    assert result.stdout.count(said) == 2 and result.stdout.count("not in the local cache") == 2, result.stdout
    assert "Retry" not in result.stderr  # no file was asked for


def test_a_hub_warning_is_printed_once():
    """huggingface_hub's logger has a handler of its own and passes records on to the root logger too: each of its
    warnings (a download's retries) was printed twice, once bare. A command's logging prints it once, in its format."""
    warn = ("import logging; from headshots.logs import setup_logging; setup_logging(); import huggingface_hub.file_download; "
            "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')")
    said = subprocess.run([sys.executable, "-c", warn], check=True, cwd=REPO, capture_output=True, text=True, timeout=60).stderr
    assert said.count("Retrying in 1s") == 1 and "WARNING huggingface_hub.utils._http: Retrying in 1s" in said, said


def test_full_size_sdxl_on_a_cpu_says_to_try_the_tiny_profile(caplog):
    """`make train` without PROFILE=tiny on a machine with no GPU: said before the ~7 GB download, not left to find out
    after it (the tiny profile is what the person meant, or they are on the wrong machine)."""
    import torch

    from headshots.config import load_config
    from headshots.sdxl import warn_without_gpu

    warn_without_gpu(torch.device("cpu"), load_config("x", "tiny").model)
    assert not caplog.records
    warn_without_gpu(torch.device("cpu"), load_config("x", "sdxl").model)
    assert "No GPU here" in caplog.text and "PROFILE=tiny" in caplog.text
