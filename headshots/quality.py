"""Photo-quality measurements for the selfie intake: numbers, no verdicts.

Each function measures one thing a photographer would look at, on the face rather than on the
whole photo (a sharp background behind a blurred face is still a blurred face). Faces are first
cut out and resampled to `CROP` pixels so every value means the same at any photo size.
numpy + PIL only: the intake runs on every upload and must stay fast on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from headshots.faces import Face

CROP = 128  # side of the normalised face crop
THUMB = 32  # side of the whole-photo thumbnail used to compare photos with each other
SIGNATURE = 64  # side of the face-region signature used to find re-saved copies of one shot
SIGNATURE_SCALES = (0.96, 0.98, 1.0, 1.02, 1.04)  # face-box size jitter between copies of one photo: up to ~4%
SIGNATURE_SHIFT = 2  # ... and position jitter, in signature pixels (1.5 at most between copies)
SIGNATURE_LOWPASS = 8.0  # sigma of the coarse shading removed from signatures, in signature pixels
# r, g, b shares of facial skin in neutral light (mean over the clean photos of docs/intake_quality.md)
SKIN_CHROMATICITY = np.array([0.44, 0.30, 0.26], dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_EXIF_IFD, _DATE_TIME_ORIGINAL, _DATE_TIME = 0x8769, 0x9003, 0x0132


@dataclass(frozen=True)
class FaceCrop:
    """The face box cut square and resampled to CROP x CROP, with landmarks in crop pixels."""

    rgb: np.ndarray  # (CROP, CROP, 3) float32, 0..255
    grey: np.ndarray  # (CROP, CROP) float32, 0..255
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left and right mouth corner

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def face_crop(image: Image.Image, face: Face) -> FaceCrop:
    """Square crop around the face box (its longer side), resampled with antialiasing."""
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1, 1.0)
    left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    crop = image.crop((round(left), round(top), round(left + side), round(top + side))).resize((CROP, CROP), Image.BILINEAR)
    rgb = np.asarray(crop, dtype=np.float32)
    landmarks = (np.asarray(face.landmarks, dtype=np.float32) - (round(left), round(top))) * (CROP / round(side))
    return FaceCrop(rgb, rgb @ _LUMA, landmarks)


def _laplacian(grey: np.ndarray) -> np.ndarray:
    return grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]


def _gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return grey[1:-1, 2:] - grey[1:-1, :-2], grey[2:, 1:-1] - grey[:-2, 1:-1]


def _inner(array: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """The central part of a face crop: skin and features, no hair or background corners."""
    n = array.shape[0]
    a, b = round(n * (1 - fraction) / 2), round(n * (1 + fraction) / 2)
    return array[a:b, a:b]


def _laplacian_variance(grey: np.ndarray) -> float:
    """Normalised by the face's own contrast, so a dark-but-sharp face does not read as blurred."""
    return float(_laplacian(grey / max(float(grey.std()), 1.0)).var())


