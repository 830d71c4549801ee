"""How well the intake quality gate catches bad selfies, measured on real photos.

Builds an evaluation set from ../shared/faces, reproducibly (fixed seeds), in a git-ignored folder:
clean photos, degraded copies (one labelled defect each: blur, camera shake, dark, overexposed, side
shadow, sunglasses, mask, beauty smoothing, rotation, downscale, a second face, backlight, colour cast,
an old EXIF date), sets with someone else's photos mixed in and sets with re-saved duplicates. Runs the
intake on every set and reports, per defect, recall (caught by the check meant for it), per check,
precision, and the share of clean photos rejected. Writes its two blocks of docs/intake_quality.md (the prose
around them is the doc's own).

    .venv/bin/python scripts/intake_eval.py [--faces ../shared/faces] [--work outputs/intake_eval]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from headshots.config import load_config
from headshots.faces import Face, FaceAnalyzer
from headshots.images import load_rgb
from headshots.logs import setup_logging
from train.intake import RELATIVE, run_intake

REPO = Path(__file__).resolve().parents[1]
BLOCK, SET_BLOCK = "scripts/intake_eval.py", "scripts/intake_eval.py: set-level thresholds"  # its blocks of the doc
PEOPLE = ("s01", "s02", "s23", "s29", "s50")
ROUNDS = 3  # each Georgia Tech photo is degraded this many times, with a different defect each time
# defect -> the checks meant to catch it (any of them firing, warn or reject, counts as caught)
CAUGHT_BY = {
    "blur": ("sharpness", "motion_blur"),
    "motion_blur": ("motion_blur",),
    "dark": ("exposure", "face"),  # too dark to find a face at all: "no face found ... well lit"
    "overexposed": ("exposure",),
    "side_shadow": ("side_light",),
    "backlit": ("backlight", "exposure"),
    "colour_cast": ("colour_cast",),
    "eyes_covered": ("occlusion", "face"),
    "mouth_covered": ("occlusion", "face"),
    "smoothed": ("filter",),
    "rotated": ("pose", "face"),
    "downscaled": ("resolution", "face"),
    "second_face": ("face",),
    "old": ("age",),
    "other_person": ("identity",),
    "duplicate": ("duplicate",),
}
CHECKS = ("face", "resolution", "sharpness", "motion_blur", "exposure", "side_light", "backlight", "colour_cast", "pose",
          "occlusion", "filter", "age", "duplicate", "identity")


# -- degradations: (image, face, rng, donor face) -> degraded image ------------------------------
def blur(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(face.side * rng.uniform(0.025, 0.04)))


def motion_blur(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    length, angle = face.side * rng.uniform(0.1, 0.15), rng.uniform(0, np.pi)
    array = np.asarray(image, dtype=np.float32)
    steps = np.linspace(-length / 2, length / 2, max(int(length), 3))
    out = sum(np.roll(array, (round(t * np.sin(angle)), round(t * np.cos(angle))), axis=(0, 1)) for t in steps) / len(steps)
    return Image.fromarray(out.astype(np.uint8))


def _scaled(image: Image.Image, factor: float, offset: float = 0.0) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * factor + offset, 0, 255).astype(np.uint8))


def dark(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    return _scaled(image, rng.uniform(0.12, 0.25))


def overexposed(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    return _scaled(image, rng.uniform(2.2, 3.0), 30)


def side_shadow(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    """Light from one side: brightness ramps from 20-35% on one edge of the face to full on the other."""
    x1, _, x2, _ = face.box
    ramp = np.clip((np.arange(image.width) - x1) / (x2 - x1), 0, 1)
    ramp = ramp if rng.random() < 0.5 else 1 - ramp
    low = rng.uniform(0.2, 0.35)
    factor = (low + (1 - low) * ramp)[None, :, None]
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * factor, 0, 255).astype(np.uint8))


def _face_mask(image: Image.Image, face: Face, grow: float) -> np.ndarray:
    cx, cy = face.center
    x1, y1, x2, y2 = face.box
    ys, xs = np.mgrid[0 : image.height, 0 : image.width]
    return ((xs - cx) / ((x2 - x1) / 2 * grow)) ** 2 + ((ys - cy) / ((y2 - y1) / 2 * grow)) ** 2 <= 1


def backlit(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    """A bright window behind: background washed out, face in shadow."""
    array = np.asarray(image, dtype=np.float32)
    person = _face_mask(image, face, 1.4)[..., None]
    out = np.where(person, array * rng.uniform(0.45, 0.6), array * 0.3 + rng.uniform(170, 200))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def colour_cast(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    gains = rng.choice([(1.25, 1.0, 0.55), (0.75, 1.15, 0.7), (0.7, 0.85, 1.35)])
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * gains, 0, 255).astype(np.uint8))


def _box(image: Image.Image, corners: tuple[float, float, float, float], rng: random.Random) -> Image.Image:
    out = image.copy()
    colour = rng.choice([(20, 20, 25), (40, 30, 25), (200, 210, 230), (90, 120, 200)])
    ImageDraw.Draw(out).rectangle(corners, fill=colour)
    return out


def eyes_covered(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    """Sunglasses: a dark or coloured bar over both eyes."""
    (lx, ly), (rx, ry) = face.landmarks[:2]
    d = rx - lx
    return _box(image, (lx - 0.45 * d, min(ly, ry) - 0.25 * d, rx + 0.45 * d, max(ly, ry) + 0.25 * d), rng)


def mouth_covered(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    """A mask or a hand over the mouth."""
    (ex, _), (rx, _) = face.landmarks[:2]
    (mlx, mly), (mrx, mry) = face.landmarks[3:]
    d = rx - ex
    return _box(image, (mlx - 0.4 * d, min(mly, mry) - 0.4 * d, mrx + 0.4 * d, max(mly, mry) + 0.6 * d), rng)


def smoothed(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    """Beauty mode: edge-preserving smoothing (median filters) that wipes out skin texture."""
    size = 5 if face.side < 200 else 7
    return image.filter(ImageFilter.MedianFilter(size)).filter(ImageFilter.MedianFilter(size))


def rotated(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    angle = rng.choice([-1, 1]) * rng.uniform(28, 40)
    fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))
    return image.rotate(angle, Image.BILINEAR, center=face.center, fillcolor=fill)


def downscaled(image: Image.Image, face: Face, rng: random.Random, _donor) -> Image.Image:
    factor = rng.uniform(0.2, 0.3)
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.BILINEAR)


def second_face(image: Image.Image, face: Face, rng: random.Random, donor: tuple[Image.Image, Face]) -> Image.Image:
    """Someone else's face pasted beside the subject, 70-100% of its size."""
    donor_image, donor_face = donor
    x1, y1, x2, y2 = donor_face.box
    pad = 0.25 * donor_face.side
    patch = donor_image.crop((round(x1 - pad), round(y1 - pad), round(x2 + pad), round(y2 + pad)))
    size = round((face.side + 2 * pad * face.side / donor_face.side) * rng.uniform(0.7, 1.0))
    patch = patch.resize((size, round(size * patch.height / patch.width)), Image.BILINEAR)
    cx, cy = face.center
    left = round(cx + face.side * 0.7) if cx < image.width / 2 else round(cx - face.side * 0.7 - size)
    out = image.copy()
    out.paste(patch, (int(np.clip(left, 0, image.width - size)), int(np.clip(cy - size / 2, 0, image.height - patch.height))))
    return out


