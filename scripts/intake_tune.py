"""Re-judge stored intake measurements with other thresholds: how the intake's per-photo limits are tuned.

scripts/intake_heldout.py stores every calibration photo's measurements (`quality.FaceMeasures`) next to
its label. This re-runs only the verdicts (`train.intake.judge`, the same code the intake runs) with
`intake.*` overrides, in a second, and prints the right-reason table and the clean photos' false
rejects and warnings; `--quantiles` prints where each measure sits on clean and on degraded photos.
Read calibration results only: the held-out photos are for reporting, never for choosing a threshold.

    PYTHONPATH=. .venv/bin/python scripts/intake_tune.py [--results outputs/intake_heldout/results-all.json] \
        [--quantiles] [intake.min_texture=0.04 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from headshots.cli import print_error
from headshots.config import load_config
from headshots.errors import HeadshotsError
from headshots.quality import FaceMeasures, colour_cast
from train.intake import PhotoReport, judge

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "outputs" / "intake_heldout"  # results-calibration.json (--only calibration) or results-all.json
JUDGED_ELSEWHERE = ("decode", "age", "face", "resolution")  # checks made before `judge`


def _heldout_module():
    spec = importlib.util.spec_from_file_location("intake_heldout", REPO / "scripts" / "intake_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rejudge(row: dict, cfg) -> dict:
    """One stored photo judged again: its stored checks made before `judge`, then `judge` on its measures."""
    if not row["measures"]:  # no face to judge: its checks stand as stored
        report = PhotoReport.from_checks(row["file"], row["checks"])
    else:
        report = PhotoReport.from_checks(row["file"], {n: c for n, c in row["checks"].items() if n in JUDGED_ELSEWHERE})
        for name, check in judge(FaceMeasures.from_dict(row["measures"]), cfg.intake).items():
            report.add(name, check)
    problems = [(name, c.reason, bool(c.advice)) for name, c in report.checks.items() if c.status != "ok"]
    return {**row, "verdict": report.verdict, "reason": report.reason, "lead": report.lead, "problems": problems}


def _flat(measures: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in measures.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)) and len(value) <= 3:  # coordinates (chroma: log r/g, log b/g)
            out.update({f"{prefix}{key}.{i}": float(v) for i, v in enumerate(value)})
        elif isinstance(value, (list, tuple)):  # a spread (acuity over 12 directions)
            out[f"{prefix}{key}.min"], out[f"{prefix}{key}.max"] = min(value), max(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):  # not `levelled`: prepare's crop, a yes/no
            out[prefix + key] = float(value)
    return out


def quantiles(rows: list[dict]) -> str:
    """Per measure, per label: the 5th, 50th and 95th percentiles (faces found only)."""
    by_label: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        if row["measures"]:  # and the colour cast judged, which is derived from the stored chromaticity
            flat = {**_flat(row["measures"]), "colour_cast": colour_cast(tuple(row["measures"]["chroma"]))}
            by_label.setdefault(row["label"], []).append(flat)
    keys = list(next(iter(by_label.values()))[0])
    lines = []
    for key in keys:
        lines.append(key)
        for label, flats in by_label.items():
            v = np.array([f[key] for f in flats])
            lines.append(f"  {label:14s} n={len(v):3d}  p5 {np.percentile(v, 5):8.3f}  p50 {np.percentile(v, 50):8.3f}  p95 {np.percentile(v, 95):8.3f}")
    return "\n".join(lines)


def _stored(results: Path | None, group: str) -> list[dict]:
    """The stored rows of `group`: from `results`, else from the first of STORED's result files that exists."""
    candidates = [results] if results else [STORED / "results-calibration.json", STORED / "results-all.json"]
    found = next((path for path in candidates if path.exists()), None)
    if found is None:
        raise HeadshotsError(f"no stored intake measurements at {' or '.join(map(str, candidates))}",
                             "Run scripts/intake_heldout.py first (--only calibration is enough), or pass --results.")
    stored = json.loads(found.read_text())
    if group not in stored:
        raise HeadshotsError(f"{found} holds no group {group!r} (it holds {', '.join(stored)})", "Pass --group with one of those.")
    try:  # measures this code does not know, or lacks, stop here with the file named, not in the middle of judging
        for row in stored[group]:
            if row["measures"]:
                FaceMeasures.from_dict(row["measures"])
    except (TypeError, KeyError) as exc:
        raise HeadshotsError(f"{found} was stored by another version of the intake: its measures do not fit this code ({exc})",
                             "Run scripts/intake_heldout.py again with this code to store them anew.") from exc
    return stored[group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="stored results (default: the calibration or the full run's, under outputs/intake_heldout)")
    parser.add_argument("--group", default="calibration")
    parser.add_argument("--quantiles", action="store_true")
    parser.add_argument("overrides", nargs="*", help="intake.key=value")
    args = parser.parse_args()
    try:
        cfg = load_config("tune", overrides=args.overrides)
        rows = _stored(args.results, args.group)
    except HeadshotsError as exc:
        sys.exit(print_error(exc))
    judged = [rejudge(row, cfg) for row in rows]
    if args.quantiles:
        print(quantiles(rows))
    heldout = _heldout_module()
    print(heldout.tables({args.group: heldout.score(judged)}, None))


if __name__ == "__main__":
    main()
