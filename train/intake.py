"""Intake stage: the quality gate a selfie set passes before anything is trained on it.

Reads   data/users/<user>/selfies/*          (never modified)
Writes  data/users/<user>/intake.json         every photo: measured values per check, verdict, reason, advice;
                                              the set: verdict, usable count, what to add
        data/users/<user>/intake.html         thumbnails with the face box and the advice next to each

Each photo is ok, warn (usable, could be better) or reject (not used); the set is rejected when too
few photos are usable or it shows two people. The command exits non-zero when the set is not usable.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from headshots import quality
from headshots.config import Config, IntakeConfig
from headshots.errors import HeadshotsError, ImageError
from headshots.faces import Face, FaceAnalyzer
from headshots.images import A_FOLDER, as_the_camera_saved_it, load_rgb, original_size, transparent_share
from headshots.logs import plural, printable
from headshots.workspace import Workspace, held_alone, write_json_atomic, write_text_atomic
from train.framing import frame_face
from train.intake_report import print_table, render_html, thumbnail_uri

OK, WARN, REJECT = "ok", "warn", "reject"
_RANK = {OK: 0, WARN: 1, REJECT: 2}
MORE_LIGHT = "Move near a window facing you, or turn on more lights."  # the advice for every kind of too little light
# Darker / brighter cheek below which a side light is called a harsh shadow (wording only): 65 of the 87 calibration
# side shadows the intake names sit below it, 5 of the 6 clean calibration photos it warns of above it (stored results)
HARSH_SHADOW = 0.6
# A colour cast whose hue is turned less than this from skin's (`quality.colour_turn`, degrees) a dim photo's tone curve
# could have made, by deepening a colour a little off the skin line: the clean calibration photos' 95th percentile (18.7)
TONE_CURVE_TURN = 19.0
MAX_WORKERS = 4  # photo-checking threads: more add nothing on top of torch's own threads (docs/benchmarks.md, Intake)
CUT_OUT, ALL_TRANSPARENT = 0.05, 0.95  # transparent share of an image (headshots.images.transparent_share): a cut-out; nothing
RELATIVE_MIN_PHOTOS = 4  # faces a set needs before its medians stand for the person (their skin tone, their skin's grain)
# Checks in causal order: when several rejections fire, the verdict leads with the earliest, the one that explains the
# others (light or a cover that hid the face explains "no face found"; a tiny face explains lost detail; a cover or a
# smear explains lost focus and texture).
CAUSES = ("decode", "exposure", "occlusion", "face", "resolution", "backlight", "motion_blur", "sharpness", "side_light",
          "colour_cast", "filter", "pose", "duplicate", "identity", "age")
# Warnings are independent findings (a tilt, a shadow, a colour, smoothed skin, a date, a pixel count: `judge` already
# withholds one that an earlier cause would fake), so they lead by how far each is past its limit (`Check.excess`):
# a limit sits at the edge of clean photos, so a photo's real, mild tilt just past it does not hide the strong
# smoothing or colour cast it also has, nor the other way round. Ties keep the causal order. Low resolution comes
# after the rest (`_warning_tier`): they ask for a new photo, and a new photo from the phone has its full pixels
# too, while sending the original fixes only the pixels. Except smoothed skin, which few pixels can fake (a
# downscaled face loses its grain): between those two, the one further past its limit leads. A warning the whole set
# shares comes after those particular to the photo (`share_warnings`).
SIDEWAYS = ("photo on its side (the face is upright only when it is turned)",
            "Turn it upright in your phone's photo editor (Rotate), then add it again.")
FACE_PROBLEMS = {
    "no_face": ("no face found", ("Make sure your whole face is in the picture, well lit, uncovered (no sunglasses, mask or hand "
                                  "over it) and facing the camera, and fills a good part of it (a face far off in a large photo is "
                                  "too small to find: step closer, or crop the photo around you).")),
    "several_faces": ("more than one face", "Take a photo of you alone, or crop the other people out."),
    "face_too_small": ("face too small", "Step closer or zoom in: your face should fill about a third of the frame."),
}
# A face this much of the photo's shorter side is framed as a selfie is: too few pixels then means the photo was made
# small (a thumbnail, a copy from a chat), not taken from afar, and stepping closer would not help
FRAMED_CLOSE = 0.2
# low resolution in the camera's own file (as_the_camera_saved_it): there is no larger original to send
OLD_CAMERA = "This is already the camera's own file: take one closer, or with more pixels (a recent phone's main camera)."
THUMBNAIL = ("Send the original photo, as your phone or camera saved it, not a thumbnail or a copy made smaller "
             "(chat apps and screenshots shrink photos).")


@dataclass
class Check:
    """One measured property of a photo and what it means."""

    status: str  # ok | warn | reject
    value: dict
    reason: str | None = None
    advice: str | None = None
    excess: float = 1.0  # how far a fired warning's measure is past its limit, as a multiple of it: orders warnings


@dataclass
class PhotoReport:
    file: str
    verdict: str = OK
    reason: str | None = None
    advice: list[str] = field(default_factory=list)
    face_box: list[float] | None = None  # x1, y1, x2, y2 as fractions of the (upright) photo
    other_faces: list[list[float]] = field(default_factory=list)  # "more than one face": those beside yours, as face_box
    checks: dict[str, Check] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)  # warnings every usable photo of the set has (`share_warnings`)

    def problems(self) -> list[tuple[str, Check]]:
        """Checks that fired, the verdict's severity first: rejections in causal order (CAUSES), then warnings, those
        particular to this photo before those the whole set shares, then by `_warning_tier` (what another warning
        may explain after it; low resolution last), each group the furthest past its limit first."""
        fired = [(name, c) for name, c in self.checks.items() if c.status != OK]
        return sorted(fired, key=lambda nc: (-_RANK[nc[1].status], nc[1].status == WARN and nc[0] in self.shared,
                                             self._warning_tier(*nc),
                                             -nc[1].excess if nc[1].status == WARN else 0.0,
                                             _causal(nc[0])))

    def _warning_tier(self, name: str, check: Check) -> int:
        """0 for most warnings. 1 for a colour cast the dim light may have made (`_deepened_by_dim_light`): said after
        the findings of their own. 2 for low resolution, and smoothed skin when low resolution is further past its
        limit (then it may be what lost the grain): said after the warnings a new photo fixes, since the phone's new
        photo has its full pixels too."""
        if check.status != WARN:
            return 0
        if name == "colour_cast" and self._deepened_by_dim_light(check):
            return 1
        low = self.checks.get("resolution")
        if low is None or low.status != WARN:
            return 0
        return 2 if name == "resolution" or (name == "filter" and low.excess >= check.excess) else 0

    def _deepened_by_dim_light(self, cast: Check) -> bool:
        """A colour cast on a face the dim-light warning names, its hue still near skin's (under TONE_CURVE_TURN): a dim
        photo's tone curve deepens the face's colour, which takes a face a little off the skin line further off (two
        held-out darkened faces were told "strong colour cast" first); coloured light turns the hue. Daylight, the
        advice of both, fixes both."""
        exposure, turn = self.checks.get("exposure"), cast.value.get("turn")
        return exposure is not None and exposure.status == WARN and turn is not None and turn < TONE_CURVE_TURN

    @property
    def lead(self) -> tuple[str, str] | None:
        """(check, reason) of the problem the verdict leads with; None for a good photo."""
        problems = self.problems()
        return (problems[0][0], problems[0][1].reason or "") if problems else None

    @classmethod
    def from_checks(cls, file: str, checks: dict[str, dict]) -> PhotoReport:
        """A report from stored checks (intake.json's, or the evaluation scripts' results): the inverse of asdict."""
        report = cls(file)
        for name, check in checks.items():
            report.add(name, Check(**check))
        return report

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check
        self._summarise()

    def share(self, names: list[str]) -> None:
        """Mark warnings the whole set shares, so that the reason leads with what is particular to this photo."""
        self.shared = list(names)
        self._summarise()

    def _summarise(self) -> None:
        problems = [c for _, c in self.problems()]
        self.verdict = problems[0].status if problems else OK
        self.reason = "; ".join(c.reason for c in problems) or None
        self.advice = list(dict.fromkeys(c.advice for c in problems if c.advice))


@dataclass
class Measured:
    """What the set-level checks need from a photo with a usable face."""

    face_image: Image.Image  # the face box cut out: all FaceNet needs, far smaller than the photo
    face: Face  # in face_image's coordinates
    thumbnail: np.ndarray
    signature: np.ndarray
    smile: float
    face_measures: quality.FaceMeasures  # what the per-photo verdicts were judged on (scripts/intake_tune.py re-judges them)

    @property
    def pose(self) -> quality.Pose:
        return self.face_measures.pose

    @property
    def brightness(self) -> float:
        return self.face_measures.exposure.mean


@dataclass
class SetReport:
    verdict: str
    usable: int
    total: int
    reason: str | None = None
    advice: list[str] = field(default_factory=list)


@dataclass
class IntakeResult:
    user: str
    photos: list[PhotoReport]
    set: SetReport
    previews: dict[str, str] = field(default_factory=dict, repr=False)  # file -> 240 px JPEG data URI (not in the JSON)

    def to_json(self) -> dict:
        return {"user": self.user, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "set": asdict(self.set),
                "photos": [asdict(p) for p in self.photos]}


Timings = dict[str, float]
_TIMINGS_LOCK = threading.Lock()  # photos are checked on several threads


@contextmanager
def _timed(timings: Timings | None, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if timings is not None:
        with _TIMINGS_LOCK:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _causal(name: str) -> int:
    """A check's place in the causal order (checks outside it last)."""
    return CAUSES.index(name) if name in CAUSES else len(CAUSES)