DEGRADE: dict[str, Callable] = {f.__name__: f for f in (blur, motion_blur, dark, overexposed, side_shadow, backlit, colour_cast,
                                                         eyes_covered, mouth_covered, smoothed, rotated, downscaled, second_face)}
PHOTO_DEFECTS = [*DEGRADE, "old"]


def save_old(image: Image.Image, path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2012:06:01 12:00:00"
    image.save(path, quality=95, exif=exif)


# -- building the sets -------------------------------------------------------------------------
class Builder:
    def __init__(self, root: Path, analyzer: FaceAnalyzer) -> None:
        self.root, self.analyzer = root, analyzer
        self.labels: dict[str, dict[str, str]] = {}
        self.faces: dict[Path, tuple[Image.Image, Face]] = {}

    def source(self, path: Path) -> tuple[Image.Image, Face]:
        if path not in self.faces:
            image = load_rgb(path)
            self.faces[path] = (image, self.analyzer.detect(image).subject)
        return self.faces[path]

    def add(self, user: str, name: str, label: str, write: Callable[[Path], None]) -> None:
        folder = self.root / "data" / user / "selfies"
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / name)
        self.labels.setdefault(user, {})[name] = label

    def copy(self, user: str, path: Path, label: str = "clean", name: str | None = None) -> None:
        self.add(user, name or path.name, label, lambda dest: shutil.copy(path, dest))


