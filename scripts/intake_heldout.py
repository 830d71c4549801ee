"""Does the intake name the right cause on photos it was not calibrated on? A held-out evaluation.

Two disjoint groups of people from in-the-wild photos (CelebA originals: --photos, one folder per person):
- calibration: degraded by the project's own generator (scripts/intake_eval.py's DEGRADE), the set the
  thresholds were tuned on;
- held-out: degraded by the independent implementation below (other operations, in linear light, other
  strengths, sized to the photo as well as to the face), never used for tuning.
Clean photos are chosen by detection only (one confident face, no second face, colour), never by the
intake's
verdict, and upscaled (Lanczos) to a 1400 px long side so the face area is a phone photo's (1-2 MP).

Each photo is judged alone (`assess_photo`: the per-photo checks; the set checks are scripts/intake_eval.py's).
Right reason: the verdict's leading reason is the defect's own check; any reason: any check fired;
wrong cause: a check fired whose advice points elsewhere. Writes its section of docs/intake_quality.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/intake_heldout.py --photos /work/data15/celeba299 \
        [--work outputs/intake_heldout] [--per-group 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from headshots.config import load_config
from headshots.faces import Face, FaceAnalyzer
from headshots.images import load_rgb
from headshots.logs import setup_logging

REPO = Path(__file__).resolve().parents[1]
LONG_SIDE = 1400  # clean photos are resized to this long side (1-2 MP)
PHOTOS_PER_PERSON = 2
NOW = datetime(2026, 11, 24)
MARK = "<!-- held-out evaluation: scripts/intake_heldout.py -->"
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


def underexposed(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """A dim room: gamma pushes the mid-tones down (face mean ~60-90), the sensor's noise shows."""
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = x ** rng.uniform(1.8, 2.6) * rng.uniform(0.8, 0.95)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(1.5, 4.0) / 255, x.shape[:2])[..., None]
    return Image.fromarray((np.clip(x + noise, 0, 1) * 255 + 0.5).astype(np.uint8))


