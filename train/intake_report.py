"""What intake found, for people: the table the CLI prints, the page intake.html, and the face boxes and thumbnails
the web app's photo cards use too. Every photo is embedded as a small thumbnail: the page names no file path."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from PIL import Image

from headshots.images import jpeg_data_uri
from headshots.logs import printable

if TYPE_CHECKING:
    from train.intake import IntakeResult

PREVIEW_SIDE = 240  # px, the thumbnails in intake.html and on the app's upload tab


def figures(measured: dict) -> str:
    """A check's measured values as a person reads them ("anisotropy 0.644, side 212"), not as JSON; a measure not
    taken (None: the confidence of a face not found, the date of a photo without one) is left out."""
    return ", ".join(f"{key} {value}" for key, value in measured.items() if value is not None)


def set_summary(usable: int, total: int, reason: str | None) -> str:
    """What follows the set's verdict: why, then the count. The count right after the verdict read as a
    contradiction of it ("REJECT: 2 of 2 photos usable: only 2 usable photos (need at least 5)")."""
    count = f"{usable} of {total} photos usable." if total else "No photos."
    return f"{reason}. {count}" if reason else count


def print_table(result: IntakeResult) -> None:
    names = [printable(p.file) for p in result.photos]
    width = max([len(name) for name in names] + [5])
    print(f"\n{'photo':<{width}}  verdict  reason -> advice")
    for p, name in zip(result.photos, names):
        detail = f"{p.reason} -> {' '.join(p.advice)}" if p.reason else ""
        print(f"{name:<{width}}  {p.verdict.upper():<7}  {printable(detail)}")
    s = result.set
    print(f"\nset: {s.verdict.upper()}: {set_summary(s.usable, s.total, s.reason)}")
    for line in s.advice:
        print(f"  -> {line}")
    print()


def face_boxes_html(face_box: list[float] | None, other_faces: list[list[float]], css_class: str) -> str:
    """The face boxes drawn over a photo's preview: the person's, and in another colour (`css_class` + " other") the
    faces that made it "more than one face". Boxes are fractions of the photo, so they fit a preview of any size;
    the part of a box past the photo's edge (a face cut by it: MTCNN's box reaches out) is left off, not drawn
    over the card beside it."""
    def box(b: list[float], classes: str) -> str:
        x1, y1, x2, y2 = (100 * min(max(v, 0.0), 1.0) for v in b)
        return f"<div class='{classes}' style='left:{x1:.1f}%;top:{y1:.1f}%;width:{x2 - x1:.1f}%;height:{y2 - y1:.1f}%'></div>"

    return (box(face_box, css_class) if face_box else "") + "".join(box(b, f"{css_class} other") for b in other_faces)


def thumbnail_uri(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return jpeg_data_uri(small, quality=80)


# .frame keeps its photo's height (not the row's, which the table of figures sets): the face boxes are in percent of it
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
.photo{display:flex;gap:1.5em;margin:1em 0;padding:1em;border-left:6px solid #2a2}
.warn{border-color:#e90}.reject{border-color:#d22}
.frame{position:relative;width:240px;flex:none;align-self:flex-start}.frame img{width:240px;display:block}
.box{position:absolute;border:2px solid #0f0;box-sizing:border-box}.box.other{border-color:#e00}
.verdict{font-weight:bold;text-transform:uppercase}td{padding:0 .6em;font-size:.85em;color:#555}"""


def render_html(result: IntakeResult) -> str:
    """One self-contained page: photos are embedded as small thumbnails (nothing else is copied)."""
    s = result.set
    parts = [f"<!doctype html><meta charset=utf-8><title>Intake: {html.escape(result.user)}</title><style>{_STYLE}</style>",
             f"<h1>Photo check for {html.escape(result.user)}</h1>",
             (f"<div class='photo {s.verdict}'><div><span class=verdict>{s.verdict}</span>: {html.escape(set_summary(s.usable, s.total, s.reason))}<ul>{''.join(f'<li>{html.escape(a)}' for a in s.advice)}</ul></div></div>")]
    for p in result.photos:
        frame = "<div class=frame>(not readable)</div>"
        if p.file in result.previews:
            boxes = face_boxes_html(p.face_box, p.other_faces, "box")
            frame = f"<div class=frame><img src='{result.previews[p.file]}' alt=''>{boxes}</div>"
        rows = "".join(f"<tr><td>{name}<td>{c.status}<td>{html.escape(figures(c.value))}" for name, c in p.checks.items())
        advice = "".join(f"<li>{html.escape(a)}" for a in p.advice)
        parts.append(f"<div class='photo {p.verdict}'>{frame}<div><b>{html.escape(p.file)}</b> "
                     f"<span class=verdict>{p.verdict}</span><p>{html.escape(p.reason or 'good photo')}</p>"
                     f"<ul>{advice}</ul><table>{rows}</table></div></div>")
    return "\n".join(parts) + "\n"