def build(faces: Path, root: Path, analyzer: FaceAnalyzer) -> Builder:
    b = Builder(root, analyzer)
    gt = {p: sorted((faces / "georgia-tech" / p).glob("*.jpg")) for p in PEOPLE}
    for p, paths in gt.items():  # clean sets: every photo, as taken
        for path in paths:
            b.copy(f"clean-{p}", path)
    for folder in sorted(d for d in faces.glob("*/*") if d.is_dir() and not d.name.startswith("_") and d.parent.name != "georgia-tech"):
        for path in sorted(q for q in folder.iterdir() if q.suffix.lower() in {".jpg", ".jpeg", ".png"}):
            b.copy(f"clean-{folder.name.lower().replace('_', '-')}", path)
    for k in range(ROUNDS):  # degraded sets: each photo with one defect, a different one per round
        rng = random.Random(1000 + k)
        for pi, (p, paths) in enumerate(gt.items()):
            donor_paths = gt[PEOPLE[(pi + 1) % len(PEOPLE)]]
            for i, path in enumerate(paths):
                defect = PHOTO_DEFECTS[(i + 5 * k + 3 * pi) % len(PHOTO_DEFECTS)]
                image, face = b.source(path)
                name = f"{path.stem}-{defect}.jpg"
                if defect == "old":
                    b.add(f"deg{k}-{p}", name, defect, lambda dest, im=image: save_old(im, dest))
                else:
                    out = DEGRADE[defect](image, face, rng, b.source(donor_paths[i]))
                    b.add(f"deg{k}-{p}", name, defect, lambda dest, im=out: im.save(dest, quality=92))
    for pi, (p, paths) in enumerate(gt.items()):  # someone else mixed in: one intruder, or two (a second person)
        other = gt[PEOPLE[(pi + 2) % len(PEOPLE)]]
        for path in paths[:10]:
            b.copy(f"mix-{p}", path)
        for path in other[3 : 3 + 1 + pi % 2]:
            b.copy(f"mix-{p}", path, "other_person", f"x-{path.parent.name}-{path.name}")
    rng = random.Random(7)
    for p, paths in gt.items():  # re-saved duplicates: slightly cropped, resized and re-compressed copies
        for path in paths[:10]:
            b.copy(f"dup-{p}", path)
        for path in paths[:10:4]:
            image = b.source(path)[0]
            w, h = image.size
            m = rng.uniform(0.01, 0.03)
            copy = image.crop((round(w * m), round(h * m), round(w * (1 - m)), round(h * (1 - m)))).resize((round(w * 0.9), round(h * 0.9)))
            b.add(f"dup-{p}", f"z-copy-{path.name}", "duplicate", lambda dest, im=copy: im.save(dest, quality=75))
    return b


