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


_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (dy, dx): horizontal, vertical and the two diagonals


def _steps(grey: np.ndarray, k: int) -> list[np.ndarray]:
    """|I(p + k d) - I(p - k d)| along each of _DIRECTIONS, cropped alike (a margin of 3 px)."""
    n = grey.shape[0]
    out = []
    for dy, dx in _DIRECTIONS:
        a = grey[3 + k * dy : n - 3 + k * dy, 3 + k * dx : n - 3 + k * dx]
        b = grey[3 - k * dy : n - 3 - k * dy, 3 - k * dx : n - 3 - k * dx]
        out.append(np.abs(a - b))
    return out


@dataclass(frozen=True)
class Focus:
    """How steep the face's edges are along each direction, and how much fine texture its skin keeps."""

    acuity: tuple[float, ...]  # per direction (_DIRECTIONS): strongest 1-px step / strongest 3-px step, ~1/3 blurred .. 1 sharp
    texture: float  # median |Laplacian| of the face / its 99th percentile: skin grain relative to the outlines

    @property
    def sharpest(self) -> float:
        return max(self.acuity)

    @property
    def directional(self) -> float:
        """1 - weakest / strongest direction's acuity: high when one direction alone lost its edges (a smear)."""
        return 1.0 - min(self.acuity) / max(max(self.acuity), 1e-6)


def focus(crop: FaceCrop, covered: str | None = None) -> Focus:
    """The physical causes of lost detail, told apart.

    Acuity: a sharp edge rises within a pixel, so its 1-px step is as high as its 3-px step (ratio ~1); an edge
    spread over w >= 6 px rises w/2 of its height per... i.e. the ratio falls towards 1/3. A ratio of steps is
    independent of the edge's contrast, so light and skin tone leave it be, and the 99th percentile reads the
    strongest edges (eyes, lips, outline) whatever else the face holds. Defocus lowers it along every direction;
    camera shake along the smear's direction only (perpendicular edges stay sharp); a beauty filter not at all,
    since edge-preserving smoothing keeps exactly these edges.
    Texture: what a beauty filter removes is the grain of the skin between those edges, which is most of the face,
    so the median Laplacian falls while the 99th percentile (edges) stays. A mask or sunglasses is flat too: with
    `covered` ("mouth" or "eyes") only the other half of the face is measured."""
    grey = _inner(crop.grey, 0.8)
    middle = grey.shape[0] // 2
    part = {"mouth": grey[:middle], "eyes": grey[middle:]}.get(covered, grey)
    one, three = _steps(grey, 1), _steps(grey, 3)
    if covered in ("mouth", "eyes"):
        rows = slice(0, middle - 3) if covered == "mouth" else slice(middle - 3, None)
        one, three = [s[rows] for s in one], [s[rows] for s in three]
    acuity = tuple(float(np.percentile(a, 99)) / max(float(np.percentile(b, 99)), 1.0) for a, b in zip(one, three))
    lap = np.abs(_laplacian(part))
    texture = float(np.median(lap)) / max(float(np.percentile(lap, 99)), 1.0)
    return Focus(acuity, texture)


@dataclass(frozen=True)
class Exposure:
    """The face's luminance distribution (inner face, 0..255): where its tones sit and what was lost at either end."""

    mean: float
    highlights: float  # 95th percentile: the best-lit skin. Even dark skin in good light reaches the mid-tones here
    crushed: float  # share of the face at or below luminance CRUSHED: shadows sunk into black
    clipped: float  # share of the face with every channel at or above CLIPPED: blown out to white


CRUSHED, CLIPPED = 16.0, 250.0


def exposure(crop: FaceCrop) -> Exposure:
    """Under- and overexposure by what light does to a face, not by its mean: a fair face at 193 with nothing
    clipped is bright, not overexposed; dark skin at a mean of 80 is not underexposed when its best-lit skin
    reaches the mid-tones and its shadows keep detail."""
    inner = _inner(crop.grey)
    return Exposure(float(inner.mean()), float(np.percentile(inner, 95)), float((inner <= CRUSHED).mean()),
                    float((_inner(crop.rgb).min(axis=-1) >= CLIPPED).mean()))


def photo_exposure(image: Image.Image) -> Exposure:
    """The same over the whole photo: what the intake can still say when light hid the face from the detector."""
    small = np.asarray(image.resize((THUMB * 2, THUMB * 2), Image.BILINEAR), dtype=np.float32)
    grey = small @ _LUMA
    return Exposure(float(grey.mean()), float(np.percentile(grey, 95)), float((grey <= CRUSHED).mean()),
                    float((small.min(axis=-1) >= CLIPPED).mean()))


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