def _check(bad: bool, value: dict, reason: str, advice: str, severity: str = REJECT, excess: float = 1.0) -> Check:
    return Check(severity, value, reason, advice, _r(excess)) if bad else Check(OK, value)


def _over(value: float, limit: float) -> float:
    """How many times a measure that must stay below `limit` exceeds it."""
    return value / max(limit, 1e-9)


def _under(value: float, limit: float) -> float:
    """How many times a measure that must stay above `limit` falls short of it."""
    return limit / max(value, 1e-9)


def _r(value: float) -> float:
    """3 decimals, and never "-0.0" (a set check's rise of -0.0001 was shown so on the intake page)."""
    return round(float(value), 3) + 0.0


# -- per photo ---------------------------------------------------------------------------------
def _size_needed(cfg: Config) -> str:
    """The smallest face, and photo, that pass both detection and the resolution check's rejection: the crop, the
    face with prepare.crop_margin on each side and never wider than the photo, at least intake.min_crop_fraction x
    model.resolution. Said where a face fills a photo that is too small ("at least 74 px, in a photo of 205 px")."""
    crop = math.ceil(cfg.intake.min_crop_fraction * cfg.model.resolution)
    face = max(cfg.face.min_face_px, math.ceil(crop / (1 + 2 * cfg.prepare.crop_margin)))
    return f"at least {face} needed" + (f", in a photo at least {crop} px on its shorter side" if crop > face else "")


def resolution_check(crop: float, cfg: Config, camera_file: bool = False) -> Check:
    """The training crop's side in the photo's own pixels (`frame_face`'s square: face plus prepare.crop_margin on
    each side, shrunk where the photo's edge is near) vs model.resolution: how far prepare will enlarge it.
    `camera_file` (`as_the_camera_saved_it`): the file is already the original, so only a closer or a larger photo helps."""
    value = {"crop_px": round(crop), "needed_px": cfg.model.resolution}
    if crop < cfg.intake.min_crop_fraction * cfg.model.resolution:
        return Check(REJECT, value, f"too low resolution (the square around your face is {crop:.0f} px; training uses {cfg.model.resolution})",
                     OLD_CAMERA if camera_file else
                     "Use the original photo from your phone, not a screenshot or a messaging-app copy, and step closer.")
    if crop < cfg.intake.warn_crop_fraction * cfg.model.resolution:
        return Check(WARN, value, f"low resolution (the square around your face is {crop:.0f} px; it will be enlarged to {cfg.model.resolution})",
                     OLD_CAMERA if camera_file else "Send the original full-size photo, or take one a little closer.",
                     _r(_under(crop, cfg.intake.warn_crop_fraction * cfg.model.resolution)))
    return Check(OK, value)