# -- set-level thresholds: variety (intake.max_sameness) and smile (intake.smile_ratio) -------------
# Clear smiles (lips drawn back, most showing teeth) and ambiguous expressions (slight closed-mouth smiles,
# talking, pursed lips) among the Georgia Tech photos, labelled by eye from a contact sheet of the face crops;
# the dataset ships no expression labels. Every other Georgia Tech photo counts as neutral.
SMILING = ("s01/03", "s01/09", "s01/13", "s02/08", "s02/09", "s23/05", "s23/13", "s29/09", "s29/13", "s50/01", "s50/09")
AMBIGUOUS = ("s01/05", "s01/14", "s23/06", "s23/11", "s23/12", "s23/14", "s23/15", "s29/01", "s29/02", "s29/14", "s50/02",
             "s50/14")
SET_SIZE = 5


def sameness(thumbs: list[np.ndarray]) -> float:
    """The set's mean pairwise thumbnail cosine, as train/intake.py's `_variety_problems` computes it."""
    stacked = np.stack(thumbs)
    return float((stacked @ stacked.T)[np.triu_indices(len(thumbs), 1)].mean())


def _reframed(image: Image.Image, rng: random.Random) -> Image.Image:
    """Another frame of the same burst: shifted/zoomed by a few percent, exposure +-10%."""
    w, h = image.size
    l, t, r, b = (rng.uniform(0, 0.08) for _ in range(4))
    out = image.crop((round(w * l), round(h * t), round(w * (1 - r)), round(h * (1 - b)))).resize(image.size, Image.BILINEAR)
    return _scaled(out, rng.uniform(0.9, 1.1))


def variety_sets(faces: Path, decode_side: int) -> dict[str, list[tuple[str, float]]]:
    """Low-variety sets (one burst; one Georgia Tech session: same place and light) and high-variety sets
    (one person's photos from different sources; photos drawn from different folders), with their sameness."""
    from headshots import quality

    def thumb(path: Path) -> np.ndarray:
        return quality.thumbnail(load_rgb(path, draft_side=decode_side))

    rng = random.Random(11)
    gt = {p: sorted((faces / "georgia-tech" / p).glob("*.jpg")) for p in PEOPLE}
    sets: dict[str, list[tuple[str, float]]] = {"burst": [], "session": [], "person": [], "mixed": []}
    for p, paths in gt.items():
        for start in range(0, len(paths), SET_SIZE):
            image = load_rgb(paths[start], draft_side=decode_side)
            burst = [quality.thumbnail(image)] + [quality.thumbnail(_reframed(image, rng)) for _ in range(SET_SIZE - 1)]
            sets["burst"].append((f"{p}/{paths[start].stem} + {SET_SIZE - 1} re-framings", sameness(burst)))
            group = paths[start : start + SET_SIZE]
            sets["session"].append((f"{p}/{group[0].stem}-{group[-1].stem}", sameness([thumb(q) for q in group])))
    others = [d for d in sorted(faces.glob("*/*")) if d.is_dir() and not d.name.startswith("_") and d.parent.name != "georgia-tech"]
    photos = {d: sorted(q for q in d.iterdir() if q.suffix.lower() in {".jpg", ".jpeg", ".png"}) for d in others}
    for d, paths in photos.items():  # one person, photos from different occasions
        if len(paths) >= 3:
            sets["person"].append((d.name, sameness([thumb(q) for q in paths])))
    for k in range(20):  # one photo each from SET_SIZE different folders: different places, light and framing
        folders = rng.sample([d for d in photos if photos[d]], SET_SIZE)
        sets["mixed"].append((f"mix{k}", sameness([thumb(rng.choice(photos[d])) for d in folders])))
    return sets


def smile_scores(faces: Path, builder: Builder) -> dict[str, list[tuple[str, float]]]:
    from headshots import quality

    scores: dict[str, list[tuple[str, float]]] = {"smiling": [], "neutral": [], "ambiguous": []}
    for path in sorted((faces / "georgia-tech").glob("*/*.jpg")):
        key = f"{path.parent.name}/{path.stem}"
        face = builder.source(path)[1]
        if face is not None:
            kind = "smiling" if key in SMILING else "ambiguous" if key in AMBIGUOUS else "neutral"
            scores[kind].append((key, quality.smile(face)))
    return scores


