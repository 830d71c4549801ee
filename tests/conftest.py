"""Shared fixtures. Real components throughout: MTCNN and FaceNet on real photos from ../shared,
a tiny random-weight SDXL-architecture pipeline built with diffusers, real peft / Accelerate /
datasets. Tests that need ../shared skip with the reason when it is absent."""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from headshots.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEADSHOTS_SHARED", REPO.parent / "shared"))
FACE_WEIGHTS = SHARED / "models" / "facenet" / "casia-webface-features.pt"
FACES = SHARED / "faces"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _own_gradio_upload_folder() -> None:
    """Each test process (each pytest-xdist worker, and the process that starts them) its own Gradio upload folder,
    removed when it ends. Gradio files an upload under a hash of its bytes, so two workers uploading the same photo
    at once shared one file, and one app deleting its copy once done took the other's upload away: "01.jpg: not a
    regular file" (seen with `-n 2` spreading tests/test_app.py over both workers). Set here, before Gradio is
    imported; a folder set by the parent process is not reused."""
    folder = tempfile.mkdtemp(prefix="headshots-tests-gradio-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


_own_gradio_upload_folder()


def _share_the_cores() -> None:
    """`make test` runs the suite in pytest-xdist workers, one per core: each worker's torch (and the commands a test
    starts, which inherit the setting) takes its share of the cores instead of a thread per core each, where the
    workers' threads would take turns on the same cores. Set here, before torch is imported; an OMP_NUM_THREADS
    of your own is kept. Run serially (-n 0, -p no:xdist), torch keeps its default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # imported already (by a plugin): it read the variable then
        sys.modules["torch"].set_num_threads(threads)


_share_the_cores()

# Seconds each of the longest files takes (2 idle cores, two workers, `pytest --durations=0`, 2026-12-07). `make test`
# hands the files to its workers longest first (`--no-loadscope-reorder` keeps this order; xdist's own puts the files
# with the most tests first), so that no long file starts last while the other worker has run out of work: in the run
# measured, the end-to-end test (47 s) started last, and the workers' shares of the suite's time differed by 32 s.
LONGEST_FILES = {"test_app.py": 195, "test_app_browser.py": 140, "test_batch.py": 136, "test_intake.py": 92,
                 "test_train.py": 85, "test_train_processes.py": 79, "test_stages.py": 59, "test_end_to_end.py": 47,
                 "test_gpu_check.py": 45}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES); the order of the tests in a file, and of the other files, is kept."""
    items.sort(key=lambda item: -LONGEST_FILES.get(item.path.name, 0))


def script_module(name: str):
    """scripts/<name>.py as a module: the scripts are files run by path, not a package to import."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: these tests need the ../shared test assets (see README)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return need(FACES)


@pytest.fixture(scope="session")
def face_weights() -> Path:
    path = need(FACE_WEIGHTS)
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = str(path)
    return path


@pytest.fixture(scope="session")
def analyzer(face_weights):
    from headshots.config import FaceConfig
    from headshots.faces import FaceAnalyzer

    return FaceAnalyzer(FaceConfig(weights=str(face_weights)))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from headshots.tiny_sdxl import build_tiny_sdxl

    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    build_tiny_sdxl().save_pretrained(path)
    return path


def tiny_config(root: Path, tiny_model: Path, user: str, *overrides: str) -> Config:
    """A user whose data, outputs and cache live under `root`, on the tiny profile."""
    return load_config(
        user,
        "tiny",
        overrides=[
            f"paths.data_root={root / 'data'}",
            f"paths.outputs_root={root / 'outputs'}",
            f"paths.cache_root={root / 'cache'}",
            f"model.pretrained={tiny_model}",
            "wandb.mode=disabled",
            *overrides,
        ],
    )


@pytest.fixture
def make_config(tmp_path, tiny_model):
    """Config for a user whose data and outputs live under tmp_path, on the tiny profile."""

    def _make(user: str = "alice", *overrides: str) -> Config:
        return tiny_config(tmp_path, tiny_model, user, *overrides)

    return _make


def outside_make(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as a shell gives it, for a test that runs make: without what `make test` hands its commands. Its
    command-line variables are exported (`make test ARGS=-x` sets ARGS) and named in MAKEFLAGS, and a make the test
    runs took them as typed (test_purge's `make intake USER=-x` ran `python -m train intake ... -x`)."""
    _, _, given = f" {environ.get('MAKEFLAGS', '')}".partition(" -- ")  # NAME=value ..., a space in a value escaped
    names = {re.split(r"[:+?!]?=", word, maxsplit=1)[0] for word in re.split(r"(?<!\\) ", given) if "=" in word}
    dropped = names | {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    return {name: value for name, value in environ.items() if name not in dropped}


def run_make(*args: str, env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`make <args>` in the checkout as a shell runs it (`outside_make`), with `env` added; its output captured."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env={**outside_make(os.environ), **(env or {})},
                          capture_output=True, text=True, check=check)


def copy_photos(sources: list[Path], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(s, dest / s.name)) for s in sources]


@pytest.fixture
def prepared_user(make_config, prepared_once):
    """alice: five real photos of one person (Georgia Tech s01), prepared: a copy of `prepared_once` of her own."""
    cfg = make_config("alice")
    shutil.copytree(prepared_once, cfg.paths.data_root)
    return cfg


@pytest.fixture(scope="session")
def prepared_once(tmp_path_factory, tiny_model, faces_dir, face_weights, analyzer) -> Path:
    """The data folder of `prepared_user`, prepared once a session: ~40 tests start from it, and prepare (intake's
    checks, detection, FaceNet, a dataset) costs 1.2 s each time. Its files name nothing outside the folder (none of the
    five photos is rejected: a rejection's advice would name settings.yaml's path); prepare's run folder in outputs/,
    a lock only, is not copied."""
    from train.prepare import prepare

    root = tmp_path_factory.mktemp("prepared")
    cfg = tiny_config(root, tiny_model, "alice")
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:5], Path(cfg.paths.data_root) / "alice" / "selfies")
    prepare(cfg, analyzer)
    return Path(cfg.paths.data_root)


