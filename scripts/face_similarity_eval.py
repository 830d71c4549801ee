"""Verification quality of the face-similarity filter on real photos.

Embeds every identity folder under ../shared/faces (georgia-tech, face-recognition-examples,
azure-samples; group photos excluded), forms every same-person and different-person pair, and
reports the similarity distributions, ROC AUC, and true/false accept rates per threshold; then the
per-person calibration (filter.loo_fraction): how held-out photos score against a person's reference
set relative to that set's leave-one-out likeness. Writes docs/face_similarity.md.

    .venv/bin/python scripts/face_similarity_eval.py [--faces ../shared/faces] [--weights FILE]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import torch

from headshots.config import FaceConfig, load_config
from headshots.faces import FaceAnalyzer, cosine_similarity
from headshots.images import load_rgb

REPO = Path(__file__).resolve().parents[1]


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Probability that a random same-person pair outscores a random different-person pair."""
    scores = torch.cat([positive, negative])
    ranks = scores.argsort().argsort().double() + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration_lines(sims: torch.Tensor, labels: list[int], floor: float, default_fraction: float) -> list[str]:
    """Per-person threshold = max(floor, fraction x leave-one-out mean of the references). For every
    person with 4+ photos, each photo in turn is the probe and the next (up to) 5 are the references,
    as in a real run; everyone else's photos are the impostor probes."""
    trials = []  # (loo mean of the references, probe's mean similarity, same person)
    people = [p for p in sorted(set(labels)) if labels.count(p) >= 4]
    for person in people:
        own = [i for i, label in enumerate(labels) if label == person]
        others = [i for i, label in enumerate(labels) if label != person]
        for k, probe in enumerate(own):
            refs = [own[(k + j) % len(own)] for j in range(1, min(6, len(own)))]
            block = sims[refs][:, refs]
            loo = ((block.sum(1) - block.diagonal()) / (len(refs) - 1)).mean().item()
            trials += [(loo, sims[q, refs].mean().item(), q == probe) for q in [probe, *others]]
    same = [t for t in trials if t[2]]
    diff = [t for t in trials if not t[2]]
    lines = [
        "## Per-person threshold (`filter.loo_fraction`)",
        "",
        f"{len(same)} held-out photos of the {len(people)} people with 4+ photos, each scored (mean similarity) against",
        "up to 5 other photos of the person as references, and "
        f"{len(diff)} impostor trials (other people's photos against the same references).",
        f"Leave-one-out likeness of the reference sets: mean {sum(t[0] for t in same) / len(same):.3f}, "
        f"min {min(t[0] for t in same):.3f}, max {max(t[0] for t in same):.3f}; held-out / LOO ratio: "
        f"5th percentile {torch.tensor([t[1] / t[0] for t in same]).quantile(0.05).item():.3f}.",
        "",
        "| threshold | same person kept | someone else kept |",
        "|---|---|---|",
        f"| global floor {floor:.2f} only | {sum(t[1] >= floor for t in same) / len(same):.2%} | {sum(t[1] >= floor for t in diff) / len(diff):.2%} |",
    ]
    for fraction in (0.65, 0.70, 0.75, 0.80, 0.85):
        bar = [max(floor, fraction * t[0]) for t in trials]
        kept_same = sum(t[1] >= b for t, b in zip(trials, bar) if t[2]) / len(same)
        kept_diff = sum(t[1] >= b for t, b in zip(trials, bar) if not t[2]) / len(diff)
        mark = " (default)" if abs(fraction - default_fraction) < 1e-9 else ""
        lines.append(f"| max({floor:.2f}, {fraction:.2f} x LOO){mark} | {kept_same:.2%} | {kept_diff:.2%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(REPO.parent / "shared/models/facenet/casia-webface-features.pt")))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "face_similarity.md")
    args = parser.parse_args()

    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights
    analyzer = FaceAnalyzer(FaceConfig(weights=args.weights))
    folders = sorted(d for d in args.faces.glob("*/*") if d.is_dir() and not d.name.startswith("_"))
    embeddings, labels, skipped = [], [], []
    start = time.perf_counter()
    for label, folder in enumerate(folders):
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
            image = load_rgb(path)
            detection = analyzer.detect(image)
            if detection.subject is None:
                skipped.append(path.name)
                continue
            embeddings.append(analyzer.embed([image], [detection.subject])[0])
            labels.append(label)
    seconds = time.perf_counter() - start
    sims = cosine_similarity(torch.stack(embeddings), torch.stack(embeddings))
    pairs = list(itertools.combinations(range(len(labels)), 2))
    same = torch.tensor([sims[a, b].item() for a, b in pairs if labels[a] == labels[b]])
    diff = torch.tensor([sims[a, b].item() for a, b in pairs if labels[a] != labels[b]])
    threshold = load_config("eval").filter.threshold

    lines = [
        "# Face-similarity filter: verification quality",
        "",
        f"Generated by `scripts/face_similarity_eval.py` on {time.strftime('%Y-%m-%d')}. Weights: `{Path(args.weights).name}`",
        "(FaceNet InceptionResnetV1, CASIA-WebFace) with MTCNN crops; cosine similarity of 512-d embeddings.",
        f"Photos: {len(labels)} faces of {len(set(labels))} people from `../shared/faces` "
        f"({len(skipped)} without a detectable face skipped); {seconds:.1f} s to detect and embed on this CPU.",
        "Different-person pairs include relatives (azure-samples families), the hardest case.",
        "",
        "| pairs | n | mean | min | 5th pct | 95th pct | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, values in (("same person", same), ("different people", diff)):
        q = values.quantile(torch.tensor([0.05, 0.95])).tolist()
        lines.append(f"| {name} | {len(values)} | {values.mean():.3f} | {values.min():.3f} | {q[0]:.3f} | {q[1]:.3f} | {values.max():.3f} |")
    lines += [
        "",
        f"ROC AUC: **{roc_auc(same, diff):.4f}**",
        "",
        "| threshold | true accepts (same person kept) | false accepts (someone else kept) | accuracy (balanced) |",
        "|---|---|---|---|",
    ]
    for t in (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65):
        tar, far = (same >= t).float().mean().item(), (diff >= t).float().mean().item()
        mark = " (default)" if abs(t - threshold) < 1e-9 else ""
        lines.append(f"| {t:.2f}{mark} | {tar:.2%} | {far:.2%} | {(tar + 1 - far) / 2:.2%} |")
    lines += ["", f"Default `filter.threshold` = {threshold} (configs/base.yaml).", ""]
    lines += calibration_lines(sims, labels, threshold, load_config("eval").filter.loo_fraction)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