def judge(m: quality.FaceMeasures, cfg: IntakeConfig, cut_out: float = 0.0) -> dict[str, Check]:
    """The verdicts on one face's measurements, in causal order.

    A check is judged only when no cause listed before it fired that would fake it: crushed or blown-out light
    flattens detail, texture and colour and hides the eyes; a cover (rejected already: the photo is retaken anyway)
    brings straight edges that read as a smear and hides the cheeks that light and texture are read on; a smear
    or defocus lowers texture and mixes colours. So the advice names the cause, not its symptoms, and the verdict
    leads with it. `cut_out`: the photo's transparent share (`transparent_share`): white fill, not light, surrounds
    a cut-out's face, so it is named instead of light from behind. Pure: scripts/intake_tune.py re-judges stored
    measurements with other thresholds."""
    checks: dict[str, Check] = {}
    if cut_out >= CUT_OUT:
        checks["backlight"] = Check(WARN, {"transparent": _r(cut_out)}, "a cut-out: part of the photo is transparent",
                                    "Send the photo as it was taken, background and all: the adapter learns your face "
                                    "from the real light around it.")
    else:
        checks["backlight"] = _check(m.background_to_face > cfg.max_backlight, {"background_to_face": _r(m.background_to_face)},
                                     "backlit: bright behind you, face in shadow",
                                     "Turn around so the window or sun is in front of you, not behind.", WARN,
                                     _over(m.background_to_face, cfg.max_backlight))
    one_sided = m.side_contrast > cfg.max_side_contrast  # a shadow across one side darkens face and frame: side light's to say
    covering = _covered(m.eye_flat, m.mouth_detail, cfg, m.eye_light, m.exposure.skin)  # black lenses are black in any light: the cover's to say
    checks["exposure"] = _exposure_check(m.exposure, m.photo_exposure, cfg, one_sided, m.scene, "eyes" in covering)
    if checks["exposure"].reason == "face too dark" and checks["backlight"].status != OK and cut_out < CUT_OUT:
        checks["exposure"].advice = checks["backlight"].advice  # the light behind is what to change
    lit = checks["exposure"].status != REJECT  # dim but not crushed: detail, colour and texture still read true
    covered = covering if lit else []
    checks["occlusion"] = _occlusion_check(m.eye_flat, m.mouth_detail, covered, m.eye_light)
    bare = lit and not covered
    shaken = bare and m.focus.anisotropy > cfg.max_anisotropy
    checks["motion_blur"] = _check(shaken, {"anisotropy": _r(m.focus.anisotropy)},
                                   "blurred by movement", "Hold the phone still with both hands (or lean on something) and use more light.")
    soft = bare and not shaken and m.focus.sharpest < cfg.min_acuity
    checks["sharpness"] = _check(soft, {"acuity": _r(m.focus.sharpest)}, "face out of focus",
                                 "Tap your face on the screen to focus, and make sure the lens is clean.")
    clear = bare and not (shaken or soft)  # lit, uncovered, sharp: the finer checks below judge only such a face
    # read on the skin's spread of light, which blur narrows: judged on a sharp face only
    checks["side_light"] = _check(m.side_contrast > cfg.max_side_contrast and clear,
                                  {"dark_to_bright": _r(m.side_light), "side_contrast": _r(m.side_contrast)},
                                  _side_shadow(m.side_light), "Face the window or light instead of having it beside you.", WARN,
                                  _over(m.side_contrast, cfg.max_side_contrast))
    checks["colour_cast"] = _colour_check(m, cfg, clear)
    # landmarks of covered eyes are the detector's guesses
    checks["pose"] = _pose_check(m.pose, m.levelled, cfg) if "eyes" not in covered else Check(OK, {})
    # fine skin texture gone while the edges stay sharp: smoothed by a filter, not out of focus (nor a mask), nor by
    # the noise reduction of a camera that took a dim scene at a high gain (its EXIF says so: the light is to fix)
    smoothed = clear and not _dim_scene(m.scene, cfg) and m.focus.texture < cfg.min_texture
    checks["filter"] = _check(smoothed, {"texture": _r(m.focus.texture)},
                              "skin looks smoothed (beauty filter or heavy processing)",
                              "Turn off beauty mode and filters; send the photo as the camera took it.", WARN,
                              _under(m.focus.texture, cfg.min_texture))
    return checks


def _side_shadow(dark_to_bright: float) -> str:
    """How a side light found by its contrast is said: "harsh" only when the shadowed cheek gets under HARSH_SHADOW of
    the lit cheek's light. A face with flat, even skin reaches the contrast limit with cheeks 0.78 apart (two clean
    held-out photos in soft side light), where "harsh" would overstate it."""
    return "harsh shadow on one side of the face" if dark_to_bright < HARSH_SHADOW else "one side of the face in shadow (light from the side)"


def _colour_check(m: quality.FaceMeasures, cfg: IntakeConfig, clear: bool) -> Check:
    """Coloured light on a sharp, lit face; or a black-and-white photo, which has no hue to judge (beside the
    person's colour photos it would read as coloured light) and none for the adapter to learn skin and hair from."""
    if m.colour_saturation < cfg.min_colour_saturation:
        return _check(True, {"colour_saturation": _r(m.colour_saturation)}, "black-and-white photo",
                      "Send it in colour: the adapter learns your skin and hair colour from your photos.", WARN,
                      _under(max(m.colour_saturation, 0.01), cfg.min_colour_saturation))
    cast = quality.colour_cast(m.chroma)
    return _check(cast > cfg.max_colour_cast and clear, {"cast": _r(cast), "turn": round(quality.colour_turn(m.chroma), 1)},
                  "strong colour cast",
                  "Use daylight rather than coloured or warm indoor lamps, and no colour filters.", WARN,
                  _over(cast, cfg.max_colour_cast))


def _dim_scene(scene: quality.SceneLight | None, cfg: IntakeConfig) -> bool:
    """The camera's settings say the scene had too little light, and no flash lit the face."""
    return scene is not None and not scene.flash and scene.ev100 < cfg.min_scene_ev


def _exposure_check(face: quality.Exposure | None, photo: quality.Exposure, cfg: IntakeConfig, one_sided: bool = False,
                    scene: quality.SceneLight | None = None, eyes_hidden: bool = False) -> Check:
    """Underexposed: the face's best-lit skin is dark while the photo is dark too (a dark face in a well-lit
    photo is the person's skin tone, or light behind them: `backlight`), or its shadows sink into black; unless
    the darkness is `one_sided` (a shadow across one cheek) and the best-lit skin still gets half the light it
    needs: then the light from one side is the cause, and side light says so. Overexposed: part of the face is
    blown out to white, not merely bright. Dim (a warning): the face is not bright and nothing in the whole photo
    comes near white in any channel; a photo that got enough light has something there (eye whites, a shirt, a
    window), whatever the person's skin tone, so this tells a dim room from darker skin where the face's own light
    cannot; or the face's shadows sink into black (a dim photo's tone curve and noise floor take them, where a
    darker face in good light keeps them: Georgia Tech s02 has 0.1% of its face there, the limit 2.5%). Not when the
    darkness is `one_sided`: light from one side darkens half the frame, and side light says so. Dim too, however
    bright the face: the camera's settings say the scene had little light (`scene`, `quality.SceneLight`: a phone
    brightens a dim room's photo, and smooths the noise of it off the skin). Without a face (`face` None), the
    photo alone: even its brightest tones dark, or much of it blown out, is what hid the face. With the eyes
    covered by something flat (`eyes_hidden`), the face's share in black is not read as light at all: black
    sunglasses put a third of a sunlit face there (Georgia Tech faces with black lenses drawn on were rejected as
    "face too dark", and two clean blind-check photos at the beach too), and the cover is named instead."""
    if face is None:
        value = {"photo_light": _r(photo.skin), "photo_highlights": _r(photo.highlights), "photo_clipped": _r(photo.clipped)}
        if photo.highlights < cfg.min_skin_light:
            return Check(REJECT, value, "photo too dark", MORE_LIGHT)
        if photo.clipped > cfg.max_photo_clipped:
            return Check(REJECT, value, "photo overexposed", "Step out of direct sun and turn the flash off; soft daylight is best.")
        return Check(OK, value)
    value = {"brightness": _r(face.mean), "skin_light": _r(face.skin), "photo_light": _r(photo.skin), "crushed": _r(face.crushed),
             "clipped": _r(face.clipped), "photo_white": _r(photo.white), **({"scene_ev": scene.ev100} if scene else {})}
    crushed = 0.0 if eyes_hidden else face.crushed
    dark = (face.skin < cfg.min_skin_light and photo.skin < cfg.min_photo_light) or crushed > cfg.max_crushed
    if dark and not (one_sided and face.skin >= cfg.min_skin_light / 2):
        return Check(REJECT, value, "face too dark", MORE_LIGHT)
    if face.clipped > cfg.max_clipped:
        return Check(REJECT, value, "face overexposed", "Step out of direct sun and turn the flash off; soft daylight is best.")
    if face.skin < cfg.dim_skin_light and not one_sided:
        no_white, shadows = _under(photo.white, cfg.min_photo_white), _over(crushed, cfg.dim_crushed)
        if max(no_white, shadows) > 1:
            reason = ("face and photo dark (nothing in it near white: too little light)" if no_white >= shadows
                      else "face dark, its shadows sunk into black (too little light)")
            return Check(WARN, value, reason, MORE_LIGHT, _r(min(_under(face.skin, cfg.dim_skin_light), max(no_white, shadows))))
    if _dim_scene(scene, cfg):  # excess: how many times less light than the limit's (one EV is twice the light)
        return Check(WARN, value, f"taken in dim light (the camera needed {scene.said()})", MORE_LIGHT,
                     _r(2.0 ** (cfg.min_scene_ev - scene.ev100)))
    return Check(OK, value)


