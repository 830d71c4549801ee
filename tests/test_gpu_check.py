"""scripts/gpu_check.py, the one-call GPU driver, run at tiny size on the CPU so that it cannot rot:
parts in their own processes, each within its budget, the report rewritten after every part."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_check(out: Path, *args: str, timeout: int = 900) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--tiny", "--out", str(out), *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (out / "gpu_check.md").is_file()
    return json.loads((out / "gpu_check.json").read_text())


def part(report: dict, name: str) -> dict:
    return next(p for p in report["parts"] if p["part"] == name)


def test_parts_report_figures_or_why_not(tmp_path, faces_dir):
    report = gpu_check(tmp_path, "--only", "reference,detail,path")
    assert report["environment"]["diffusers"] != "missing"
    detail = part(report, "detail")
    assert detail["state"] == "done", detail["log_tail"]
    rows = {row["part"]: row for row in detail["tables"][0]}
    assert float(rows["**added by the pass**"]["seconds per image"].strip("*")) > 0
    assert json.loads((tmp_path / "parts" / "detail.json").read_text())["redraw_s"] > 0
    reference = part(report, "reference")
    assert reference["state"] == "done" or reference["state"].startswith("skipped: no copy of diffusers' reference script")
    assert "| detail | done |" in (tmp_path / "gpu_check.md").read_text()
    path = part(report, "path")  # trains fewer steps than the default, and says what the default would take
    assert path["state"] == "done" and [row["stage"] for row in path["tables"][0]][:3] == ["prepare", "fit", "infer"], path
    assert "At the default 30 training steps (estimated from this run's" in (tmp_path / "parts" / "path.md").read_text()


def test_a_part_past_its_budget_is_stopped_and_recorded(tmp_path):
    report = gpu_check(tmp_path, "--only", "sample", "--budget-scale", "0.02")
    assert part(report, "sample")["state"] == "stopped at its 2 s budget"


@pytest.mark.slow
def test_every_part_at_tiny_size(tmp_path, faces_dir):
    report = gpu_check(tmp_path, timeout=1800)
    for entry in report["parts"]:
        assert entry["state"] == "done" or entry["state"].startswith("skipped"), entry
    path = part(report, "path")["tables"][0]
    assert [row["stage"] for row in path][:3] == ["prepare", "fit", "infer"]


def test_on_the_gpu_the_model_is_built_once_and_every_part_loads_that_copy(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import gpu_check as driver

    args = argparse.Namespace(tiny=False, sdxl_config=tmp_path / "configs", out=tmp_path / "out", photos=tmp_path / "photos")
    built = tmp_path / "work" / "sdxl"
    plan = driver.parts(args, built)
    assert next(iter(plan)) == "build" and str(built) in plan["build"][0]
    for name, (command, _) in plan.items():
        if name != "build":
            assert command[command.index("--sdxl-config") + 1] == str(built), name
    assert sum(budget for _, budget in plan.values()) <= 8 * 60 - 20  # the whole call ends within 8 minutes
    alone = driver.parts(args, None)  # the build failed: each part builds its own from the configs
    assert "build" not in alone
    assert all(command[command.index("--sdxl-config") + 1] == str(args.sdxl_config) for command, _ in alone.values())