def best_threshold(low: list[float], high: list[float], grid: np.ndarray) -> tuple[float, int, int]:
    """The grid value maximising (share of `high` at or above) - (share of `low` at or above); ties: the higher."""
    def score(t: float) -> float:
        return np.mean([v >= t for v in high]) - np.mean([v >= t for v in low])
    t = max(grid[::-1], key=score)
    return round(float(t), 3), sum(v >= t for v in high), sum(v >= t for v in low)


def threshold_lines(variety: dict, smiles: dict, cfg) -> list[str]:
    def spread(rows: list[tuple[str, float]]) -> str:
        values = sorted(v for _, v in rows)
        return f"{values[0]:.3f}-{values[-1]:.3f} (median {np.median(values):.3f}, n={len(values)})"

    low = [v for kind in ("burst", "session") for _, v in variety[kind]]
    high = [v for kind in ("person", "mixed") for _, v in variety[kind]]
    bursts = [v for _, v in variety["burst"]]
    # midpoint between the most alike high-variety set and the least alike burst, rounded to 0.05: the most
    # margin on both sides (sessions are left out of the rule: some Georgia Tech sessions move a lot in frame)
    t = round(round((max(high) + min(bursts)) / 2 / 0.05) * 0.05, 2)
    def above(values: list[float], threshold: float) -> str:
        return f"{sum(v > threshold for v in values)}/{len(values)}"
    lines = [
        f"Variety (`max_sameness`, now {cfg.max_sameness}): mean pairwise whole-photo thumbnail cosine of {SET_SIZE}-photo sets,",
        "as `_variety_problems` computes it. Low variety: one Georgia Tech photo plus 4 re-framings of it",
        "(crop/zoom 0-8%, exposure +-10%: one burst), and 5 consecutive Georgia Tech shots (one session: same",
        "background and light, different pose and expression). High variety: one person's photos from different",
        "occasions (folders with 3+ photos), and 20 sets of one photo from each of 5 different folders.",
        "",
        "| sets | sameness | above " + str(cfg.max_sameness) + " | above 0.9 |",
        "|---|---|---|---|",
        *(f"| {kind} | {spread(variety[kind])} | {above([v for _, v in variety[kind]], cfg.max_sameness)} | "
          f"{above([v for _, v in variety[kind]], 0.9)} |" for kind in ("burst", "session", "person", "mixed")),
        "",
        f"Threshold rule: midpoint between the most alike high-variety set ({max(high):.3f}) and the least alike burst",
        f"({min(bursts):.3f}), rounded to 0.05: {t}. It flags {above(bursts, t)} bursts, {above(low, t)} low-variety sets in all and",
        f"{above(high, t)} high-variety ones. The former judgement, 0.9, flagged {above(bursts, 0.9)} bursts: a 32 px thumbnail",
        "already changes a lot under a few percent of re-framing. Not measured here: a real user's different-day selfies",
        "in one room, which would land between the two groups; a flag is a warning with advice, never a reject.",
    ]
    smiling, neutral = [v for _, v in smiles["smiling"]], [v for _, v in smiles["neutral"]]
    t, hit_s, hit_n = best_threshold(neutral, smiling, np.round(np.arange(0.8, 1.1, 0.01), 2))
    lines += [
        "",
        f"Smile (`smile_ratio`, now {cfg.smile_ratio}): `quality.smile` (mouth width / eye distance, MTCNN landmarks) on",
        f"the Georgia Tech photos, labelled by eye (list in the script): {len(smiling)} clear smiles, {len(neutral)} neutral,",
        f"{len(smiles['ambiguous'])} ambiguous (slight closed-mouth smiles, talking, pursed lips) left out.",
        "",
        "| expression | mouth / eye distance |",
        "|---|---|",
        *(f"| {kind} | {spread(smiles[kind])} |" for kind in ("smiling", "neutral", "ambiguous")),
        "",
        f"Best split (Youden over 0.80-1.10): {t} counts {hit_s}/{len(smiling)} smiles and {hit_n}/{len(neutral)} neutral faces as",
        (f"smiling; the configured {cfg.smile_ratio}: {sum(v >= cfg.smile_ratio for v in smiling)}/{len(smiling)} and "
        f"{sum(v >= cfg.smile_ratio for v in neutral)}/{len(neutral)}."),
        "Neutral: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(smiles["neutral"], key=lambda r: -r[1])[:4]) + " highest; smiling: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(smiles["smiling"], key=lambda r: r[1])[:3]) + " lowest.",
    ]
    return lines