def _pose_check(p: quality.Pose, levelled: bool | None, cfg: IntakeConfig) -> Check:
    """A turned or up/down-tilted head, or a tilt prepare does not fix: one it levels in the training crop
    (`levelled`) is named only past `max_levelled_roll`, where the levelled crop's neck and shoulders slant. Where
    only the photo's edge kept it from levelling (False, not None: levelling off), room around the head is the fix."""
    value = {"yaw": _r(p.yaw), "pitch": _r(p.pitch), "roll": _r(p.roll), "levelled": levelled}
    roll_limit = max(cfg.max_levelled_roll, cfg.max_roll) if levelled else cfg.max_roll
    problems = []
    if abs(p.yaw) > cfg.max_yaw:
        problems.append(("head turned to the side", "Face the camera: turn your head towards the lens."))
    if not cfg.min_pitch <= p.pitch <= cfg.max_pitch:
        problems.append(("head tilted up or down", "Hold the camera at eye level and look straight into it."))
    if abs(p.roll) > roll_limit:
        room_would_fix = levelled is False and abs(p.roll) <= cfg.max_levelled_roll
        problems.append(("head or camera tilted", "Keep your head upright and hold the phone straight" + (
            ", or leave room around your head (a tilt is straightened in the crop when the photo has room for it)."
            if room_would_fix else ".")))
    if not problems:
        return Check(OK, value)
    centre, half = (cfg.max_pitch + cfg.min_pitch) / 2, (cfg.max_pitch - cfg.min_pitch) / 2
    excess = max(_over(abs(p.yaw), cfg.max_yaw), _over(abs(p.pitch - centre), half), _over(abs(p.roll), roll_limit))
    return Check(WARN, value, ", ".join(r for r, _ in problems), " ".join(a for _, a in problems), _r(excess))


def why_no_face(image: Image.Image, doubted: list[Face], cfg: IntakeConfig) -> dict[str, Check]:
    """What hid the face when none was found, so the person hears the cause rather than "no face found".

    A face MTCNN found but doubted (`FaceAnalyzer.doubted_faces`, most likely subject first) is judged like a
    face: light on it (too dark, blown out), else a cover over its eyes or mouth. Then, with or without one, the
    photo as a whole: crushed or blown out light. The doubted "face" may be a patch the light left readable (hair,
    a shadowed collar) while the face went white: half the photo blown out is what hid it all the same (5 of the
    10 overexposed calibration copies that were told only "no face found", docs/intake_quality.md). Else nothing
    is claimed."""
    photo = quality.photo_exposure(image)
    checks: dict[str, Check] = {}
    if doubted:
        crop = quality.face_crop(image, doubted[0])
        light = quality.exposure(crop)
        eye_flat, mouth_detail, eye_light = quality.occlusion(crop, light.skin)
        covered = _covered(eye_flat, mouth_detail, cfg, eye_light, light.skin)
        exposure = _exposure_check(light, photo, cfg, eyes_hidden="eyes" in covered)
        if exposure.status != OK:
            return {"exposure": exposure}
        checks["occlusion"] = _occlusion_check(eye_flat, mouth_detail, covered, eye_light)
        if checks["occlusion"].status != OK:
            return checks
    exposure = _exposure_check(None, photo, cfg)
    if exposure.status != OK:
        checks["exposure"] = exposure
    return checks


def _on_its_side(image: Image.Image, analyzer: FaceAnalyzer, cfg: Config) -> bool:
    """A photo stored sideways without the EXIF note that turns it (a screenshot, an app's export): MTCNN finds no
    upright face, and "make sure your whole face is in the picture" would be the wrong advice. Asked only of photos
    with no face and no other cause, so it costs the others nothing."""
    return any(analyzer.detect(image.rotate(angle, expand=True), max_side=cfg.intake.detect_max_side).ok for angle in (90, 270))


def _covered(eye_flat: float, mouth_detail: float, cfg: IntakeConfig, eye_light: float, skin: float) -> list[str]:
    """What covers the face: eyes flat (a hand, a band, black lenses) or dark against the best-lit skin (`skin`; a lens,
    a tinted one too: `quality.occlusion`); a mouth without detail (a mask, a hand). Dark eyes are read as a lens only on
    skin bright enough for the dim-light warning to leave it be (`dim_skin_light`): a dim photo's tone curve deepens
    the eyes against the skin as it deepens every shadow (held-out darkened copies down to 0.15 of it), so there the
    light is what exposure judges."""
    lens = skin >= cfg.dim_skin_light and eye_light < cfg.min_eye_light
    return [part for part, bad in (("eyes", eye_flat > cfg.max_eye_flat or lens), ("mouth", mouth_detail < cfg.min_mouth_detail)) if bad]


def _occlusion_check(eye_flat: float, mouth_detail: float, covered: list[str], eye_light: float) -> Check:
    return _check(bool(covered), {"eye_flat": _r(eye_flat), "eye_light": _r(eye_light), "mouth_detail": _r(mouth_detail)},
                  f"{' and '.join(covered)} covered",
                  "Take off sunglasses, masks and hats, and keep hands and hair away from your face.")


def age_check(path: Path, cfg: IntakeConfig, now: datetime) -> Check:
    taken = quality.photo_taken(path)
    if taken is None:
        return Check(OK, {"taken": None})
    years = (now - taken).days / 365.25
    return _check(years > cfg.max_age_years, {"taken": taken.isoformat(), "years": round(years, 1)},
                  f"taken {years:.0f} years ago", "Use recent photos (from the last year or two) so the result looks like you now.", WARN,
                  _over(years, cfg.max_age_years))


