"""Where a training crop comes from: the square around a face, turned so the eyes are level when the photo has room.

Prepare cuts its crops with it; intake asks it whether a tilted head will be levelled there (then the tilt is
not worth a retake). Geometry only: no model, no file."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from headshots.faces import Face


def square_crop_box(face: Face, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around the face with `margin` x face size of context on each side, kept inside the
    photo (shifted, then shrunk if the photo is too small). Centred slightly below the face centre
    so the chin and neck are in, as in a headshot."""
    width, height = image_size
    side = min(face.side * (1 + 2 * margin), width, height)
    cx, cy = face.center
    cy += 0.1 * face.side
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    x1, x2 = round(left), round(left + side)
    whole = min(x2 - x1, width, height)  # one side for both: the ends round apart, and a side 1 px longer downwards
    y1 = min(round(top), height - whole)  # took a row past the photo, which the crop filled with black
    return x1, y1, x1 + whole, y1 + whole


# Below this tilt the eye line is within MTCNN's landmark jitter (a few px over a ~60 px eye distance):
# turning would resample the photo, and cost sharpness, for nothing.
LEVEL_MIN_DEGREES = 3.0
# A tilted face near the photo's edge can only be levelled in a smaller square (no pixel is invented):
# below this share of the upright crop's side, the context lost is worth more than level eyes.
LEVEL_MIN_SIDE = 0.8


def _axes(degrees: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The x and y directions, in the photo (y down), of a square turned by `degrees` counter-clockwise."""
    t = math.radians(degrees)
    return (math.cos(t), math.sin(t)), (-math.sin(t), math.cos(t))


@dataclass(frozen=True)
class Framing:
    """Where a training crop comes from: a square of `side` px centred at `centre` in the photo, turned by
    `degrees` (counter-clockwise) about its centre, so that a tilted head or camera gives a crop with level eyes."""

    centre: tuple[float, float]
    side: float
    degrees: float = 0.0

    @property
    def box(self) -> list[int]:
        """The square before turning, in photo pixels (as prepare_report.json records it)."""
        (cx, cy), half = self.centre, self.side / 2
        return [round(cx - half), round(cy - half), round(cx + half), round(cy + half)]

    def cut(self, image: Image.Image, resolution: int) -> Image.Image:
        """The crop at `resolution` px: the square's region is turned at the photo's own scale (bicubic), then
        reduced once (Lanczos), so a large photo is not resampled twice at the small size."""
        if self.degrees == 0.0:
            return image.crop(tuple(self.box)).resize((resolution, resolution), Image.LANCZOS)
        (cx, cy), (xaxis, _) = self.centre, _axes(self.degrees)
        reach = self.side / 2 * (abs(xaxis[0]) + abs(xaxis[1])) + 2  # half the turned square's bounding box
        left, top = max(math.floor(cx - reach), 0), max(math.floor(cy - reach), 0)
        region = image.crop((left, top, min(math.ceil(cx + reach), image.width), min(math.ceil(cy + reach), image.height)))
        turned = region.rotate(self.degrees, resample=Image.BICUBIC, center=(cx - left, cy - top))
        x0, y0, side = round(cx - left - self.side / 2), round(cy - top - self.side / 2), round(self.side)
        # cut first, then reduce: Lanczos reads a few px past a `box`, where the turn left black
        return turned.crop((x0, y0, x0 + side, y0 + side)).resize((resolution, resolution), Image.LANCZOS)

    def face_box(self, face: Face) -> list[float]:
        """The face's box in the crop, 0..1 (the box is the detector's, turned with the crop about the face)."""
        xaxis, yaxis = _axes(self.degrees)
        dx, dy = face.center[0] - self.centre[0], face.center[1] - self.centre[1]
        u = (dx * xaxis[0] + dy * xaxis[1]) / self.side + 0.5
        v = (dx * yaxis[0] + dy * yaxis[1]) / self.side + 0.5
        x1, y1, x2, y2 = face.box
        half_w, half_h = (x2 - x1) / 2 / self.side, (y2 - y1) / 2 / self.side
        return [u - half_w, v - half_h, u + half_w, v + half_h]


def eye_line_degrees(face: Face) -> float:
    """The eye line's angle from horizontal, positive when the right-hand eye in the photo is lower."""
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def _largest_half_side(centre: tuple[float, float], degrees: float, image_size: tuple[int, int], inset: float = 2.0) -> float:
    """Half the side of the largest square at `centre`, turned by `degrees`, whose corners stay `inset` px inside
    the photo (bicubic turning reads 2 px around each point)."""
    t = math.radians(degrees)
    (cx, cy), (width, height) = (centre[0] - inset, centre[1] - inset), (image_size[0] - 2 * inset, image_size[1] - 2 * inset)
    limits = []
    for a in (-1, 1):
        for b in (-1, 1):  # corner a * x-axis + b * y-axis, per unit of half side
            for start, reach, end in ((cx, a * math.cos(t) - b * math.sin(t), width), (cy, a * math.sin(t) + b * math.cos(t), height)):
                if reach > 1e-9:
                    limits.append((end - start) / reach)
                elif reach < -1e-9:
                    limits.append(start / -reach)
    return max(min(limits), 0.0)


def frame_face(face: Face, image_size: tuple[int, int], margin: float, level: bool = True) -> Framing:
    """The training crop for `face`: the upright square of `square_crop_box`, or, when the eye line is tilted
    (`level`) and the photo has room, a square turned so the eyes are level. Like the upright one, the turned
    square sits a little below the face centre (along the face's own axis), moves off-centre when the photo's
    edge is near, and shrinks rather than reach past it; if it would still lose more than LEVEL_MIN_SIDE of the
    upright crop's side, the upright crop is used."""
    x1, y1, x2, y2 = square_crop_box(face, image_size, margin)
    upright = Framing(((x1 + x2) / 2, (y1 + y2) / 2), float(x2 - x1))
    degrees = eye_line_degrees(face) if level else 0.0
    if abs(degrees) < LEVEL_MIN_DEGREES:
        return upright
    turned = _turned_square(face, image_size, margin, degrees)
    return turned if turned.side >= LEVEL_MIN_SIDE * upright.side else upright


def _turned_square(face: Face, image_size: tuple[int, int], margin: float, degrees: float) -> Framing:
    """The largest square (up to the margin's side) turned by `degrees` that stays in the photo, its centre moved
    as little as that allows and never so far that the face leaves it (a tenth of the face's size to spare): a
    9 x 9 search of shifts along the square's own axes (cheap: each is a few multiplications)."""
    (xx, xy), (yx, yy) = _axes(degrees)
    want = face.side * (1 + 2 * margin) / 2
    below = 0.1 * face.side  # the headshot's centre: a little below the face's, for chin and neck
    best = None
    for sx in (float(v) for v in np.linspace(-want, want, 9)):
        for sy in (float(v) for v in np.linspace(-want, want, 9)):
            centre = (face.center[0] + sx * xx + (below + sy) * yx, face.center[1] + sx * xy + (below + sy) * yy)
            half = min(want, _largest_half_side(centre, degrees, image_size))
            if max(abs(sx), abs(sy)) > max(half - 0.6 * face.side, 0.0):
                continue  # moved so far that the face would not be inside with room to spare
            key = (round(half, 1), -math.hypot(sx, sy))
            if best is None or key > best[:2]:
                best = (*key, Framing(centre, 2 * half, degrees))
    return best[2]  # the unshifted centre always qualifies
