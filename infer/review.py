"""Automated review of generated headshots: the checks a machine can judge, each with its verdict
and a sentence a person can read. score.py runs them and records every result in scores.json.

    face       exactly one usable face (MTCNN)
    likeness   mean FaceNet similarity to the references >= the person's calibrated threshold
    eyes       both eye landmarks inside the picture, at a plausible distance for the face width
    framing    the face fits the crop: room above and beside it (head not cut off), sensible size
    glasses    glasses or not, as in the selfies (nose-bridge edge heuristic, measured below)
    duplicate  not a near-copy of a better output

Calibration (docs/face_similarity.md): the leave-one-out similarity of a person's own reference
photos is the most a generated image can be expected to reach. With `filter.loo_fraction` = 0.75
(never below the global floor, the weights' calibrated threshold) 79 of 80 held-out real photos of a person still
pass, and other people's photos get through 0.00% of the time instead of 1.60% with the floor alone (0.46).

Glasses: after levelling the eyes and scaling them 64 px apart, the mean vertical gradient on the
nose bridge (16x16 px between the eyes) over the mean gradient of the eye band. A frame's bridge is
a strong horizontal edge where skin is smooth. On the 105 faces of ../shared/faces: glasses 0.64-1.16
(7 photos), no glasses <= 0.52 except one fringe of hair across the bridge (0.70); threshold 0.6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from headshots.config import FilterConfig
from headshots.faces import Detection, Face, cosine_similarity

GLASSES_SHARE = 0.2  # an output's glasses state must appear in at least this share of the selfies
THUMBNAIL = 32  # side of the grey thumbnails compared for near-duplicates


@dataclass(frozen=True)
class Check:
    check: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


# -- likeness threshold ---------------------------------------------------------------------------
def leave_one_out(references: torch.Tensor) -> torch.Tensor:
    """Each reference photo's mean similarity to the other references (empty with fewer than two)."""
    n = references.shape[0]
    if n < 2:
        return torch.empty(0)
    sims = cosine_similarity(references, references)
    return (sims.sum(dim=1) - sims.diagonal()) / (n - 1)


def person_threshold(references: torch.Tensor, floor: float, cfg: FilterConfig) -> float:
    """The bar for this person: a fraction of their own selfie-to-selfie likeness, never below the floor
    (`FaceAnalyzer.similarity_threshold`: the calibrated threshold of the weights in use)."""
    loo = leave_one_out(references)
    if loo.numel() == 0 or cfg.loo_fraction == 0:
        return floor
    return round(max(floor, cfg.loo_fraction * loo.mean().item()), 4)


def likeness_check(similarity: float, threshold: float) -> Check:
    if similarity < threshold:
        return Check("likeness", False, f"does not look like you (similarity {similarity:.2f} < {threshold:.2f})")
    return Check("likeness", True, f"looks like you (similarity {similarity:.2f})")


# -- face, eyes, framing --------------------------------------------------------------------------
def face_check(detection: Detection) -> Check:
    if detection.subject is None:
        return Check("face", False, "no face found")
    if detection.problem == "several_faces":
        return Check("face", False, f"{len(detection.faces)} faces in the picture")
    if detection.problem == "face_too_small":
        return Check("face", False, f"face too small ({detection.subject.side:.0f} px)")
    return Check("face", True, "one face found")


def eyes_check(face: Face, size: tuple[int, int], cfg: FilterConfig) -> Check:
    """Both eyes drawn and visible: MTCNN places eye landmarks even on a turned-away or cut-off face,
    so check they lie in the picture and sit a plausible distance apart (0.40-0.52 of the face
    width on real frontal photos)."""
    if len(face.landmarks) < 2:
        return Check("eyes", False, "eyes not found")
    left, right = face.landmarks[0], face.landmarks[1]
    if not all(0 <= x < size[0] and 0 <= y < size[1] for x, y in (left, right)):
        return Check("eyes", False, "an eye is outside the picture")
    ratio = float(np.hypot(right[0] - left[0], right[1] - left[1])) / (face.box[2] - face.box[0])
    low, high = cfg.eye_distance
    if not low <= ratio <= high:
        return Check("eyes", False, f"eyes implausible (distance {ratio:.2f} of the face width, expected {low:.2f}-{high:.2f})")
    return Check("eyes", True, "both eyes visible")