def assess_photo(path: Path, analyzer: FaceAnalyzer, cfg: Config, now: datetime,
                 timings: Timings | None = None) -> tuple[PhotoReport, Measured | None, str | None]:
    """All per-photo checks, plus what the set checks and the HTML page need; never raises for a bad file."""
    report = PhotoReport(path.name)
    with _timed(timings, "decode"):
        try:
            image = load_rgb(path, draft_side=cfg.intake.decode_side)
            width, height = original_size(path)
            scale = max(width, height) / max(image.size)
        except ImageError as exc:
            report.add("decode", Check(REJECT, {}, exc.message.split(": ", 1)[-1], exc.hint))
            return report, None, None
    with _timed(timings, "preview"):
        preview = thumbnail_uri(image)
    if min(width, height) < cfg.face.min_face_px:  # not even a usable face would fit: a thumbnail, an icon, a strip
        report.add("decode", Check(REJECT, {"width": width, "height": height}, f"image too small ({width} x {height} px)", THUMBNAIL))
        return report, None, preview
    cut_out = transparent_share(path)
    if cut_out >= ALL_TRANSPARENT:  # flattened onto white: "overexposed, no face found" would send them into the shade
        report.add("decode", Check(REJECT, {"transparent": _r(cut_out)}, "the image is (almost) all transparent",
                                   "Send the photo itself, not a cut-out, a sticker or a logo."))
        return report, None, preview
    # the photo's own size (a 12000 x 9000 photo read as 1500 x 1125 is not a 1500 x 1125 photo), how much smaller
    # it was read, and its bytes: of two copies, the one with more pixels, then the less compressed, is kept
    report.add("decode", Check(OK, {"width": width, "height": height, "scale": _r(scale), "bytes": path.stat().st_size}))
    report.add("age", age_check(path, cfg.intake, now))
    with _timed(timings, "detect"):
        detection = analyzer.detect(image, max_side=cfg.intake.detect_max_side)
    problem = detection.problem
    if problem == "face_too_small" and detection.subject.side * scale >= cfg.face.min_face_px:
        problem = None  # small only in the reduced-scale decode
    face = detection.subject
    value = {"faces": len(detection.faces), "confidence": _r(face.confidence) if face else None,
             "face_px": round(face.side * scale) if face else None}  # what "face too small" is about, in the photo's pixels
    if face is not None:
        report.face_box = face.box_fractions(image.size)
    if problem == "several_faces":  # shown on the photo, so the person sees whom to crop out
        report.other_faces = [other.box_fractions(image.size) for other in detection.rivals]
    causes: dict[str, Check] = {}
    if problem == "no_face":
        with _timed(timings, "detect"):
            doubted = analyzer.doubted_faces(image, detection, max_side=cfg.intake.detect_max_side)
        causes = why_no_face(image, doubted, cfg.intake)
        for name, check in causes.items():
            report.add(name, check)
    if problem:
        reason, advice = FACE_PROBLEMS[problem]
        if problem == "face_too_small" and face.side * scale >= FRAMED_CLOSE * min(width, height):
            reason, advice = f"photo too small: the face is {face.side * scale:.0f} px across ({_size_needed(cfg)})", THUMBNAIL
        named = any(c.status != OK for c in causes.values())  # then the cause carries the advice
        if problem == "no_face" and not named and _on_its_side(image, analyzer, cfg):
            reason, advice = SIDEWAYS
        report.add("face", Check(REJECT, value, reason, None if named else advice))
        return report, None, preview
    report.add("face", Check(OK, value))
    framing = frame_face(face, image.size, cfg.prepare.crop_margin, cfg.prepare.level_eyes)  # prepare's crop
    report.add("resolution", resolution_check(framing.side * scale, cfg, as_the_camera_saved_it(path)))
    with _timed(timings, "measure"):
        face_measures = quality.measure(image, face)
        face_measures = replace(face_measures, levelled=framing.degrees != 0.0 if cfg.prepare.level_eyes else None,
                                scene=quality.scene_light(path))
    for name, check in judge(face_measures, cfg.intake, cut_out).items():
        report.add(name, check)
    with _timed(timings, "thumbnail"):
        thumb, signature = quality.thumbnail(image), quality.face_signature(image, face)
    box = tuple(round(v) for v in face.box)
    local = Face(tuple(float(v - o) for v, o in zip(face.box, box[:2] * 2)), face.confidence,
                 tuple((x - box[0], y - box[1]) for x, y in face.landmarks))
    return report, Measured(image.crop(box), local, thumb, signature, quality.smile(face), face_measures), preview


# -- per set -----------------------------------------------------------------------------------
def duplicate_checks(names: list[str], measured: list[Measured], cfg: IntakeConfig,
                     preference: Sequence[tuple] | None = None) -> dict[int, Check]:
    """A photo that is nearly the same picture as another adds nothing but weight: of each such group the photo
    first in `preference` (a sort key per photo; default: name order) is kept and the others are rejected, so
    the copy to replace is the worse one (a black-and-white or smaller copy), whatever its file is called."""
    sims = quality.same_shot([m.signature for m in measured])
    order = sorted(range(len(measured)), key=lambda i: preference[i] if preference else i)
    checks, copies = {}, set()
    for position, i in enumerate(order):
        kept = [j for j in order[:position] if sims[i, j] >= cfg.duplicate_similarity and j not in copies]
        copies.update([i] if kept else [])
        value = {"max_similarity": _r(max((sims[i, j] for j in range(len(measured)) if j != i), default=0.0))}
        checks[i] = _check(bool(kept), value, f"same shot as {names[kept[0]]}" if kept else "",
                           "Keep one of them and replace this one with a different photo (other place, light or angle).")
    return checks


@dataclass(frozen=True)
class Relative:
    """A measure judged against the person's own other photos: what one photo cannot tell (a darker skin from a dim
    room; a camera's or a skin's finer grain from a beauty filter; tanned skin from a warm lamp; a window beside them
    from the way they are usually lit) the set can, since face and skin are the person's own. `name`: the photo's
    measure over the set's median, which fires below `limit` (intake.min_<name>); or, by `compare`, the distance
    of the photo's measure (a vector) from the set's median ("distance"), or how far it rises above that median
    ("rise", for a share whose median may be 0), which fire above `limit` (intake.max_<name>). Added to `check` only
    where that photo's own verdicts do not already name it or something that fakes it (`explained_by`)."""

    check: str
    name: str
    measure: Callable[[quality.FaceMeasures], float | tuple[float, ...]]
    limit: Callable[[IntakeConfig], float]
    reason: str
    advice: str
    explained_by: tuple[str, ...]
    compare: Literal["ratio", "distance", "rise"] = "ratio"

    @property
    def fires_above(self) -> bool:
        """Whether a larger score is the worse one (a distance, a rise), not a smaller one (a ratio)."""
        return self.compare != "ratio"


