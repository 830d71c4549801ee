"""Does the intake name the right cause on photos it was not calibrated on? A held-out evaluation.

Two disjoint sets of real, in-the-wild photos (each a folder, searched recursively for .jpg):
- calibration (--calibration): degraded by the project's own generator (scripts/intake_eval.py's DEGRADE);
  the intake's thresholds are tuned on these (scripts/intake_tune.py reads their measurements);
- held-out (--heldout): other people, degraded by the independent implementation below (other operations, in
  linear light, other strengths, sized to the photo as well as to the face), never used for tuning.
Clean photos are chosen by detection only (one confident face, no second face, colour), never by the intake's
verdict. Photos keep their own resolution (larger ones are scaled down to a LONG_SIDE phone photo).

Each photo is judged alone (`assess_photo`: the per-photo checks; the set checks are scripts/intake_eval.py's).
Right reason: the verdict's leading reason is the defect's own check; any reason: any check fired;
wrong cause: a check fired whose advice points elsewhere. Writes its block of docs/intake_quality.md (the prose
around it is the doc's own).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/intake_heldout.py --calibration <photos> \
        --heldout <other photos> [--only calibration] [--work outputs/intake_heldout] [--per-group 120]

The photos of docs/intake_quality.md (git-ignored downloads, not shipped), from clones of the two repositories:

    git -C faceRecognition ls-tree -r -l HEAD Celeb/ | awk '$4 > 150000 {print $5}' \
        | while read p; do git -C faceRecognition show "HEAD:$p" > calibration/"$(basename "$p")"; done
    cp deepface/tests/unit/dataset/img*.jpg deepface/tests/unit/dataset/*.csv heldout/   # the .csv pairs name the people
    rm -f heldout/img11_reflection.jpg   # added to deepface later: the tables are of the 61 img<number>.jpg
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from headshots.config import IntakeConfig, load_config
from headshots.faces import Face, FaceAnalyzer
from headshots.images import load_rgb
from headshots.logs import setup_logging
from headshots.quality import FaceMeasures
from train.intake import RELATIVE_MIN_PHOTOS, PhotoReport, add_relative_checks, share_warnings

REPO = Path(__file__).resolve().parents[1]
LONG_SIDE = 1600  # larger clean photos are scaled down to this long side (a 1-2 MP phone photo)
NOW = datetime(2026, 11, 24)
BLOCK = "scripts/intake_heldout.py"  # its block of the doc
# defect -> (check, words its reason must hold) that is the right cause; other checks allowed to fire beside it
RIGHT = {
    "blur": (("sharpness", ""), ("motion_blur", "")),
    "motion_blur": (("motion_blur", ""),),
    "dark": (("exposure", "dark"),),
    "overexposed": (("exposure", "overexposed"),),
    "side_shadow": (("side_light", ""),),
    "backlit": (("backlight", ""), ("exposure", "dark")),
    "colour_cast": (("colour_cast", ""),),
    "smoothed": (("filter", ""),),
    "eyes_covered": (("occlusion", "eyes"),),
    "mouth_covered": (("occlusion", "mouth"),),
    "rotated": (("pose", ""), ("face", "")),
    "downscaled": (("resolution", ""), ("face", "too small")),
}
# checks that are true whatever the defect: a real head pose of the clean photo, its real resolution
ALWAYS_TRUE = ("pose", "age")


# -- the independent generator ----------------------------------------------------------------------
# Its own operations: point-spread functions convolved in linear light (torch), gamma and sensor noise,
# exposure in linear light, a soft light falloff at any angle, a bilateral skin filter, sunglasses or a hand
# following the eye line, rotation about the photo's centre. Strengths are the larger of a face-relative and
# a photo-relative draw, so a defect is a defect both on a close-up and on a small face in a big photo.
def _linear(image: Image.Image) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _srgb(linear: np.ndarray) -> Image.Image:
    x = np.clip(linear, 0.0, 1.0)
    x = np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)
    return Image.fromarray((x * 255 + 0.5).astype(np.uint8))


def _convolve(image: Image.Image, kernel: np.ndarray) -> Image.Image:
    """Convolution in linear light, by FFT (kernels of tens of pixels on a 1400 px photo), edges replicated."""
    lin = torch.from_numpy(_linear(image)).permute(2, 0, 1)
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = torch.nn.functional.pad(lin[None], (pw, pw, ph, ph), mode="replicate")[0]
    k = torch.zeros(padded.shape[1:])
    k[: kernel.shape[0], : kernel.shape[1]] = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * torch.fft.rfft2(k), s=padded.shape[1:])
    out = out[:, 2 * ph : 2 * ph + lin.shape[1], 2 * pw : 2 * pw + lin.shape[2]]
    return _srgb(out.permute(1, 2, 0).numpy())


def _size(face: Face, image: Image.Image, rng: random.Random, face_range: tuple[float, float],
          photo_range: tuple[float, float]) -> float:
    return max(face.side * rng.uniform(*face_range), math.hypot(*image.size) * rng.uniform(*photo_range))


def defocus(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """A lens out of focus: a disk point-spread function."""
    r = _size(face, image, rng, (0.025, 0.04), (0.004, 0.007))
    n = math.ceil(r)
    ys, xs = np.mgrid[-n : n + 1, -n : n + 1]
    return _convolve(image, np.clip(r + 0.5 - np.hypot(xs, ys), 0, 1))


def shake(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Camera shake: a straight smear at any angle, drawn antialiased (4x supersampled line)."""
    length = _size(face, image, rng, (0.08, 0.13), (0.012, 0.02))
    angle = rng.uniform(0, math.pi)
    n = math.ceil(length / 2) + 1
    big = Image.new("L", ((2 * n + 1) * 4,) * 2)
    c, dx, dy = (2 * n + 1) * 2, math.cos(angle) * length * 2, math.sin(angle) * length * 2
    ImageDraw.Draw(big).line((c - dx, c - dy, c + dx, c + dy), fill=255, width=4)
    return _convolve(image, np.asarray(big.resize((2 * n + 1,) * 2, Image.BOX), dtype=np.float32) + 1e-6)