def framing_check(face: Face, size: tuple[int, int], cfg: FilterConfig) -> Check:
    """The head fits: room above and on both sides of the face box, and a headshot-sized face."""
    x1, y1, x2, _ = face.box
    width = x2 - x1
    margin = cfg.edge_margin * width
    if y1 < margin:
        return Check("framing", False, "head cut off at the top")
    if x1 < margin or size[0] - x2 < margin:
        return Check("framing", False, "head cut off at the side")
    share = width / size[0]
    low, high = cfg.face_width
    # rounded away from the limit, so that a share just past it never reads as meeting it ("12%, at least 12%")
    if share < low:
        return Check("framing", False, f"face too small in the frame ({math.floor(share * 100)}% of the width, at least {low:.0%})")
    if share > high:
        return Check("framing", False, f"face too close ({math.ceil(share * 100)}% of the width, at most {high:.0%})")
    return Check("framing", True, f"face fits the crop ({share:.0%} of the width)")


# -- glasses --------------------------------------------------------------------------------------
def bridge_edge_score(image: Image.Image, face: Face) -> float:
    """Nose-bridge horizontal-edge strength relative to the eye band (see the module docstring).

    Only the eyes' neighbourhood is levelled: a square around their midpoint that holds the levelled box at any
    angle (half-side 1.5 eye distances > the box's corner at sqrt(2)), cut at whole pixels and rotated about the
    same point, so every sample is the one rotating the whole photo would take, at ~1 ms instead of ~14 ms (an
    eye within a box's width of the photo's border reads black beyond it either way, blended a little
    differently)."""
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    distance = max(float(np.hypot(rx - lx, ry - ly)), 1.0)
    cx, cy = (lx + rx) / 2, (ly + ry) / 2
    angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    reach = int(np.ceil(1.5 * distance)) + 2
    ox, oy = round(cx) - reach, round(cy) - reach
    near = image.crop((ox, oy, ox + 2 * reach, oy + 2 * reach)).convert("L")
    level = near.rotate(angle, center=(cx - ox, cy - oy), resample=Image.BILINEAR)
    box = (round(cx - distance) - ox, round(cy - distance) - oy, round(cx + distance) - ox, round(cy + distance) - oy)
    patch = np.asarray(level.crop(box).resize((128, 128), Image.BILINEAR), dtype=float)  # eyes at (32|96, 64)
    dy = np.abs(np.diff(patch, axis=0))[:, :-1]
    dx = np.abs(np.diff(patch, axis=1))[:-1, :]
    band = (dy + dx)[32:96, 16:112].mean() + 1e-6
    return float(dy[56:72, 56:72].mean() / band)


def wears_glasses(edge_score: float, cfg: FilterConfig) -> bool:
    """Glasses, by a face's `bridge_edge_score`."""
    return edge_score >= cfg.glasses_threshold


def glasses_share(edge_scores: list[float | None], cfg: FilterConfig) -> float | None:
    """Share of the selfie crops with glasses, of those with a face found (their `bridge_edge_score`, None without
    one); None when no face was found in any."""
    looks = [wears_glasses(score, cfg) for score in edge_scores if score is not None]
    return round(sum(looks) / len(looks), 3) if looks else None


def glasses_check(wearing: bool, selfie_share: float) -> Check:
    """Consistent if the selfies show this look often enough: someone who wears glasses in some
    selfies may have outputs with and without."""
    if wearing and selfie_share < GLASSES_SHARE:
        return Check("glasses", False, "glasses, but your selfies show none")
    if not wearing and selfie_share > 1 - GLASSES_SHARE:
        return Check("glasses", False, "no glasses, but your selfies show them")
    return Check("glasses", True, "glasses as in your selfies" if wearing else "no glasses, as in your selfies")


# -- near-duplicates ------------------------------------------------------------------------------
def thumbnail_pixels(image: Image.Image) -> np.ndarray:
    """The grey THUMBNAIL x THUMBNAIL picture near-duplicates are told by (uint8: 1 KB, kept with an image's
    measurements)."""
    return np.asarray(image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR), dtype=np.uint8)


def normalised(pixels: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm: the dot product of two is the correlation of the pictures.
    Face embeddings cannot tell duplicates: two different photos of one person reach 0.98."""
    values = pixels.astype(float).ravel()
    values -= values.mean()
    return values / (np.linalg.norm(values) + 1e-9)


def find_duplicates(files: Sequence[str], thumbnails: Sequence[np.ndarray], threshold: float) -> dict[str, str]:
    """{file: better file it duplicates}; `files` come best first, so the first of each group stays."""
    kept: list[int] = []
    duplicates: dict[str, str] = {}
    for i, thumb in enumerate(thumbnails):
        original = next((k for k in kept if float(thumb @ thumbnails[k]) > threshold), None)
        if original is None:
            kept.append(i)
        else:
            duplicates[files[i]] = files[original]
    return duplicates


def duplicate_check(original: str | None) -> Check:
    if original is not None:
        return Check("duplicate", False, f"near-duplicate of {original}")
    return Check("duplicate", True, "no near-duplicate kept")