# what both light set checks advise: the person's own best photos show the light that suits them
BETTER_LIGHT = "Retake it in the light of your best photos: facing a window, or with more lights on."
RELATIVE = (
    Relative("exposure", "relative_light", lambda m: m.exposure.skin, lambda c: c.min_relative_light, "face much darker than in your other photos",
             BETTER_LIGHT,
             ("exposure", "backlight", "side_light")),  # light from behind or one side, named already, darkened it
    # Less light sinks more of a face into black than the person's own hair, beard and shadows do in their other
    # photos, while a tone curve may keep the best-lit skin above min_relative_light (held-out dark: docs/intake_quality.md)
    Relative("exposure", "relative_crushed", lambda m: m.exposure.crushed, lambda c: c.max_relative_crushed,
             "face darker than in your other photos, its shadows sunk into black", BETTER_LIGHT,
             ("exposure", "backlight", "side_light", "occlusion"), compare="rise"),  # a hand or sunglasses are black too
    Relative("filter", "relative_texture", lambda m: m.focus.texture, lambda c: c.min_relative_texture, "skin much smoother than in your other photos "
             "(beauty filter or heavy processing)", "Turn off beauty mode and filters; send the photo as the camera took it.",
             ("filter", "exposure", "occlusion", "motion_blur", "sharpness")),  # light, a cover or blur lose grain too
    Relative("side_light", "relative_side_light", lambda m: m.side_light, lambda c: c.min_relative_side_light, "one side of the face much darker than in your other photos",
             "Face the window or light instead of having it beside you.",
             ("side_light", "exposure", "backlight", "occlusion")),  # named alone already, or darkness or a cover is the cause
    Relative("colour_cast", "relative_colour", lambda m: m.chroma, lambda c: c.max_relative_colour, "colours unlike your other photos (coloured light)",
             "Retake it in daylight, like your other photos: no warm lamps, coloured lights or colour filters.",
             ("colour_cast", "exposure", "backlight", "filter", "occlusion"), compare="distance"),  # light, filters, lenses shift colour too
)


def relative_checks(measures: list[quality.FaceMeasures], relative: Relative, cfg: IntakeConfig) -> dict[int, Check]:
    """`relative` for each photo against the set's median. Needs RELATIVE_MIN_PHOTOS faces, so that the median is
    the person, not one photo."""
    if len(measures) < RELATIVE_MIN_PHOTOS:
        return {}
    values = np.array([relative.measure(m) for m in measures], dtype=np.float64)
    median, limit = np.median(values, axis=0), relative.limit(cfg)
    if relative.compare == "distance":
        scores = np.linalg.norm((values - median).reshape(len(values), -1), axis=1)
    elif relative.compare == "rise":
        scores = values - median
    else:
        scores = values / max(float(median), 1e-6)
    if relative.fires_above:
        fired, excess = scores > limit, [_over(score, limit) for score in scores]
    else:
        fired, excess = scores < limit, [_under(score, limit) for score in scores]
    return {i: _check(bool(bad), {relative.name: _r(score)}, relative.reason, relative.advice, WARN, over)
            for i, (score, bad, over) in enumerate(zip(scores, fired, excess))}


def add_relative_checks(reports: list[PhotoReport], measures: list[quality.FaceMeasures], cfg: IntakeConfig) -> None:
    """Every RELATIVE check into the photos' verdicts (`reports` and `measures` in the same order), light first:
    a photo already judged on its own keeps that verdict. The ratio or distance is recorded in the check's values
    either way (intake.json; scripts/intake_eval.py reports its spread on clean sets)."""
    for relative in RELATIVE:
        for k, check in relative_checks(measures, relative, cfg).items():
            report, own = reports[k], reports[k].checks[relative.check]
            explained = any(report.checks[name].status != OK for name in relative.explained_by if name in report.checks)
            if check.status != OK and not explained:
                report.add(relative.check, Check(check.status, {**own.value, **check.value}, check.reason, check.advice, check.excess))
            else:
                own.value.update(check.value)


@dataclass
class Identity:
    """Who the photos show: a check per photo, and what the set says about it."""

    checks: dict[int, Check]
    others: list[int]  # photos of other people, two or more alike (or every photo of a tie): the set shows several
    # The largest groups when they are as large as each other (which of them is the person cannot be told), else none
    ties: list[list[int]] = field(default_factory=list)

    @property
    def tied(self) -> bool:
        return bool(self.ties)


def _same_person_groups(sims: np.ndarray, threshold: float) -> list[list[int]]:
    """Faces grouped by who they are: average-linkage clustering, joining the two groups whose faces are most alike
    on average while that average is at least `threshold`. The average, not the best pair: one look-alike photo
    does not join two people. Largest group first (then by first photo). Groups' averages are updated on each join
    (Lance-Williams), so 200 photos take milliseconds, not the seconds of recomputing every pair."""
    groups = [[i] for i in range(len(sims))]
    between = sims.astype(np.float64)  # a copy: the average similarity of each two groups' faces
    np.fill_diagonal(between, -np.inf)
    for _ in range(len(sims) - 1):
        a, b = sorted(np.unravel_index(int(np.argmax(between)), between.shape))
        if between[a, b] < threshold:
            break
        joined = (len(groups[a]) * between[a] + len(groups[b]) * between[b]) / (len(groups[a]) + len(groups[b]))
        between[a], between[:, a] = joined, joined
        between[b], between[:, b] = -np.inf, -np.inf
        between[a, a] = -np.inf
        groups[a], groups[b] = groups[a] + groups[b], []
    return sorted((sorted(g) for g in groups if g), key=lambda g: (-len(g), g[0]))


def identity_checks(embeddings: np.ndarray, cfg: IntakeConfig, names: Sequence[str] | None = None) -> Identity:
    """Who is this? The largest group of faces alike (`_same_person_groups`) is the person; a photo outside it may
    be someone else. Largest groups of the same size (six photos of you and six of a friend) leave no way to tell who
    the person is: every photo of them is refused, and the set says so, rather than pick one at random (a median
    over the others did, and refused some of the person's own photos while passing some of the friend's); each of
    those photos names the others of its group (`names`: the photos' files), so the person sees which are theirs."""
    sims = embeddings @ embeddings.T
    groups = _same_person_groups(sims, cfg.identity_threshold)
    largest = [g for g in groups if len(g) == len(groups[0])]
    tied = len(largest) > 1 and len(groups[0]) > 1
    alone = len(groups) > 1 and len(groups[0]) == 1  # no two faces alike: none of them can be called the person
    person = set() if tied or alone else set(groups[0])
    in_tie = {i for g in largest for i in g} if tied else set()
    checks = {}
    for i in range(len(embeddings)):
        alike = float(np.mean([sims[i, j] for j in groups[0] if j != i])) if len(groups[0]) > 1 else 1.0
        value = {"similarity_to_the_set": _r(alike)}
        if i in in_tie:
            group = next(g for g in largest if i in g)
            same = f" (the same person as {', '.join(names[j] for j in group if j != i)})" if names else ""
            checks[i] = Check(REJECT, value, f"the photos show several people in equal numbers{same}: which one is you?",
                              "Keep only the photos of yourself, then check them again.")
        else:
            checks[i] = _check(i not in person, value, "this photo may be someone else",
                               "Use only photos of yourself; remove this one if it is not you.")
    others = sorted(in_tie) if tied else [i for g in groups[1:] if len(g) > 1 for i in g]
    return Identity(checks, sorted(others), largest if tied else [])