# -- scoring -----------------------------------------------------------------------------------
def fired(photo: dict) -> set[str]:
    return {name for name, check in photo["checks"].items() if check["status"] != "ok"}


def _true_anyway(check: str, photo: dict) -> bool:
    """Firings that are right whatever the label: the Georgia Tech photos really were taken in 1999 (EXIF),
    and really are low resolution (640x480) for SDXL's 1024 px: a warning there is true."""
    if check == "resolution":
        return photo["checks"]["resolution"]["status"] == "warn"
    return check == "age" and photo["checks"]["age"]["value"].get("taken", "9999") < "2012"


def evaluate(labels: dict[str, dict[str, str]], reports: dict[str, dict]) -> dict:
    rows = [(labels[user][p["file"]], p) for user, report in reports.items() for p in report["photos"]]
    recall = {}
    for defect, checks in CAUGHT_BY.items():
        hits = [bool(fired(p) & set(checks)) for label, p in rows if label == defect]
        rejected = [p["verdict"] == "reject" for label, p in rows if label == defect]
        recall[defect] = (sum(hits), len(hits), sum(rejected))
    precision = {}
    for check in CHECKS:
        firing = [(label, p) for label, p in rows if check in fired(p)]
        right = sum(check in CAUGHT_BY.get(label, ()) or _true_anyway(check, p) for label, p in firing)
        precision[check] = (right, len(firing))
    clean = [p for label, p in rows if label == "clean"]
    return {
        "recall": recall,
        "precision": precision,
        "clean": len(clean),
        "clean_rejected": [p["file"] + ": " + (p["reason"] or "") for p in clean if p["verdict"] == "reject"],
        "clean_warned": Counter(c for p in clean if p["verdict"] == "warn" for c in fired(p)),
        # duplicate scores: each copy's best match (its original), and the best match of every photo in a set
        # without copies (another shot of the same person, or another person)
        "copy_scores": sorted(_similarity(p) for label, p in rows if label == "duplicate"),
        "shot_scores": sorted(((_similarity(p), p["file"]) for user, report in reports.items() if user.startswith("clean-")
                               for p in report["photos"] if "duplicate" in p["checks"]), reverse=True),
        # set checks: each clean photo against its person's median; the most extreme is where a limit must stay beyond
        "relative_edge": {r.name: (max if r.fires_above else min)(((p["checks"][r.check]["value"][r.name], p["file"])
                                                             for user, report in reports.items() if user.startswith("clean-")
                                                             for p in report["photos"]
                                                             if r.name in p.get("checks", {}).get(r.check, {}).get("value", {})), default=None)
                          for r in RELATIVE},
    }


def _similarity(photo: dict) -> float:
    return photo["checks"]["duplicate"]["value"]["max_similarity"] if "duplicate" in photo["checks"] else float("nan")


