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

import numpy as np
from PIL import Image, ImageChops

from headshots.faces import Face

CROP = 128  # side of the normalised face crop
DETAIL_CROP = 256  # largest side of the face crop that focus is measured on (fine detail needs the pixels)
FINE_BAND = (0.06, 0.25)  # spatial frequencies, cycles per pixel of the detail crop, that carry fine detail
THUMB = 32  # side of the whole-photo thumbnail used to compare photos with each other
SIGNATURE = 64  # side of the face-region signature used to find re-saved copies of one shot
SIGNATURE_SCALES = (0.96, 0.98, 1.0, 1.02, 1.04)  # face-box size jitter between copies of one photo: up to ~4%
SIGNATURE_SHIFT = 2  # ... and position jitter, in signature pixels (1.5 at most between copies)
SIGNATURE_LOWPASS = 8.0  # sigma of the coarse shading removed from signatures, in signature pixels
# hue of facial skin in neutral light: the angle of (log r/g, log b/g) of the inner face, median over the clean
# calibration photos of docs/intake_quality.md (-32 degrees; the held-out and ../shared clean photos: -26)
SKIN_HUE = math.radians(-32.0)
EYE_PATCH = 0.15  # radius of the patch `_eye_light` reads on each eye, in eye distances: the eye itself, under any lens
WHITE_SIDE = 512  # the photo's brightest tones are read on a copy at least this long (eye whites and catchlights survive)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_EXIF_IFD, _DATE_TIME_ORIGINAL, _DATE_TIME = 0x8769, 0x9003, 0x0132
_EXPOSURE_TIME, _F_NUMBER, _ISO, _FLASH = 0x829A, 0x829D, 0x8827, 0x9209


@dataclass(frozen=True)
class FaceCrop:
    """The face box cut square and resampled to CROP x CROP, with landmarks in crop pixels."""

    rgb: np.ndarray  # (CROP, CROP, 3) float32, 0..255
    grey: np.ndarray  # (CROP, CROP) float32, 0..255
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left and right mouth corner

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


    def skin(self, where: str = "all") -> list[np.ndarray]:
        """Grey patches of bare skin placed by the landmarks: the two cheeks (between the eye and mouth lines,
        outside the nose) and the forehead. `where`: "all", "cheeks" or "forehead"."""
        eye_l, eye_r, _, mouth_l, mouth_r = self.landmarks
        d = self.eye_distance
        across = (eye_r - eye_l) / max(d, 1e-6)  # along the eye line, so a tilted head keeps its patches on skin
        up = np.array([across[1], -across[0]])
        patches = {"cheeks": [(eye_l + mouth_l) / 2 - 0.05 * d * across, (eye_r + mouth_r) / 2 + 0.05 * d * across],
                   "forehead": [(eye_l + eye_r) / 2 + 0.45 * d * up]}
        centres = patches["cheeks"] + patches["forehead"] if where == "all" else patches[where]
        return [p for p in (_patch(self.grey, c, 0.22 * d) for c in centres) if min(p.shape) >= 5]


def face_crop(image: Image.Image, face: Face, size: int = CROP) -> FaceCrop:
    """Square crop around the face box (its longer side), resampled with antialiasing to `size` px."""
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1, 1.0)
    left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    crop = image.crop((round(left), round(top), round(left + side), round(top + side))).resize((size, size), Image.BILINEAR)
    rgb = np.asarray(crop, dtype=np.float32)
    landmarks = (np.asarray(face.landmarks, dtype=np.float32) - (round(left), round(top))) * (size / round(side))
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


def coarse_detail(crop: FaceCrop) -> float:
    """Variance of the Laplacian of the contrast-normalised inner face at half size: the outlines of eyes, nose
    and mouth. Compares faces within one photo (a blurred bystander has far less than the subject)."""
    grey = _inner(crop.grey, 0.8)
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    return _laplacian_variance(grey[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))