def _missing_kinds(measured: list[Measured], cfg: IntakeConfig) -> list[str]:
    """Which kinds of photo a good set has and this one lacks."""
    kinds = []
    if not any(abs(m.pose.yaw) < 0.12 for m in measured):
        kinds.append("one looking straight at the camera")
    if not any(m.smile >= cfg.smile_ratio for m in measured):
        kinds.append("one with a natural smile")
    if not any(0.12 <= abs(m.pose.yaw) <= cfg.max_yaw for m in measured):
        kinds.append("one with your head turned a little to the side")
    if len(measured) < 2 or float(np.ptp([m.brightness for m in measured])) < 20:
        kinds.append("one in different light (e.g. outdoors in the shade)")
    return kinds or ["a few more in different places and light"]


def _variety_problems(measured: list[Measured], cfg: IntakeConfig) -> list[str]:
    if len(measured) < 3:
        return []
    thumbs = np.stack([m.thumbnail for m in measured])
    sims = thumbs @ thumbs.T
    sameness = float(sims[np.triu_indices(len(measured), 1)].mean())
    problems = []
    if sameness > cfg.max_sameness:
        problems.append("the photos all look alike (same place, pose and light)")
    if float(np.ptp([m.pose.yaw for m in measured])) < 0.1:
        problems.append("every photo has the same head angle")
    return problems


def share_warnings(photos: list[PhotoReport]) -> list[str]:
    """Marks and returns the warnings every usable photo has, in a set of RELATIVE_MIN_PHOTOS or more: a property of
    the camera, the date or the place rather than of one shot (every photo a small copy, all taken years ago, all lit
    from one side). Said once for the set, and put after what is particular to each photo, which would otherwise
    hide behind it."""
    usable = [p for p in photos if p.verdict != REJECT]
    names: set[str] = set()
    if len(usable) >= RELATIVE_MIN_PHOTOS:
        names = set.intersection(*({name for name, c in p.checks.items() if c.status == WARN} for p in usable))
    shared = sorted(names, key=_causal)
    for photo in photos:
        photo.share(shared)
    return shared


def set_report(photos: list[PhotoReport], measured: dict[int, Measured], split: list[int], cfg: IntakeConfig,
               shared: Sequence[str] = (), ties: Sequence[Sequence[int]] = ()) -> SetReport:
    """`split`: the photos of another person (`Identity.others`, by photo index); `ties`: the groups of a tie, as
    many photos of each person (by photo index)."""
    usable_idx = [i for i, p in enumerate(photos) if p.verdict != REJECT]
    usable = [measured[i] for i in usable_idx if i in measured]
    folders = [p.file for p in photos if "decode" in p.checks and p.checks["decode"].reason == A_FOLDER]
    report = SetReport(OK, len(usable_idx), len(photos) - len(folders))  # "0 of 1 photos usable" was a folder
    tied = bool(ties)
    if tied:
        each = "; ".join(f"{'one' if k == 0 else 'another'}: {', '.join(photos[i].file for i in group)}" for k, group in enumerate(ties))
        report.verdict, report.reason = REJECT, f"the photos show different people, as many photos of each ({each})"
    elif split:
        report.verdict, report.reason = REJECT, f"the photos show different people ({', '.join(photos[i].file for i in split)} look like someone else)"
    if split:
        report.advice.append("Use photos of one person only: remove the photos of anyone else.")
    n = len(usable_idx)
    if n < cfg.good_photos and not tied:  # a tie refused every photo of its people: how many are the person's is not known
        short = n < cfg.min_photos
        need = (cfg.min_photos if short else cfg.good_photos) - n
        report.verdict = max(report.verdict, REJECT if short else WARN, key=_RANK.get)
        count = f"only {plural(n, 'usable photo')}" if n else "no usable photos"
        report.reason = report.reason or (f"{count} (need at least {cfg.min_photos})" if short
                                          else f"{n} usable photos; {cfg.good_photos} give better results")
        if folders:  # photos put in a folder of their own: moving them is the fix, not new ones
            report.advice.append(f"Photos inside a folder are not read: move those in {', '.join(folders)} up, into the "
                                 "photos folder itself.")
        kinds = _missing_kinds(usable, cfg)
        overlap = " (one photo can be more than one of these)" if len(kinds) > need else ""  # 3 photos, 4 kinds
        report.advice.append(f"{'Or add' if folders else 'Add'} {plural(need, 'more photo')} of you alone: " + "; ".join(kinds) + f"{overlap}.")
    variety = _variety_problems(usable, cfg)
    if variety:
        report.verdict = max(report.verdict, WARN, key=_RANK.get)
        report.reason = report.reason or "; ".join(variety)
        report.advice.append("Mix it up: different rooms or outdoors, different light, a few head angles and expressions.")
    if shared:
        kept = [p for p in photos if p.verdict != REJECT]
        said = [_said_of_all(kept, name) for name in shared]
        report.verdict = max(report.verdict, WARN, key=_RANK.get)
        every = "every photo" if len(kept) == len(photos) else "every usable photo"  # a rejected one may differ
        common = f"{every}: " + " and ".join(reason for reason, _ in said)
        report.reason = f"{report.reason}; {common}" if report.reason else common
        report.advice += [f"{every.capitalize()}: {reason}. {advice}" for reason, advice in said]
    return report


def _said_of_all(photos: list[PhotoReport], name: str) -> tuple[str, str]:
    """One check's reasons over the photos, without their figures ("low resolution (the square around your face is 440 px; ...)"), and its
    advice, each kind once: every photo shares the check, not always the same kind of it (a head turned, a tilt)."""
    checks = [p.checks[name] for p in photos]
    return (" or ".join(dict.fromkeys(c.reason.split(" (")[0] for c in checks)),
            " ".join(dict.fromkeys(c.advice for c in checks if c.advice)))


# -- the stage ---------------------------------------------------------------------------------
def run_intake(cfg: Config, analyzer: FaceAnalyzer | None = None, timings: Timings | None = None,
               workers: int | None = None) -> IntakeResult:
    """Check every photo of `cfg.user`, then the set; write intake.json and intake.html.

    `workers`: photo-checking threads (default one per CPU core, at most MAX_WORKERS)."""
    workspace = Workspace.from_config(cfg)
    paths = workspace.require_selfies()  # first: a person without photos is told so, and no lock file is made for them
    with intake_alone(workspace):
        result = judge_photos(cfg, analyzer, timings, workers, paths)
        write_json_atomic(workspace.intake_report, result.to_json())  # the web app reads it while a job writes it
        write_text_atomic(workspace.intake_page, render_html(result))
    return result