def sharpness(crop: FaceCrop, covered: str | None = None) -> tuple[float, float]:
    """Variance of the Laplacian of the inner face at full crop size (fine detail: pores, lashes)
    and at half size (coarse detail: outlines of eyes, nose, mouth).

    Out of focus loses both; beauty smoothing loses the fine and keeps the coarse. A mask or
    sunglasses is flat too, and would read as blur: with `covered` ("mouth" or "eyes") only the
    other half of the face is measured, so the person hears "mouth covered", not "out of focus"."""
    grey = _inner(crop.grey, 0.8)
    middle = grey.shape[0] // 2
    grey = {"mouth": grey[:middle], "eyes": grey[middle:]}.get(covered, grey)
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    half = grey[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return _laplacian_variance(grey), _laplacian_variance(half)


def motion_blur(crop: FaceCrop) -> float:
    """Directional loss of detail: 1 - (weakest / strongest) of the horizontal and vertical gradient energy
    after the Laplacian is normalised. Camera shake smears one direction; a still photo keeps both."""
    grey = _inner(crop.grey, 0.8)
    grey = grey / max(float(grey.std()), 1.0)
    energies = []
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        second = np.roll(grey, shift, axis=(0, 1)) + np.roll(grey, (-shift[0], -shift[1]), axis=(0, 1)) - 2 * grey
        energies.append(float((second[2:-2, 2:-2] ** 2).mean()))
    return 1.0 - min(energies) / max(max(energies), 1e-6)


def exposure(crop: FaceCrop) -> tuple[float, float]:
    """Mean luminance (0..255) of the inner face and the share of it blown out to white."""
    inner = _inner(crop.grey)
    return float(inner.mean()), float((_inner(crop.rgb).min(axis=-1) >= 250).mean())


def side_light(crop: FaceCrop) -> float:
    """Darker / brighter half of the face, split at the nose: low = a harsh shadow across one side."""
    inner = _inner(crop.grey)
    offset = round(CROP * 0.2)
    split = int(np.clip(round(crop.landmarks[2][0]) - offset, 8, inner.shape[1] - 8))
    left, right = float(inner[:, :split].mean()), float(inner[:, split:].mean())
    return min(left, right) / max(left, right, 1.0)


def backlight(image: Image.Image, face: Face) -> float:
    """Background / face luminance: high = light behind you, the face falls into shadow."""
    small = image.resize((THUMB * 2, THUMB * 2), Image.BILINEAR)
    grey = np.asarray(small, dtype=np.float32) @ _LUMA
    sx, sy = small.width / image.width, small.height / image.height
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    ys, xs = np.mgrid[0 : small.height, 0 : small.width]
    in_face = (xs >= (x1 + 0.2 * w) * sx) & (xs < (x2 - 0.2 * w) * sx) & (ys >= (y1 + 0.2 * h) * sy) & (ys < (y2 - 0.2 * h) * sy)
    around = (xs < (x1 - 0.5 * w) * sx) | (xs >= (x2 + 0.5 * w) * sx) | (ys < (y1 - 0.5 * h) * sy)
    if not in_face.any() or not around.any():
        return 1.0
    return float(grey[around].mean()) / max(float(grey[in_face].mean()), 1.0)


def colour_cast(crop: FaceCrop) -> float:
    """Distance of the face's chromaticity (r, g, b shares) from that of skin in neutral light.

    Skin of every tone has nearly the same chromaticity (tones differ mostly in brightness), so a face
    that is too orange, green or blue says the light was coloured."""
    means = _inner(crop.rgb).reshape(-1, 3).mean(axis=0)
    return float(np.linalg.norm(means / max(float(means.sum()), 1.0) - SKIN_CHROMATICITY))


@dataclass(frozen=True)
class Pose:
    yaw: float  # nose offset from the eye midpoint, in eye distances (0 = facing the camera)
    pitch: float  # nose height between the eye line (0) and the mouth line (1); ~0.5 when level
    roll: float  # eye-line angle in degrees (0 = level)


def pose(face: Face) -> Pose:
    """Head pose from MTCNN's five landmarks, in the frame of the eye line (roll removed first)."""
    eye_l, eye_r, nose, mouth_l, mouth_r = (np.asarray(p, dtype=float) for p in face.landmarks)
    axis = eye_r - eye_l
    distance = max(float(np.linalg.norm(axis)), 1e-6)
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    cos, sin = axis / distance
    eyes, mouth = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2

    def upright(p: np.ndarray) -> np.ndarray:
        d = p - eyes
        return np.array([cos * d[0] + sin * d[1], -sin * d[0] + cos * d[1]])

    n, m = upright(nose), upright(mouth)
    return Pose(yaw=float(n[0] / distance), pitch=float(n[1] / max(m[1], 1e-6)), roll=roll)


def smile(face: Face) -> float:
    """Mouth width / eye distance: a natural smile widens the mouth."""
    eye_l, eye_r, _, mouth_l, mouth_r = (np.asarray(p, dtype=float) for p in face.landmarks)
    return float(np.linalg.norm(mouth_r - mouth_l) / max(float(np.linalg.norm(eye_r - eye_l)), 1e-6))


def _patch(array: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    x, y = (round(float(v)) for v in center)
    r = max(round(radius), 2)
    return array[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]


def occlusion(crop: FaceCrop) -> tuple[float, float]:
    """Share of flat (featureless) pixels around the eyes, and share of pixels with detail around the mouth.

    Eyes and lips are the most detailed parts of a face; sunglasses, a hand, a mask or a sticker over
    them are flat. The rim of a lens or a mask can still carry strong edges, enough to lift the mean
    gradient of the patch to that of a bare face (a mask's top edge across the mouth patch did), so both
    count pixels instead: flat means a gradient below a quarter of the face's median. Relative to the
    face's own median, the count is also stable under blur and dim light, which lower every gradient
    together: on scripts/intake_eval.py's photos, blurred, dark or overexposed faces stay below a 0.25
    flat share around eyes and mouth, and covered ones above 0.7."""
    gx, gy = _gradients(crop.grey)
    energy = np.pad(np.hypot(gx, gy), 1)
    flat = energy < 0.25 * float(np.median(_inner(energy, 0.8)))
    radius = 0.3 * crop.eye_distance
    eyes = float(np.mean([_patch(flat, crop.landmarks[i], radius).mean() for i in (0, 1)]))
    mouth = 1.0 - float(_patch(flat, crop.landmarks[3:5].mean(axis=0), radius).mean())
    return eyes, mouth


def thumbnail(image: Image.Image) -> np.ndarray:
    """Whole photo as a zero-mean, unit-norm grey vector: the set's variety (place, light, framing)."""
    grey = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32).ravel()
    grey = grey - grey.mean()
    return grey / max(float(np.linalg.norm(grey)), 1e-6)


def face_signature(image: Image.Image, face: Face) -> np.ndarray:
    """The face and a little around it (1.2 x the box side), grey, band-passed, at SIGNATURE_SCALES:
    a (scales, SIGNATURE + 2 * SIGNATURE_SHIFT, same) stack compared with `same_shot`.

    Registration: MTCNN's box of the same picture re-saved (cropped, resized, re-compressed) moves by
    a few pixels and changes size by up to ~4%, enough to drop a raw correlation to 0.95, as low as two
    different shots. So each photo is sampled at several scales around its box (the comparison searches
    scale and shift), with proper antialiasing (`resize` with a source box; a point-sampled warp
    aliases, itself worth up to 0.04 of correlation). Aligning on the five landmarks instead was tried and
    is worse: they jitter more than the box between copies (notes in docs/intake_quality.md).
    Band-pass (a Gaussian of sigma 1 px minus one of SIGNATURE_LOWPASS px): shots seconds apart share
    the coarse shading (head outline, light, background), which dominates a raw correlation; a copy
    also keeps every mid-scale detail (eyelids, lips, hair strands) in place, where a new shot differs
    with expression and pose. The finest scale is JPEG and resampling noise and is dropped too."""
    n = SIGNATURE + 2 * SIGNATURE_SHIFT
    x1, y1, x2, y2 = face.box
    step = 1.2 * max(x2 - x1, y2 - y1) / SIGNATURE  # photo pixels per signature pixel at scale 1
    cx, cy = face.center
    reach = step * n / 2 * max(SIGNATURE_SCALES) + 1
    left, top = math.floor(cx - reach), math.floor(cy - reach)
    region = image.crop((left, top, math.ceil(cx + reach), math.ceil(cy + reach))).convert("L")
    stack = np.stack([
        np.asarray(region.resize((n, n), Image.BILINEAR, box=(cx - h - left, cy - h - top, cx + h - left, cy + h - top)),
                   dtype=np.float32)
        for h in (step * n / 2 * s for s in SIGNATURE_SCALES)])
    return _FINE @ stack @ _FINE.T - _COARSE @ stack @ _COARSE.T


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) Gaussian blur as a matrix (rows renormalised at the borders): M @ x @ M.T blurs x."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