DIRECTIONS = 12  # edge directions measured, 15 degrees apart: a smear at any angle has one within 7.5 degrees
_MARGIN = 4  # px left out at each side of the crop, so every shifted sample stays inside


def _shifted(grey: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """grey sampled at (y + dy, x + dx), bilinearly, over the crop less _MARGIN on each side."""
    n, m = grey.shape
    y0, x0 = math.floor(dy), math.floor(dx)
    fy, fx = dy - y0, dx - x0

    def at(oy: int, ox: int) -> np.ndarray:
        return grey[_MARGIN + oy : n - _MARGIN + oy, _MARGIN + ox : m - _MARGIN + ox]

    return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))


def _steps(grey: np.ndarray, k: float) -> list[np.ndarray]:
    """|I(p + k u) - I(p - k u)| for a unit vector u along each of DIRECTIONS angles in [0, 180)."""
    out = []
    for i in range(DIRECTIONS):
        angle = math.pi * i / DIRECTIONS
        dy, dx = k * math.sin(angle), k * math.cos(angle)
        out.append(np.abs(_shifted(grey, dy, dx) - _shifted(grey, -dy, -dx)))
    return out


@dataclass(frozen=True)
class Focus:
    """How steep the face's edges are, whether fine detail was lost along one direction only, and how much fine
    grain its skin keeps. Measured on `detail_crop`."""

    acuity: tuple[float, ...]  # per direction (DIRECTIONS): strongest 1-px step / strongest 3-px step, ~1/3 blurred .. 1 sharp
    anisotropy: float  # 1 - weakest / strongest orientation's fine-detail energy: near 1 when all but one direction lost it
    texture: float  # median grain of bare skin (`_grain`), in percent of the face's mean luminance

    @property
    def sharpest(self) -> float:
        return max(self.acuity)


def detail_crop(image: Image.Image, face: Face) -> FaceCrop:
    """The face at its own resolution up to DETAIL_CROP px (never upsampled: upsampling would blur edges that
    are sharp at the photo's own scale; a small face is the resolution check's business)."""
    x1, y1, x2, y2 = face.box
    return face_crop(image, face, int(min(DETAIL_CROP, max(x2 - x1, y2 - y1, 32.0))))


def _anisotropy(grey: np.ndarray) -> float:
    """Fine-detail energy (spatial frequencies in FINE_BAND, cycles per pixel) per orientation: 1 - weakest /
    strongest of DIRECTIONS orientation bins. Camera shake averages the photo along its path, which removes fine
    detail of every orientation except the one across the path, so one bin keeps its energy and the others lose it
    (measured: clean faces <= ~0.9, smears >= ~0.97); defocus removes every orientation alike."""
    h, w = grey.shape
    windowed = (grey - grey.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.rfft2(windowed)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij")
    radius, angle = np.hypot(fy, fx), np.mod(np.arctan2(fy, fx), np.pi)
    band = (radius > FINE_BAND[0]) & (radius < FINE_BAND[1])
    bins = np.minimum((angle[band] / np.pi * DIRECTIONS).astype(int), DIRECTIONS - 1)
    energy = np.bincount(bins, weights=power[band], minlength=DIRECTIONS) / np.maximum(np.bincount(bins, minlength=DIRECTIONS), 1)
    return float(1.0 - energy.min() / max(float(energy.max()), 1e-9))


def _grain(grey: np.ndarray) -> np.ndarray:
    """Each pixel's deviation from the mean of its 4 neighbours: the finest detail there is."""
    return np.abs(grey[1:-1, 1:-1] - 0.25 * (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]))