def intake_alone(workspace: Workspace) -> AbstractContextManager[None]:
    """Held while the person's photos are judged and the reports written, and by a deletion of their data
    (service.purge): an intake that had read the photos before a deletion would otherwise write its reports back
    after it, naming the photos just deleted."""
    busy = HeadshotsError(f"{workspace.user}'s photos are being checked already, or their data deleted (in a terminal, "
                          "the web app or a batch).", "Wait for that to finish, then run this again.")
    return held_alone(workspace.intake_lock, busy)


def judge_photos(cfg: Config, analyzer: FaceAnalyzer | None = None, timings: Timings | None = None,
                 workers: int | None = None, paths: list[Path] | None = None, progress: str = "intake") -> IntakeResult:
    """Every photo's verdict and the set's, writing nothing (prepare asks which photos intake rejects). `paths`: the
    person's photos, when the caller listed them already; `progress`: the progress bar's label (prepare's own, so
    that an "intake: 12/12" bar does not follow "intake skipped")."""
    paths = paths or Workspace.from_config(cfg).require_selfies()
    analyzer = analyzer or FaceAnalyzer.for_config(cfg)
    now = datetime.now()
    photos, measured, previews = [], {}, {}
    for i, (report, values, preview) in enumerate(_assess_all(paths, analyzer, cfg, now, timings, workers, progress)):
        photos.append(report)
        if values is not None:
            measured[i] = values
        if preview is not None:
            previews[report.file] = preview
    split, ties = _set_checks(photos, measured, analyzer, cfg.intake, timings)
    shared = share_warnings(photos)
    return IntakeResult(cfg.user, photos, set_report(photos, measured, split, cfg.intake, shared, ties), previews)


def _assess_all(paths: list[Path], analyzer: FaceAnalyzer, cfg: Config, now: datetime, timings: Timings | None,
                workers: int | None, progress: str) -> Iterator[tuple[PhotoReport, Measured | None, str | None]]:
    """`assess_photo` for every path, in order, on a few threads. JPEG decoding, MTCNN and the numpy checks
    spend most of their time outside the GIL, so on two cores a 20-photo intake takes 1.27x as long on one
    thread as on two (docs/benchmarks.md, Intake). With `timings`, step times are summed across threads."""
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="intake") as pool:
        yield from tqdm(pool.map(lambda p: assess_photo(p, analyzer, cfg, now, timings), paths),
                        desc=progress, unit="photo", total=len(paths), disable=len(paths) < 10)


# What a copy of a photo can change (an app's filter, black-and-white, a brightened or softened re-save). The rest,
# pose or a cover, is the shot's own: two copies differ there only by the detector's jitter (a 14.8 and a 15.2 degree
# tilt), which must not decide which copy is kept.
COPY_CHECKS = ("exposure", "colour_cast", "filter", "sharpness", "motion_blur")


def _copy_preference(photo: PhotoReport, name_order: int) -> tuple:
    """Sort key among copies of one shot, best first: no problem a copy can add; then the one that kept its capture
    date (the camera's file: an app's enlarged, shrunk, PNG or CMYK copy loses it, and an enlarged one has more
    pixels, none of them new); then more pixels (a downscaled or cropped copy has fewer); then the larger file (the
    less compressed: a re-save at a lower JPEG quality shrinks); then name order. Not how old the date is: a copy
    re-saved by an app has lost its date, not gained youth."""
    decoded = photo.checks["decode"].value
    pixels = decoded["width"] * decoded["height"]
    worst = max((_RANK[photo.checks[name].status] for name in COPY_CHECKS if name in photo.checks), default=0)
    undated = "age" not in photo.checks or photo.checks["age"].value.get("taken") is None
    return worst, undated, -pixels, -decoded.get("bytes", 0), name_order


def _set_checks(photos: list[PhotoReport], measured: dict[int, Measured], analyzer: FaceAnalyzer,
                cfg: IntakeConfig, timings: Timings | None) -> tuple[list[int], list[list[int]]]:
    """Duplicates, the RELATIVE checks (each photo against the person's other photos), and identity across the photos
    with a usable face; returns the photos of another person and, when there are as many of each, the groups of the
    tie (by photo index)."""
    if not measured:
        return [], []
    index = sorted(measured)
    names = [photos[i].file for i in index]
    preference = [_copy_preference(photos[i], k) for k, i in enumerate(index)]
    with _timed(timings, "duplicates"):
        for k, check in duplicate_checks(names, [measured[i] for i in index], cfg, preference).items():
            photos[index[k]].add("duplicate", check)
    add_relative_checks([photos[i] for i in index], [measured[i].face_measures for i in index], cfg)
    good = [i for i in index if photos[i].verdict != REJECT]  # a blurred or covered face is no evidence
    if not good:
        return [], []
    with _timed(timings, "identity"):
        embeddings = analyzer.embed([measured[i].face_image for i in good], [measured[i].face for i in good]).numpy()
        identity = identity_checks(embeddings, cfg, [photos[i].file for i in good])
    for k, check in identity.checks.items():
        photos[good[k]].add("identity", check)
    return [good[k] for k in identity.others], [[good[k] for k in group] for group in identity.ties]


def intake(cfg: Config) -> IntakeResult:
    """The CLI command: run, print the table, then fail (exit status 2) when the set cannot be used (the error names
    the page with every photo), else say where that page is."""
    result = run_intake(cfg)
    print_table(result)
    usable = require_usable(result, cfg)
    print(f"every photo, with its face box and advice: {Workspace.from_config(cfg).intake_page}")
    return usable


def require_usable(result: IntakeResult, cfg: Config) -> IntakeResult:
    """`result`, or the error that stops the chain when its set cannot be used, naming the rejected photos. What the
    web app's jobs and the batch's workers run (service/chain.py), with no table: a worker's log on a cluster's node
    would list everyone's photos, where `make purge` cannot reach it."""
    if result.set.verdict == REJECT:
        raise HeadshotsError(f"This photo set is not usable yet: {result.set.reason}.",
                             " ".join([*result.set.advice, *_rejected_photos(result.photos)])
                             + f" Details: {Workspace.from_config(cfg).intake_page}")
    return result


def _rejected_photos(photos: list[PhotoReport], most: int = 5) -> list[str]:
    """The photos rejected and why, for the error a batch's status table shows (it prints no photo table):
    "Rejected: notes.txt - not an image file. group.jpg - more than one face." (the first `most`). A sentence each:
    a photo's own reasons are already joined by semicolons, and photos joined the same way read as one list
    ("a.jpg: someone else; backlit: ..." read "backlit" as a file name, a batch walk)."""
    rejected = [f"{printable(p.file)} - {p.reason.rstrip('.')}." for p in photos if p.verdict == REJECT]
    if not rejected:
        return []
    more = [f"And {len(rejected) - most} more."] if len(rejected) > most else []
    return [f"Rejected: {' '.join([*rejected[:most], *more])}"]