def wait_until(condition: Callable[[], bool], seconds: float) -> None:
    """Returns once `condition()` holds, or when `seconds` have passed: the caller's assertion then says what failed."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def wandb_records(folder: Path, *expected: bytes, timeout_s: float = 60.0) -> bytes:
    """The records of every W&B run file (`*.wandb`) under `folder`, once each of `expected` is among them, or when
    `timeout_s` has passed (the caller's assertion then says what is missing). W&B's service writes a run's records
    to its file on its own schedule, after `finish` has returned: a CI run read only the file's 7-byte header right
    after a training, and failed. Until `expected` is there, what is *not* in the records proves nothing."""

    def records() -> bytes:
        return b"".join(p.read_bytes() for p in folder.rglob("*.wandb"))

    wait_until(lambda: all(e in records() for e in expected), timeout_s)
    return records()


@contextmanager
def held_elsewhere(lock_path: Path) -> Iterator[None]:
    """`lock_path` held by another process (a command already running) while the block runs."""
    script = (f"import time; from filelock import FileLock; lock = FileLock({str(lock_path)!r}); "
              "lock.acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def everything_done(cfg) -> None:
    """Every stage's outputs as files (empty where their content is not read) and its record, as a finished chain
    leaves them."""
    import json

    import datasets

    from headshots.stages import STAGES, fingerprints, stages_to_run, write_record
    from headshots.workspace import ADAPTER_WEIGHTS, Workspace

    ws = Workspace.from_config(cfg)
    ws.selfies.mkdir(parents=True)
    (ws.selfies / "01.jpg").write_bytes(b"a photo")
    caption = {"file": ["01.jpg"], "caption": ["a photo of ohwx person"], "generated_caption": ["a photo of ohwx person"]}
    datasets.Dataset.from_dict(caption).save_to_disk(str(ws.prepared))  # its captions are read: edited since?
    (ws.adapter_dir(cfg.run)).mkdir(parents=True)
    ws.samples_dir(cfg.run).mkdir(parents=True)
    ws.export_manifest(cfg.run).parent.mkdir(parents=True)
    for path in (ws.intake_report, ws.reference_embeddings, ws.adapter_dir(cfg.run) / ADAPTER_WEIGHTS, ws.gallery(cfg.run)):
        path.write_text("{}")
    ws.scores(cfg.run).write_text(json.dumps({"kept": 1, "images": [{"file": "linkedin-00.png", "similarity": 0.7}]}))
    ws.export_manifest(cfg.run).write_text(json.dumps({"images": [{"file": "linkedin-00.png"}]}))
    for stage, expected in zip(STAGES, fingerprints(cfg).values()):
        write_record(stage, cfg, expected, 1.0)
    assert stages_to_run(cfg) == []


@pytest.fixture(autouse=True)
def _no_wandb_service_handed_on() -> Iterator[None]:
    """A run W&B starts in the test's process (offline or online) starts its service process and names it in
    WANDB_SERVICE; the commands a later test runs inherited the variable and logged their runs through that service,
    which writes their files with this process's umask, not the command's 077 (test_end_to_end failed when a
    training test had run before it in the same process, as `make test`'s workers do). The service stays for this
    process's own later runs; the commands start their own."""
    before = os.environ.get("WANDB_SERVICE")
    yield
    if before is None:
        os.environ.pop("WANDB_SERVICE", None)
    else:
        os.environ["WANDB_SERVICE"] = before


@pytest.fixture(autouse=True)
def _umask_as_it_was() -> Iterator[None]:
    """A command's `main` run in the test's process sets umask 077 (headshots.workspace.private_files); the next
    test starts from the suite's own."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