def focus(crop: FaceCrop) -> Focus:
    """The physical causes of lost detail, told apart, on a `detail_crop`.

    Acuity: a sharp edge rises within a pixel, so its 1-px step is as high as its 3-px step (ratio ~1); an edge
    spread over 6 px or more has a ratio near 1/3. A ratio of steps is independent of the edge's contrast, so
    light and skin tone leave it be, and the 99th percentile reads the strongest edges (eyes, lips, outline).
    Defocus lowers it along every direction. Camera shake is told by `_anisotropy`. A beauty filter keeps these
    edges (edge-preserving smoothing) and removes the grain of bare skin (cheeks, forehead): its median `_grain`
    relative to the face's mean luminance, in percent (grain and sensor noise scale with the light)."""
    grey = _inner(crop.grey, 0.8)
    acuity = tuple(float(np.percentile(a, 99)) / max(float(np.percentile(b, 99)), 1.0)
                   for a, b in zip(_steps(grey, 1), _steps(grey, 3)))
    skin = crop.skin()
    grain = float(np.median([np.median(_grain(p)) for p in skin])) if skin else 0.0
    return Focus(acuity, _anisotropy(grey), 100.0 * grain / max(float(grey.mean()), 1.0))


@dataclass(frozen=True)
class Exposure:
    """The face's luminance distribution (inner face, 0..255): where its tones sit and what was lost at either end."""

    mean: float
    skin: float  # median luminance of the best-lit bare skin patch (FaceCrop.skin); the photo's median for a photo
    highlights: float  # 95th percentile
    crushed: float  # share of the face at or below luminance CRUSHED: shadows sunk into black
    clipped: float  # share of the face with every channel at or above CLIPPED: blown out to white
    white: float  # 99.9th percentile of each pixel's brightest channel: eye whites, a shirt, a window (a cast keeps one channel)


CRUSHED, CLIPPED = 16.0, 250.0


def exposure(crop: FaceCrop) -> Exposure:
    """Under- and overexposure by what light does to a face, not by its mean: a fair face at 193 with nothing
    clipped is bright, not overexposed; a darker face is judged by its best-lit skin and its shadows, and the
    intake also asks whether the whole scene is dark (`photo_exposure`), since skin tone alone darkens a face."""
    inner, rgb = _inner(crop.grey), _inner(crop.rgb)
    skin = max((float(np.median(p)) for p in crop.skin()), default=float(np.median(inner)))
    return Exposure(float(inner.mean()), skin, float(np.percentile(inner, 95)), float((inner <= CRUSHED).mean()),
                    float((rgb.min(axis=-1) >= CLIPPED).mean()), float(np.percentile(rgb.max(axis=-1), 99.9)))


def photo_exposure(image: Image.Image) -> Exposure:
    """The same over the whole photo (`skin` is the photo's median): was the scene dark, and what the intake can
    still say when light hid the face from the detector. `white` is read on a larger copy (WHITE_SIDE): a well
    exposed photo has something near white, often small (eye whites, catchlights), which a thumbnail averages away;
    a photo that got too little light has nothing there, whatever the person's skin tone."""
    small = np.asarray(image.resize((THUMB * 2, THUMB * 2), Image.BILINEAR), dtype=np.float32)
    grey = small @ _LUMA
    return Exposure(float(grey.mean()), float(np.median(grey)), float(np.percentile(grey, 95)), float((grey <= CRUSHED).mean()),
                    float((small.min(axis=-1) >= CLIPPED).mean()), _white(image))