def _face_region(image: Image.Image, face: Face) -> tuple[slice, slice]:
    x1, y1, x2, y2 = face.box
    return (slice(max(round(y1), 0), max(round(y2), 1)), slice(max(round(x1), 0), max(round(x2), 1)))


def underexposed(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """A dim room: a gamma curve pushes the mid-tones down until the face's mean luminance (in its box) is 60-90,
    the sensor's noise shows. The curve is solved for on each photo: one fixed curve leaves an already bright photo
    (a high-key portrait on white) at the light of a well-exposed one, which is no defect."""
    x = np.asarray(image, dtype=np.float32) / 255.0
    target, gain = rng.uniform(60, 90), rng.uniform(0.8, 0.95)
    face_luma = x[_face_region(image, face)] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def face_mean(gamma: float) -> float:
        return float((face_luma ** gamma).mean()) * gain * 255

    low, high = 1.0, 8.0  # the face's mean falls as the exponent grows
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if face_mean(mid) > target else (low, mid)
    x = x ** low * gain
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(1.5, 4.0) / 255, x.shape[:2])[..., None]
    return Image.fromarray((np.clip(x + noise, 0, 1) * 255 + 0.5).astype(np.uint8))


def overexposure(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Two to four stops too much light, in linear light: highlights clip, skin goes white."""
    return _srgb(_linear(image) * rng.uniform(3.0, 6.0))


def _cheek_pixels(face: Face, image: Image.Image) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ys, xs) of a disk on each cheek, halfway between the eye and the mouth corner of its side."""
    (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = face.landmarks
    radius = 0.2 * math.hypot(rx - lx, ry - ly)
    disks = []
    for cx, cy in (((lx + mlx) / 2, (ly + mly) / 2), ((rx + mrx) / 2, (ry + mry) / 2)):
        ys, xs = np.mgrid[max(int(cy - radius), 0) : min(int(cy + radius) + 1, image.height),
                          max(int(cx - radius), 0) : min(int(cx + radius) + 1, image.width)]
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
        disks.append((ys[inside], xs[inside]))
    return disks


def raking_light(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Light from one side at any angle within 30 degrees of horizontal: a soft falloff across the face that leaves
    the shadowed cheek with 12-30% of the lit cheek's light (in linear light, as measured on the result). The
    falloff is solved for on each photo: a fixed one, laid against the photo's own side light, evens the face out
    instead of shadowing it."""
    angle = math.radians(rng.uniform(-30, 30) + rng.choice([0, 180]))
    cx, cy = face.center
    ys, xs = np.mgrid[0 : image.height, 0 : image.width].astype(np.float32)
    along = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
    width, target = face.side * rng.uniform(0.15, 0.25), rng.uniform(0.12, 0.3)
    linear = _linear(image)
    luma = linear @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    shadow, lit = sorted(_cheek_pixels(face, image), key=lambda cheek: float(along[cheek].mean()))

    def light(low: float, w: float, at: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # far on the shadowed side exp() overflows to inf: the falloff is at its floor, low
            return low + (1 - low) / (1 + np.exp(-at / w))

    def shadow_to_lit(low: float, w: float) -> float:
        def received(cheek: tuple[np.ndarray, np.ndarray]) -> float:
            return float((luma[cheek] * light(low, w, along[cheek])).mean())
        return received(shadow) / max(received(lit), 1e-6)

    while shadow_to_lit(0.0, width) > target and width > 1.0:  # too soft to reach the target at the cheeks
        width *= 0.8
    low, high = 0.0, 1.0  # the ratio rises with the floor of the falloff
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if shadow_to_lit(mid, width) > target else (mid, high)
    return _srgb(linear * light(low, width, along)[..., None] * 1.3)


def beauty_filter(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """A phone's beauty mode: a bilateral filter (smooths skin, keeps strong edges), a slight brightening."""
    x1, y1, x2, y2 = face.box
    pad = 0.3 * face.side
    box = tuple(int(v) for v in (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, image.width), min(y2 + pad, image.height)))
    region = np.asarray(image.crop(box), dtype=np.float32)
    sigma_s, sigma_r = face.side * rng.uniform(0.015, 0.025), rng.uniform(14, 22)
    reach = max(int(2 * sigma_s), 1)
    step = max(reach // 4, 1)
    grey = region.mean(axis=2)
    padded, padded_grey = np.pad(region, ((reach, reach), (reach, reach), (0, 0)), mode="edge"), np.pad(grey, reach, mode="edge")
    total, weight = np.zeros_like(region), np.zeros_like(grey)
    h, w = grey.shape
    for dy in range(-reach, reach + 1, step):
        for dx in range(-reach, reach + 1, step):
            g = padded_grey[reach + dy : reach + dy + h, reach + dx : reach + dx + w]
            wgt = np.exp(-(dx * dx + dy * dy) / (2 * sigma_s ** 2) - (g - grey) ** 2 / (2 * sigma_r ** 2))
            total += wgt[..., None] * padded[reach + dy : reach + dy + h, reach + dx : reach + dx + w]
            weight += wgt
    out = image.copy()
    out.paste(Image.fromarray(np.clip(total / weight[..., None] * 1.04 + 4, 0, 255).astype(np.uint8)), box[:2])
    return out


def hidden_eyes(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Sunglasses (two tinted lenses and a bridge) or a hand/hair band, along the eye line."""
    (lx, ly), (rx, ry) = face.landmarks[:2]
    d = math.hypot(rx - lx, ry - ly)
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    scale = 4
    layer = Image.new("RGBA", (round(3 * d) * scale, round(1.4 * d) * scale))
    draw = ImageDraw.Draw(layer)
    cx, cy = layer.width / 2, layer.height / 2
    if rng.random() < 0.5:
        tint = rng.choice([(15, 15, 18), (60, 40, 25), (30, 50, 90), (120, 120, 125)])
        for side in (-1, 1):
            ex = cx + side * d / 2 * scale
            draw.ellipse((ex - 0.42 * d * scale, cy - 0.3 * d * scale, ex + 0.42 * d * scale, cy + 0.32 * d * scale), fill=(*tint, 250))
        draw.line((cx - 0.1 * d * scale, cy - 0.1 * d * scale, cx + 0.1 * d * scale, cy - 0.1 * d * scale), fill=(*tint, 255),
                  width=max(scale * 2, 1))
    else:
        tone = rng.choice([(205, 160, 130), (140, 95, 70), (60, 40, 30), (25, 20, 18)])
        draw.rounded_rectangle((cx - 1.05 * d * scale, cy - 0.33 * d * scale, cx + 1.05 * d * scale, cy + 0.33 * d * scale),
                               radius=0.3 * d * scale, fill=(*tone, 255))
    layer = layer.resize((layer.width // scale, layer.height // scale), Image.LANCZOS).rotate(-angle, Image.BICUBIC, expand=True)
    out = image.copy()
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    out.paste(layer, (round(ex - layer.width / 2), round(ey - layer.height / 2)), layer)
    return out


def turned(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """The whole photo rotated 30-45 degrees about its centre (the frame grows to hold it)."""
    return image.rotate(rng.choice([-1, 1]) * rng.uniform(30, 45), Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))


def tiny(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """A messaging-app thumbnail: the long side 200-320 px."""
    s = rng.uniform(200, 320) / max(image.size)
    return image.resize((round(image.width * s), round(image.height * s)), Image.LANCZOS)


HELDOUT: dict[str, Callable[[Image.Image, Face, random.Random], Image.Image]] = {
    "blur": defocus, "motion_blur": shake, "dark": underexposed, "overexposed": overexposure, "side_shadow": raking_light,
    "smoothed": beauty_filter, "eyes_covered": hidden_eyes, "rotated": turned, "downscaled": tiny}


def calibration_generator() -> dict[str, Callable[[Image.Image, Face, random.Random], Image.Image]]:
    """scripts/intake_eval.py's degradations (the ones that need no donor face)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("intake_eval", REPO / "scripts" / "intake_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: (lambda im, f, rng, fn=fn: fn(im, f, rng, None)) for name, fn in module.DEGRADE.items() if name != "second_face"}


# -- clean photos -----------------------------------------------------------------------------------
def choose_clean(folders: dict[str, Path], analyzer: FaceAnalyzer, per_group: int) -> dict[str, list[Path]]:
    """Per group, the first `per_group` photos (in name order) with one confident face (>= 0.99, >= 60 px, no
    second face of any size above 0.99), in colour."""
    chosen: dict[str, list[Path]] = {}
    for group, folder in folders.items():
        chosen[group] = []
        for path in sorted(folder.rglob("*.jpg")):
            image = _phone_sized(load_rgb(path))
            rgb = np.asarray(image.resize((64, 64)), dtype=np.float32)
            if np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean() < 3:  # black and white
                continue
            d = analyzer.detect(image)
            if d.ok and len(d.faces) == 1 and d.subject.confidence >= 0.99 and d.subject.side >= 60:
                chosen[group].append(path)
            if len(chosen[group]) == per_group:
                break
    return chosen


def _phone_sized(image: Image.Image) -> Image.Image:
    scale = min(LONG_SIDE / max(image.size), 1.0)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS) if scale < 1 else image


def build(chosen: dict[str, list[Path]], work: Path, analyzer: FaceAnalyzer) -> dict[str, list[tuple[str, Path]]]:
    """The evaluation photos of each group: (label, path); clean ones, and degraded copies of them."""
    generators = {"calibration": calibration_generator(), "heldout": HELDOUT}
    rows: dict[str, list[tuple[str, Path]]] = {}
    for group, paths in chosen.items():
        rng = random.Random(17 if group == "heldout" else 4)
        rows[group] = []
        for path in paths:
            image = _phone_sized(load_rgb(path))
            face = analyzer.detect(image).subject
            stem = path.stem
            folder = work / group
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{stem}-clean.jpg", quality=95)
            rows[group].append(("clean", folder / f"{stem}-clean.jpg"))
            for defect, degrade in generators[group].items():
                out = folder / f"{stem}-{defect}.jpg"
                if not out.exists():  # a build cut short resumes (every draw of a group is made in one run)
                    degrade(image, face, rng).save(out, quality=92)
                rows[group].append((defect, out))
    return rows


# -- scoring ----------------------------------------------------------------------------------------
def assess(rows: dict[str, list[tuple[str, Path]]], analyzer: FaceAnalyzer) -> tuple[dict[str, list[dict]], float]:
    from train.intake import assess_photo

    cfg = load_config("heldout")
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for group, items in rows.items():
        results[group] = []
        for label, path in items:
            report, measured, _ = assess_photo(path, analyzer, cfg, NOW)
            problems = [(name, c.reason, bool(c.advice)) for name, c in report.checks.items() if c.status != "ok"]
            results[group].append({"label": label, "file": path.name, "verdict": report.verdict, "reason": report.reason,
                                   "lead": report.lead, "problems": problems,
                                   "checks": {name: asdict(c) for name, c in report.checks.items()},
                                   "measures": asdict(measured.face_measures) if measured else None})
    n = sum(map(len, rows.values()))
    return results, (time.perf_counter() - start) / max(n, 1)


def _is_right(defect: str, name: str, reason: str) -> bool:
    return any(name == check and words in (reason or "") for check, words in RIGHT[defect])


def _stem(row: dict) -> str:
    return row["file"].rsplit("-", 1)[0]


def score(results: list[dict]) -> dict:
    """Per defect: right reason (the lead), any reason, and photos where a check fired whose advice points elsewhere;
    a check that fires on the same photo's clean version too (its real pose, its real resolution) is a property of
    the photo, not a wrong cause, and a symptom reported without advice ("no face found" once light or a cover
    that hid the face is named) points nowhere."""
    already = {_stem(r): {name for name, *_ in r["problems"]} for r in results if r["label"] == "clean"}
    table = {}
    for defect in RIGHT:
        photos = [r for r in results if r["label"] == defect]
        if not photos:
            continue
        right = sum(bool(r["lead"]) and _is_right(defect, *r["lead"]) for r in photos)
        wrong = [r for r in photos if any(advised and not _is_right(defect, n, why) and n not in ALWAYS_TRUE
                                          and n not in already.get(_stem(r), ()) for n, why, advised in r["problems"])]
        other_leads = [r for r in photos if r["lead"] and not _is_right(defect, *r["lead"])]
        said = Counter(r["lead"][1] for r in other_leads)
        named = sum(any(_is_right(defect, n, why) for n, why, _ in r["problems"]) for r in photos)
        table[defect] = {"n": len(photos), "right": right, "named": named, "any": sum(bool(r["problems"]) for r in photos),
                         "wrong_cause": len(wrong), "instead": said.most_common(3),
                         "instead_on_clean": sum(r["lead"][0] in already.get(_stem(r), ()) for r in other_leads)}
    clean = [r for r in results if r["label"] == "clean"]
    return {"defects": table, "clean": len(clean), "clean_rejected": [f"{r['file']}: {r['reason']}" for r in clean if r["verdict"] == "reject"],
            "clean_warned": [f"{r['file']}: {r['reason']}" for r in clean if r["verdict"] == "warn"],
            "clean_warned_judged": sum(r["verdict"] == "warn" and any(n != "resolution" for n, *_ in r["problems"]) for r in clean)}


# The measure each defect's check reads, and which side of its limit is the defect: (title, getter, low_is_bad).
REACH = {
    "dark": ("best-lit skin (luminance)", lambda m: m["exposure"]["skin"], True),
    "side_shadow": ("cheeks' gap / the face's spread of light", lambda m: m["side_contrast"], False),
    "smoothed": ("skin grain", lambda m: m["focus"]["texture"], True),
    "motion_blur": ("fine-detail anisotropy", lambda m: m["focus"]["anisotropy"], False),
}


def reach_table(results: dict[str, list[dict]], edge: float = 5.0) -> str:
    """How much any limit on one photo's measure can catch: per defect, the share of held-out defect photos past the
    clean calibration photos' `edge` percentile (a limit there warns that share of clean photos; the intake's limits
    sit at or beyond it), and the share of held-out clean photos past it."""
    clean_cal = [r["measures"] for r in results["calibration"] if r["label"] == "clean" and r["measures"]]
    lines = [f"### What one photo's measure can reach (limits at the clean calibration photos' {edge:g}% edge)", "",
             "| defect | measure | edge | held-out defect photos past it | held-out clean photos past it | right reason now |",
             "|---|---|---|---|---|---|"]
    for defect, (title, get, low_is_bad) in REACH.items():
        edge_value = float(np.percentile([get(m) for m in clean_cal], edge if low_is_bad else 100 - edge))
        sign = 1.0 if low_is_bad else -1.0  # past the edge: sign * value < sign * edge

        def past(rows: list[dict], get=get, sign=sign, edge_value=edge_value) -> int:
            return sum(sign * get(r["measures"]) < sign * edge_value for r in rows if r["measures"])

        photos = [r for r in results["heldout"] if r["label"] == defect]
        clean = [r for r in results["heldout"] if r["label"] == "clean"]
        right = sum(bool(r["lead"]) and _is_right(defect, *r["lead"]) for r in photos)
        lines.append(f"| {defect} | {title} | {'below' if low_is_bad else 'above'} {edge_value:.3g} "
                     f"| {past(photos)} of {len(photos)} | {past(clean)} of {len(clean)} | {right / max(len(photos), 1):.2f} |")
    return "\n".join(lines + [""])


# -- in a set: the person's other photos beside each one ------------------------------------------------
def people(folder: Path) -> dict[str, str]:
    """Photo stem -> person, from the "Yes" pairs of the pair lists beside the photos (deepface ships master.csv
    and face-recognition-pivot.csv in its dataset folder); {} without them."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                a, b = root(Path(row["file_x"]).stem), root(Path(row["file_y"]).stem)
                if (row.get("decision") or row.get("Decision")) == "Yes" and a != b:
                    parent[a] = b
    return {x: root(x) for x in list(parent)}


def in_sets(results: list[dict], who: dict[str, str]) -> dict:
    """Each degraded photo judged beside its person's other, clean photos: the set checks that compare a photo
    with the person's own (`add_relative_checks`: light, skin grain, side light, colour) on top of its own verdict, and
    its reasons ordered as in a set (`share_warnings`: what the set shares after what is particular to it). Right
    reason in the set: the lead; named in the set: among the reasons. People with at least RELATIVE_MIN_PHOTOS clean
    photos; the clean sets' own photos tell their false warnings."""
    cfg = load_config("heldout").intake
    rows = {(r["label"], _stem(r)): r for r in results}
    persons: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r["label"] == "clean" and r["measures"] and _stem(r) in who:
            persons[who[_stem(r)]].append(_stem(r))
    persons = {p: stems for p, stems in persons.items() if len(stems) >= RELATIVE_MIN_PHOTOS}
    out = {"people": len(persons), "clean": 0, "clean_flagged": Counter(), "defects": {}}
    for stems in persons.values():
        clean = [PhotoReport.from_checks(rows["clean", s]["file"], rows["clean", s]["checks"]) for s in stems]
        _as_a_set(clean, [FaceMeasures.from_dict(rows["clean", s]["measures"]) for s in stems], cfg)
        out["clean"] += len(stems)
        out["clean_flagged"].update(c.reason for r, s in zip(clean, stems) for name, c in r.checks.items()
                                    if c.status != "ok" and c.reason not in (rows["clean", s]["reason"] or ""))
        for defect in RIGHT:
            for k, stem in enumerate(stems):
                row = rows.get((defect, stem))
                if row is None:
                    continue
                lead, reasons = row["lead"], [(name, why) for name, why, _ in row["problems"]]
                if row["measures"]:
                    members = [row if t == stem else rows["clean", t] for t in stems]
                    reports = [PhotoReport.from_checks(m["file"], m["checks"]) for m in members]
                    _as_a_set(reports, [FaceMeasures.from_dict(m["measures"]) for m in members], cfg)
                    lead, reasons = reports[k].lead, [(name, c.reason) for name, c in reports[k].problems()]
                d = out["defects"].setdefault(defect, {"n": 0, "alone": 0, "in_set": 0, "named_in_set": 0})
                d["n"] += 1
                d["alone"] += bool(row["lead"]) and _is_right(defect, *row["lead"])
                d["in_set"] += bool(lead) and _is_right(defect, *lead)
                d["named_in_set"] += any(_is_right(defect, *reason) for reason in reasons)
    return out


def _as_a_set(reports: list[PhotoReport], measures: list[FaceMeasures], cfg: IntakeConfig) -> None:
    """What run_intake adds to photos judged together (the duplicate and identity checks aside)."""
    add_relative_checks(reports, measures, cfg)
    share_warnings(reports)


def set_table(s: dict) -> str:
    lines = [f"### held-out, each photo in its person's set: {s['people']} people with 4 or more clean photos", "",
             "| defect | photos | right reason alone | right reason in the set | named in the set |", "|---|---|---|---|---|"]
    lines += [f"| {defect} | {d['n']} | {d['alone'] / d['n']:.2f} | {d['in_set'] / d['n']:.2f} | {d['named_in_set'] / d['n']:.2f} |"
              for defect, d in s["defects"].items()]
    flagged = "; ".join(f"{why} ({n})" for why, n in s["clean_flagged"].most_common()) or "none"
    lines += ["", f"What the set checks add on the {s['clean']} clean photos themselves: {flagged}.", ""]
    return "\n".join(lines)


def markdown(scores: dict[str, dict], seconds: float | None, command: str) -> str:
    """The figures of the doc's block: the command that made them, then `tables` (the method, the measures and the
    history of the limits are the doc's own prose around the block)."""
    return f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}.\n\n" + tables(scores, seconds)


def interval(hits: int, n: int, z: float = 1.645) -> tuple[float, float]:
    """90% Wilson score interval of a rate `hits` / `n`: how far another sample of as many photos could put it
    (58 held-out photos per row: 52 right reads 0.90, anywhere from 0.81 to 0.95)."""
    if n == 0:
        return 0.0, 1.0
    rate, spread = hits / n, z * z / n
    centre = (rate + spread / 2) / (1 + spread)
    half = z * math.sqrt(rate * (1 - rate) / n + spread / (4 * n)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def tables(scores: dict[str, dict], seconds: float | None) -> str:
    """Per group: right-reason table (with its 90% interval), clean rejects and warnings, and the per-photo time
    when measured."""
    lines: list[str] = []
    for group, s in scores.items():
        lines += [f"### {group}: {s['clean']} clean photos", "",
                  ("| defect | photos | right reason | 90% interval | right reason named at all | any reason | wrong cause named "
                   "| what it said instead | of those, said of the clean photo too |"), "|---|---|---|---|---|---|---|---|---|"]
        for defect, d in s["defects"].items():
            mark = "" if d["right"] / d["n"] >= 0.9 else " **(below 0.9)**"
            instead = "; ".join(f"{why} ({k})" for why, k in d["instead"])
            low, high = interval(d["right"], d["n"])
            lines.append(f"| {defect} | {d['n']} | {d['right'] / d['n']:.2f}{mark} | {low:.2f}-{high:.2f} | {d['named'] / d['n']:.2f} "
                         f"| {d['any'] / d['n']:.2f} | {d['wrong_cause']} | {instead} | {d['instead_on_clean']} |")
        rej, warn = s["clean_rejected"], s["clean_warned"]
        judged, n = s["clean_warned_judged"], max(s["clean"], 1)
        low, high = interval(judged, s["clean"])
        lines += ["", (f"Clean photos: {len(rej)} of {s['clean']} rejected ({len(rej) / n:.1%}), "
                      f"{len(warn)} warned ({len(warn) / n:.1%}); {judged} ({judged / n:.1%}, 90% interval {low:.1%}-{high:.1%}) "
                      "for something other than their resolution (a pixel count, not a judgement)."), ""]
        lines += [f"- rejected {r}" for r in rej] + [f"- warned {r}" for r in warn] + [""]
    if seconds is not None:
        lines += [f"Per-photo time (decode, detection once, every per-photo check; one thread): {seconds:.3f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, required=True, help="photos to degrade with the project's generator")
    parser.add_argument("--heldout", type=Path, required=True, help="photos of other people, for the independent generator")
    parser.add_argument("--only", choices=("calibration", "heldout"), help="judge one group (tuning reads calibration only)")
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(REPO.parent / "shared/models/facenet/casia-webface-features.pt")))
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "intake_heldout", help="git-ignored; photos built once")
    parser.add_argument("--per-group", type=int, default=120, help="clean photos per group at most")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "intake_quality.md")
    args = parser.parse_args()
    setup_logging()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    analyzer = FaceAnalyzer(load_config("heldout").face)
    index = args.work / "photos.json"
    if index.exists():
        chosen = {g: [Path(p) for p in ps] for g, ps in json.loads(index.read_text())["chosen"].items()}
        rows = {g: [(label, Path(p)) for label, p in items] for g, items in json.loads(index.read_text())["rows"].items()}
    else:
        chosen = choose_clean({"calibration": args.calibration, "heldout": args.heldout}, analyzer, args.per_group)
        rows = build(chosen, args.work, analyzer)
        index.write_text(json.dumps({"chosen": {g: [str(p) for p in ps] for g, ps in chosen.items()},
                                     "rows": {g: [(label, str(p)) for label, p in items] for g, items in rows.items()}}))
    if args.only:
        rows = {args.only: rows[args.only]}
    results, seconds = assess(rows, analyzer)
    (args.work / f"results-{args.only or 'all'}.json").write_text(json.dumps(results, indent=1))
    scores = {group: score(r) for group, r in results.items()}
    command = ("PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/intake_heldout.py --calibration <celeba-originals> "
               f"--heldout <deepface-tests>{f' --only {args.only}' if args.only else ''} --per-group {args.per_group}")
    text = markdown(scores, seconds, command)
    if {"calibration", "heldout"} <= set(results):
        text += "\n" + reach_table(results)
    who = people(args.heldout)
    if "heldout" in results and who:
        text += "\n" + set_table(in_sets(results["heldout"], who))
    if not args.only:
        from _docs import write_block  # scripts/, first on sys.path when run as a script (tests import this file)

        write_block(args.out, BLOCK, text)
    print(text)


if __name__ == "__main__":
    main()