_FINE = _blur_matrix(SIGNATURE + 2 * SIGNATURE_SHIFT, 1.0)
_COARSE = _blur_matrix(SIGNATURE + 2 * SIGNATURE_SHIFT, SIGNATURE_LOWPASS)


def same_shot(signatures: list[np.ndarray]) -> np.ndarray:
    """(N, N) best correlation of `face_signature`s over SIGNATURE_SCALES and shifts of up to
    SIGNATURE_SHIFT pixels: each photo's scale-1 centre against every scaled, shifted window of the other.

    0.985-1.0 for a photo re-saved with a small crop, resize and JPEG 75; at most 0.965 for two shots
    of the same person seconds apart (docs/intake_quality.md). Every window is normalised once, then one
    matrix product per photo compares it with all the others."""
    n = signatures[0].shape[-1]
    m = n - 2 * SIGNATURE_SHIFT
    one = SIGNATURE_SCALES.index(1.0)
    centres = np.stack([_unit(s[one, SIGNATURE_SHIFT : n - SIGNATURE_SHIFT, SIGNATURE_SHIFT : n - SIGNATURE_SHIFT]).ravel()
                        for s in signatures])
    sims = np.empty((len(signatures), len(signatures)), dtype=np.float32)
    for j, s in enumerate(signatures):
        windows = np.lib.stride_tricks.sliding_window_view(s, (m, m), axis=(1, 2)).reshape(-1, m * m)
        windows = windows - windows.mean(axis=1, keepdims=True)
        windows /= np.maximum(np.linalg.norm(windows, axis=1, keepdims=True), 1e-6)
        sims[:, j] = (windows @ centres.T).max(axis=0)
    return np.maximum(sims, sims.T)


def _unit(array: np.ndarray) -> np.ndarray:
    centred = array - array.mean()
    return centred / max(float(np.linalg.norm(centred)), 1e-6)


def photo_taken(path: Path) -> Optional[datetime]:
    """When the photo was taken, from EXIF (DateTimeOriginal, else DateTime); None when unknown."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            raw = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
        return datetime.strptime(str(raw).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S") if raw else None
    except (OSError, ValueError, SyntaxError):
        return None