def overexposure(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Two to four stops too much light, in linear light: highlights clip, skin goes white."""
    return _srgb(_linear(image) * rng.uniform(3.0, 6.0))


def raking_light(image: Image.Image, face: Face, rng: random.Random) -> Image.Image:
    """Light from one side at any angle within 30 degrees of horizontal: a soft falloff across the face,
    the shadow side at 12-30% of the lit side's light."""
    angle = math.radians(rng.uniform(-30, 30) + rng.choice([0, 180]))
    cx, cy = face.center
    ys, xs = np.mgrid[0 : image.height, 0 : image.width].astype(np.float32)
    t = ((xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)) / (face.side * rng.uniform(0.15, 0.25))
    low = rng.uniform(0.12, 0.3)
    light = low + (1 - low) / (1 + np.exp(-t))
    return _srgb(_linear(image) * light[..., None] * 1.3)


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
def choose_clean(photos: Path, analyzer: FaceAnalyzer, groups: dict[str, list[str]], per_group: int) -> dict[str, list[Path]]:
    """Per group, up to `per_group` people's first PHOTOS_PER_PERSON photos (in name order) with one confident
    face (>= 0.99, >= 60 px, no second face of any size above 0.99), in colour."""
    chosen: dict[str, list[Path]] = {}
    for group, people in groups.items():
        chosen[group] = []
        for person in people:
            picks = []
            for path in sorted((photos / person).glob("*.jpg")):
                image = load_rgb(path)
                rgb = np.asarray(image.resize((64, 64)), dtype=np.float32)
                if np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean() < 3:  # black and white
                    continue
                d = analyzer.detect(image)
                if d.ok and len(d.faces) == 1 and d.subject.confidence >= 0.99 and d.subject.side >= 60:
                    picks.append(path)
                if len(picks) == PHOTOS_PER_PERSON:
                    break
            chosen[group] += picks
            if len({p.parent for p in chosen[group]}) >= per_group:
                break
    return chosen


def build(chosen: dict[str, list[Path]], work: Path, analyzer: FaceAnalyzer) -> dict[str, list[tuple[str, Path]]]:
    """The evaluation photos of each group: (label, path); clean ones upscaled, degraded copies of them."""
    generators = {"calibration": calibration_generator(), "heldout": HELDOUT}
    rows: dict[str, list[tuple[str, Path]]] = {}
    for group, paths in chosen.items():
        rng = random.Random(17 if group == "heldout" else 4)
        rows[group] = []
        for path in paths:
            image = load_rgb(path)
            scale = LONG_SIDE / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
            face = analyzer.detect(image).subject
            stem = f"{path.parent.name}-{path.stem}"
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
            report, _, _ = assess_photo(path, analyzer, cfg, NOW)
            problems = [(name, c.reason) for name, c in report.checks.items() if c.status != "ok"]
            results[group].append({"label": label, "file": path.name, "verdict": report.verdict, "reason": report.reason,
                                   "lead": report.lead, "problems": problems,
                                   "values": {name: c.value for name, c in report.checks.items()}})
    n = sum(map(len, rows.values()))
    return results, (time.perf_counter() - start) / max(n, 1)


def _is_right(defect: str, name: str, reason: str) -> bool:
    return any(name == check and words in (reason or "") for check, words in RIGHT[defect])


def score(results: list[dict]) -> dict:
    table = {}
    for defect in RIGHT:
        photos = [r for r in results if r["label"] == defect]
        if not photos:
            continue
        right = sum(bool(r["lead"]) and _is_right(defect, *r["lead"]) for r in photos)
        wrong = [r for r in photos if any(not _is_right(defect, n, why) and n not in ALWAYS_TRUE for n, why in r["problems"])]
        said = Counter(r["lead"][1] for r in photos if r["lead"] and not _is_right(defect, *r["lead"]))
        table[defect] = {"n": len(photos), "right": right, "any": sum(bool(r["problems"]) for r in photos),
                         "wrong_cause": len(wrong), "instead": said.most_common(3)}
    clean = [r for r in results if r["label"] == "clean"]
    return {"defects": table, "clean": len(clean), "clean_rejected": [f"{r['file']}: {r['reason']}" for r in clean if r["verdict"] == "reject"],
            "clean_warned": [f"{r['file']}: {r['reason']}" for r in clean if r["verdict"] == "warn"]}


def markdown(scores: dict[str, dict], chosen: dict[str, list[Path]], seconds: float, command: str) -> str:
    lines = [MARK, "", "## Held-out evaluation: a different generator, people never used for tuning", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}.",
             "In-the-wild CelebA originals (one folder per person; upscaled with Lanczos to a 1400 px long side). Clean photos are",
             "chosen by detection only: each person's first photos (name order) with one face of confidence >= 0.99, >= 60 px, in colour.",
             "Calibration people are degraded by scripts/intake_eval.py's generator, held-out people by the independent one in",
             "scripts/intake_heldout.py (PSFs in linear light, gamma + sensor noise, exposure in stops, a light falloff at any",
             "angle, a bilateral beauty filter, sunglasses or a hand along the eye line, rotation about the photo's centre, a",
             "thumbnail; strengths the larger of a face-relative and a photo-relative draw). Each photo is judged alone",
             "(`assess_photo`). Right reason: the verdict's leading reason is the defect's cause; any reason: any check fired;",
             "wrong cause: some fired check's advice points elsewhere (a real head pose of the photo is not counted).", ""]
    for group, s in scores.items():
        people = sorted({p.parent.name for p in chosen[group]})
        lines += [f"### {group}: {len(people)} people, {s['clean']} clean photos ({people[0]} .. {people[-1]})", "",
                  "| defect | photos | right reason | any reason | wrong cause named | what it said instead |", "|---|---|---|---|---|---|"]
        for defect, d in s["defects"].items():
            mark = "" if d["right"] / d["n"] >= 0.9 else " **(below 0.9)**"
            instead = "; ".join(f"{why} ({k})" for why, k in d["instead"])
            lines.append(f"| {defect} | {d['n']} | {d['right'] / d['n']:.2f}{mark} | {d['any'] / d['n']:.2f} | {d['wrong_cause']} | {instead} |")
        rej, warn = s["clean_rejected"], s["clean_warned"]
        lines += ["", f"Clean photos: {len(rej)} of {s['clean']} rejected ({len(rej) / max(s['clean'], 1):.1%}), "
                      f"{len(warn)} warned ({len(warn) / max(s['clean'], 1):.1%}).", ""]
        lines += [f"- rejected {r}" for r in rej] + [f"- warned {r}" for r in warn] + [""]
    lines += [f"Per-photo time over both groups (decode, detection once, every per-photo check; one thread): {seconds:.3f} s.", ""]
    return "\n".join(lines)


def write_section(text: str, out: Path) -> None:
    """Replace this script's section of the doc (everything from MARK on), keeping scripts/intake_eval.py's part."""
    current = out.read_text() if out.exists() else ""
    out.write_text(current.split(MARK)[0].rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="one folder of photos per person (CelebA originals)")
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(REPO.parent / "shared/models/facenet/casia-webface-features.pt")))
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "intake_heldout", help="git-ignored; photos built once")
    parser.add_argument("--per-group", type=int, default=30, help="people per group")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "intake_quality.md")
    args = parser.parse_args()
    setup_logging()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    analyzer = FaceAnalyzer(load_config("heldout").face)
    people = sorted(d.name for d in args.photos.iterdir() if d.is_dir())
    groups = {"calibration": people[0::2], "heldout": people[1::2]}  # disjoint people
    index = args.work / "photos.json"
    if index.exists():
        chosen = {g: [Path(p) for p in ps] for g, ps in json.loads(index.read_text())["chosen"].items()}
        rows = {g: [(label, Path(p)) for label, p in items] for g, items in json.loads(index.read_text())["rows"].items()}
    else:
        chosen = choose_clean(args.photos, analyzer, groups, args.per_group)
        rows = build(chosen, args.work, analyzer)
        index.write_text(json.dumps({"chosen": {g: [str(p) for p in ps] for g, ps in chosen.items()},
                                     "rows": {g: [(label, str(p)) for label, p in items] for g, items in rows.items()}}))
    results, seconds = assess(rows, analyzer)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    scores = {group: score(r) for group, r in results.items()}
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/intake_heldout.py --photos <celeba299> --per-group " + str(args.per_group)
    text = markdown(scores, chosen, seconds, command)
    write_section(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