def write_markdown(result: dict, seconds: float, n_photos: int, out: Path, set_lines: list[str]) -> str:
    """The figures into the doc's two blocks of this script (the prose around them is the doc's own)."""
    from _docs import write_block  # scripts/, first on sys.path when run as a script (intake_heldout.py imports this file)

    cfg = load_config("eval").intake
    lines = [
        f"Generated by `scripts/intake_eval.py` on {time.strftime('%Y-%m-%d')} ({n_photos} photos, {seconds:.0f} s on this CPU).",
        "",
        "| defect | photos | recall | rejected | caught by |",
        "|---|---|---|---|---|",
    ]
    for defect, (hit, n, rejected) in result["recall"].items():
        mark = "" if n and hit / n >= 0.9 else " **(below 0.9)**"
        lines.append(f"| {defect} | {n} | {hit / max(n, 1):.2f}{mark} | {rejected / max(n, 1):.0%} | {', '.join(CAUGHT_BY[defect])} |")
    lines += ["", "| check | fired | precision |", "|---|---|---|"]
    for check, (right, n) in result["precision"].items():
        lines.append(f"| {check} | {n} | {right / n:.2f} |" if n else f"| {check} | 0 | - |")
    rejected = result["clean_rejected"]
    rate = len(rejected) / max(result["clean"], 1)
    lines += [
        "",
        f"**False rejects: {len(rejected)} of {result['clean']} clean photos ({rate:.1%})**"
        + ("" if rate <= 0.05 else " (target <= 5% missed)") + ".",
        "",
    ]
    lines += [f"- {r}" for r in rejected]
    copies, shots = result["copy_scores"], result["shot_scores"]
    if copies and shots:
        lines += ["", f"Duplicate scores (`same_shot`, threshold {cfg.duplicate_similarity}): re-saved copies vs their original "
                      f"{copies[0]:.3f}-{copies[-1]:.3f}; best match of each photo in the clean sets (no copies), highest: "
                      + ", ".join(f"{v:.3f} ({name})" for v, name in shots[:5]) + "."]
    edges = [f"`{r.name}` {'highest' if r.fires_above else 'lowest'} {edge[0]:.2g} ({edge[1]}; limit "
             f"{r.limit(cfg)})" for r in RELATIVE if (edge := result["relative_edge"][r.name])]
    if edges:
        lines += ["", "Set checks (a photo against the median of its person's set), the most extreme on the clean sets: "
                      + ", ".join(edges) + "."]
    warned = ", ".join(f"{c} {n}" for c, n in sorted(result["clean_warned"].items(), key=lambda kv: (-kv[1], kv[0])))  # ties by name
    lines += ["", f"Warnings on clean photos (usable, with advice): {warned or 'none'}.", "",
              "Thresholds (configs/base.yaml, `intake:`): " + ", ".join(f"`{k}={v}`" for k, v in vars(cfg).items()) + "."]
    text, set_text = "\n".join(lines) + "\n", "\n".join(set_lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_block(out, BLOCK, text)
    write_block(out, SET_BLOCK, set_text)
    return text + "\n" + set_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(REPO.parent / "shared/models/facenet/casia-webface-features.pt")))
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "intake_eval", help="git-ignored; rebuilt each run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "intake_quality.md")
    args = parser.parse_args()
    setup_logging()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights

    shutil.rmtree(args.work, ignore_errors=True)
    analyzer = FaceAnalyzer(load_config("eval").face)
    builder = build(args.faces, args.work, analyzer)
    start = time.perf_counter()
    reports = {}
    for user in sorted(builder.labels):
        cfg = load_config(user, overrides=[f"paths.data_root={args.work / 'data'}", f"paths.outputs_root={args.work / 'outputs'}"])
        with contextlib.redirect_stdout(io.StringIO()):  # the per-set tables; the summary is printed below
            reports[user] = run_intake(cfg, analyzer).to_json()
    seconds = time.perf_counter() - start
    intake_cfg = load_config("eval").intake
    variety, smiles = variety_sets(args.faces, intake_cfg.decode_side), smile_scores(args.faces, builder)
    (args.work / "results.json").write_text(json.dumps({"labels": builder.labels, "reports": reports, "variety": variety,
                                                        "smile": smiles}, indent=1))
    print(write_markdown(evaluate(builder.labels, reports), seconds, sum(map(len, builder.labels.values())), args.out,
                         threshold_lines(variety, smiles, intake_cfg)))


if __name__ == "__main__":
    main()