def _white(image: Image.Image) -> float:
    """99.9th percentile of each pixel's brightest channel, on a copy box-reduced to WHITE_SIDE..2 x WHITE_SIDE
    (PIL in C, ~2 ms: a resample and a numpy max over channels cost 13 ms of the intake's ~120 ms per photo)."""
    factor = max(1, max(image.size) // WHITE_SIDE)
    r, g, b = (image.reduce(factor) if factor > 1 else image).split()
    counts = np.cumsum(ImageChops.lighter(ImageChops.lighter(r, g), b).histogram())
    return float(np.searchsorted(counts, 0.999 * counts[-1]))


def side_light(crop: FaceCrop) -> float:
    """Darker / brighter cheek (median luminance of each cheek's skin patch): low = a shadow across one side. The set
    check compares it with the person's other photos; one photo alone is judged on `side_contrast`, which a tone
    curve cannot fake. Cheeks, not face halves: halves mix in hair, beard and background at the box's edges, which
    blunted the contrast of a real shadow to that of many evenly lit faces (calibration medians 0.66 vs 0.55 on cheeks)."""
    cheeks = crop.skin("cheeks")
    if len(cheeks) < 2:
        return 1.0
    left, right = (float(np.median(p)) for p in cheeks)
    return min(left, right) / max(left, right, 1.0)


def side_contrast(crop: FaceCrop) -> float:
    """How much of the face's own range of light lies between its cheeks: |log(darker / brighter cheek)| over the
    spread of log luminance across its bare skin (10th to 90th percentile; cheeks and forehead). High = one side
    in shadow. A tone curve cannot fake it: a darker exposure and any power-law curve scale every log-luminance
    difference alike, so a dim photo whose curve deepened a mild asymmetry (its cheek ratio fell under the limit)
    keeps the contrast of its well-exposed self, while a light falloff across the face moves the cheeks apart
    more than the face's own shading spreads (held-out side shadows keep a cheek ratio near 0.7, inside the
    spread of clean photos; docs/intake_quality.md)."""
    cheeks, skin = crop.skin("cheeks"), crop.skin("all")
    if len(cheeks) < 2:
        return 0.0
    left, right = (float(np.median(p)) for p in cheeks)
    logs = np.log(np.concatenate([p.ravel() for p in skin]) + 1.0)
    spread = float(np.percentile(logs, 90) - np.percentile(logs, 10))
    return abs(math.log((left + 1.0) / (right + 1.0))) / max(spread, 1e-3)


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


def chromaticity(crop: FaceCrop) -> tuple[float, float]:
    """(log r/g, log b/g) of the inner face's mean colour: the face's colour without its brightness. Coloured light
    adds a constant to it (each channel's own gain); brightness does not move it."""
    r, g, b = (float(v) + 1.0 for v in _inner(crop.rgb).reshape(-1, 3).mean(axis=0))
    return math.log(r / g), math.log(b / g)


def colour_cast(chroma: tuple[float, float]) -> float:
    """How far coloured light turned the face off the hue of skin: the distance of its `chromaticity` from the
    line through neutral grey at SKIN_HUE.

    Coloured light multiplies each channel by its own gain, which adds a constant to the log-chromaticity and
    moves a face off that line, towards orange, green or blue. Skin tone and tone curves move a face along it:
    more melanin, or the deepened mid-tones of a dim or contrast-boosted photo, scale both log ratios alike (the
    same hue, more saturated). A distance from one fixed skin colour, measured before, read those as casts: 16 of
    57 held-out gamma-darkened faces were told "strong colour cast" (docs/intake_quality.md). A tone curve does
    take a face that was a little off the line further off, since it scales the distance too: `colour_turn`. A warm
    lamp moves a face mostly along the line (orange skin looks like tanned skin), so one photo cannot tell it: the
    person's other photos can (train.intake's RELATIVE, "relative_colour")."""
    red, blue = chroma
    return abs(red * math.sin(SKIN_HUE) - blue * math.cos(SKIN_HUE))


def colour_turn(chroma: tuple[float, float]) -> float:
    """Degrees between the face's hue and the hue of skin (SKIN_HUE), seen from neutral grey: 0 on the skin line, 90
    straight off it, up to 180 on the far side of grey.

    A tone curve raises each channel to a power, which multiplies the log-chromaticity: the face moves away from grey
    along its own hue, so its `colour_cast` distance grows with the curve (a held-out face 0.07 off the line read
    0.27 once darkened by one) while this angle stays. Coloured light adds a constant, which turns the hue, but
    less on a face of saturated colour (an orange lamp on darker skin: 18 degrees), so the angle is no measure of a
    cast on its own: train.intake uses it to tell whether a dim photo's tone curve could have made one."""
    red, blue = chroma
    along = red * math.cos(SKIN_HUE) + blue * math.sin(SKIN_HUE)
    return math.degrees(math.atan2(colour_cast(chroma), along))


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


def occlusion(crop: FaceCrop, skin: float) -> tuple[float, float, float]:
    """Share of flat (featureless) pixels around the eyes, share of pixels with detail around the mouth, and how light
    the eyes are against the best-lit bare skin `skin` (`_eye_light`: a lens, tinted ones too).

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
    return eyes, mouth, _eye_light(crop, skin)


def _eye_light(crop: FaceCrop, skin: float) -> float:
    """How light the eyes are against the best-lit bare skin (`Exposure.skin`): the median luminance of a small patch
    on each eye (EYE_PATCH eye distances around its landmark), the lighter eye's (light from the side shades one), over
    the skin's. A bare eye's patch holds its white, its iris and its lids; a lens covers all of it. Tinted sunglasses
    with a metal rim and the sky reflected in them are not flat (`occlusion` reads a bare eye's share of flat pixels on
    them), but they are dark: docs/intake_quality.md."""
    return max(float(np.median(_patch(crop.grey, crop.landmarks[i], EYE_PATCH * crop.eye_distance))) for i in (0, 1)) / max(skin, 1.0)


@dataclass(frozen=True)
class FaceMeasures:
    """Every number the per-photo checks judge, measured once per photo; train.intake turns them into verdicts.

    Kept apart from the verdicts so thresholds can be re-judged on stored measurements (scripts/intake_tune.py)
    without measuring photos again."""

    exposure: Exposure  # of the inner face
    photo_exposure: Exposure  # of the whole photo: light that fell on everything, not on the face alone
    background_to_face: float  # backlight()
    eye_flat: float  # occlusion()
    mouth_detail: float
    focus: Focus  # the inner face, on `detail_crop`
    side_light: float  # side_light(): the cheeks' ratio, which the set check compares with the person's other photos
    side_contrast: float  # side_contrast(): what one photo is judged on
    chroma: tuple[float, float]  # chromaticity(): colour_cast() of it, and the set's relative colour
    pose: Pose
    colour_saturation: float = 1.0  # colour_saturation() of the whole photo (stored before it was measured: colour)
    eye_light: float = 1.0  # occlusion() (stored before it was measured: bare eyes)
    # prepare turns this face's training crop so the eyes are level (train/framing.py: frame_face, under the
    # config's crop margin): a tilt there is fixed, not a reason to retake. False: not turned (under 3 degrees, or
    # the photo's edge leaves no room); None: levelling is off (prepare.level_eyes), or not known (stored before).
    # Not a measure of the photo but of prepare's crop of it, set by train.intake (it has the config).
    levelled: bool | None = None
    scene: SceneLight | None = None  # scene_light() of the photo's file, set by train.intake (None: not in its EXIF)

    @classmethod
    def from_dict(cls, d: dict) -> FaceMeasures:
        """The inverse of dataclasses.asdict, for stored measurements."""
        return cls(exposure=Exposure(**d["exposure"]), photo_exposure=Exposure(**d["photo_exposure"]), pose=Pose(**d["pose"]),
                   focus=Focus(**{**d["focus"], "acuity": tuple(d["focus"]["acuity"])}), chroma=tuple(d["chroma"]),
                   scene=SceneLight(**d["scene"]) if d.get("scene") else None,
                   **{k: d[k] for k in ("background_to_face", "eye_flat", "mouth_detail", "side_light", "side_contrast",
                                        "colour_saturation", "eye_light", "levelled") if k in d})


def measure(image: Image.Image, face: Face) -> FaceMeasures:
    """All of the above for one photo's subject face."""
    crop, detail = face_crop(image, face), detail_crop(image, face)
    light = exposure(crop)
    eye_flat, mouth_detail, eye_light = occlusion(crop, light.skin)
    return FaceMeasures(light, photo_exposure(image), backlight(image, face), eye_flat, mouth_detail, focus(detail),
                        side_light(crop), side_contrast(crop), chromaticity(crop), pose(face), colour_saturation(image), eye_light)


def colour_saturation(image: Image.Image) -> float:
    """How much colour the photo holds: the 99th percentile, over a 256 px copy, of each pixel's saturation
    ((brightest - darkest channel) / brightest), leaving out near-black pixels, whose few levels are mostly
    compression noise. 0 for a black-and-white photo in any file format. Saturation, not the channels' spread,
    because darkness scales the spread down with the light (two darkened calibration photos fell to 9 of 255)
    while their saturation stays. Of the 2,130 photos of the held-out evaluation's two groups (every defect
    included) and the 111 colour photos of ../shared, the lowest is 0.23, an overexposed one; clean ones 0.44 and up. The whole photo, not the face:
    a blown-out face loses its colour, while clothes and background keep theirs. 1.0 (colour: no evidence
    otherwise) when almost the whole photo is black."""
    small = image.copy()
    small.thumbnail((256, 256))
    pixels = np.asarray(small, dtype=np.float32)
    brightest, darkest = pixels.max(axis=2), pixels.min(axis=2)
    lit = brightest >= 24
    if lit.mean() < 0.01:
        return 1.0
    return float(np.percentile((brightest - darkest)[lit] / brightest[lit], 99))


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


@dataclass(frozen=True)
class SceneLight:
    """How much light the scene had, from the settings the camera chose (EXIF): its exposure value at ISO 100,
    EV100 = log2(f_number^2 / seconds) - log2(iso / 100). A phone's auto exposure brightens a dim room's photo to
    look lit, so its pixels cannot tell; its settings can: a long shutter and a high gain, whose noise its noise
    reduction then smooths off the skin (which the pixels read as a beauty filter). One EV is twice the light: dim
    home interiors and candle light are EV 4 and under, lit homes 5-6, offices 7-8, daylight 10 and up."""

    ev100: float
    iso: float
    seconds: float
    f_number: float
    flash: bool  # it fired: the face had the flash's light, not only the scene's

    def said(self) -> str:
        """The settings, as a camera shows them: "ISO 3200, 1/15 s at f/1.8"."""
        shutter = f"1/{1 / self.seconds:.0f}" if self.seconds < 1 else f"{self.seconds:g}"
        return f"ISO {self.iso:.0f}, {shutter} s at f/{self.f_number:g}"


def _exif(path: Path) -> tuple[dict, dict]:
    """The photo's EXIF tags: the main ones, and the Exif IFD's (the camera's settings and dates); both empty where
    it has none or they cannot be read."""
    try:
        with Image.open(path) as image:
            tags = image.getexif()
            return dict(tags), dict(tags.get_ifd(_EXIF_IFD))
    except (OSError, ValueError, SyntaxError):
        return {}, {}


def scene_light(path: Path) -> SceneLight | None:
    """The scene's light from EXIF (`SceneLight`); None where a setting is missing or not a positive number (an
    edited copy, a screenshot, a chat app's copy)."""
    settings = _exif(path)[1]
    try:
        iso = settings[_ISO][0] if isinstance(settings[_ISO], tuple) else settings[_ISO]  # some cameras list several
        seconds, f_number, iso = float(settings[_EXPOSURE_TIME]), float(settings[_F_NUMBER]), float(iso)
        flash = bool(int(settings.get(_FLASH, 0)) & 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (seconds > 0 and f_number > 0 and iso > 0):
        return None
    return SceneLight(round(math.log2(f_number**2 / seconds) - math.log2(iso / 100), 2), iso, seconds, f_number, flash)


def photo_taken(path: Path) -> datetime | None:
    """When the photo was taken, from EXIF (DateTimeOriginal, else DateTime); None when unknown."""
    tags, settings = _exif(path)
    raw = settings.get(_DATE_TIME_ORIGINAL) or tags.get(_DATE_TIME)
    try:
        return datetime.strptime(str(raw).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S") if raw else None
    except ValueError:
        return None
