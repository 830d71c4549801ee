"""Review page: outputs ranked best first, with score and every review check, each also shown the way people
judge a profile photo: a 400x400 square (profile page) and 100 px and 40 px circles (comment avatar, list).

Reads   outputs/<user>/<run>/samples/scores.json + images
Writes  outputs/<user>/<run>/samples/gallery.html   (self-contained page, images by relative path)
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.faces import FaceAnalyzer
from headshots.workspace import GALLERY, SCORES, Workspace, write_text_atomic
from infer.manifest import changes_images
from infer.score import Score, score

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#f4f4f2;color:#222}
h1{margin:0 0 4px} .sub{color:#666;margin-bottom:20px}
.grid{display:flex;flex-wrap:wrap;gap:18px}
.card{background:#fff;border-radius:10px;padding:12px;box-shadow:0 1px 4px #0002;width:420px;max-width:calc(100% - 24px)}
.card.dropped{opacity:.55}
.full{width:100%;max-width:400px;height:auto;aspect-ratio:1;object-fit:cover;border-radius:4px;display:block}
.small{display:flex;align-items:center;gap:14px;margin-top:10px}
.avatar{width:100px;height:100px;border-radius:50%;object-fit:cover}
.tiny{width:40px;height:40px;border-radius:50%;object-fit:cover}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:13px;font-weight:600}
.kept .badge{background:#d8f3dc;color:#1b4332} .dropped .badge{background:#fde2e1;color:#8a1c1c}
.meta{font-size:13px;color:#555;margin-top:6px}
.checks{list-style:none;padding:0;margin:8px 0 0;font-size:12px} .checks .ok{color:#1b4332} .checks .no{color:#8a1c1c}
"""


CARD_SIDES = (400, 100, 40)  # a card's views: a profile page's photo, a comment's avatar, a list's


def score_and_show(cfg: Config, analyzer: FaceAnalyzer | None = None) -> tuple[list[Score], Path]:
    """The filter stage as every command runs it: score every image in the manifest, then the gallery of the scores."""
    scores = score(cfg, analyzer)
    return scores, write_gallery(cfg)


@changes_images  # held from the first image drawn to the gallery: no discard slips in between
def make_and_review(cfg: Config, make: Callable | None = None) -> tuple[list[Score], Path]:
    """New images (`make`: generate by default, or variations.more_like), their face-detail pass when
    `infer.detail.enabled`, then every image scored and the gallery: how `infer all`, `infer more`, the web app's
    jobs and the batch make images."""
    from infer.detail import with_detail  # the drawing code: loaded only by the commands that draw

    if make is None:
        with_detail(cfg)
    else:
        with_detail(cfg, make)
    return score_and_show(cfg)


def write_gallery(cfg: Config) -> Path:
    workspace = Workspace.from_config(cfg)
    samples_dir = workspace.samples_dir(cfg.run)
    scores_path = samples_dir / SCORES
    if not scores_path.is_file():
        raise HeadshotsError(f"No scores in {samples_dir}.", f"Score the images first: {workspace.make_command('infer')}")
    scores = json.loads(scores_path.read_text())
    cards = "\n".join(review_card(item, _beside(item["file"])) for item in scores["images"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Headshots for {html.escape(cfg.user)}</title>
<style>{STYLE}</style></head><body>
<h1>Your headshots</h1>
<div class="sub">{scores['kept']} of {len(scores['images'])} kept &middot; ranked by likeness to your
{scores['references']} reference photos &middot; your threshold {scores['threshold']:.2f}
(from your selfies' likeness to each other{_floor(scores)}).
Each photo is also shown at profile-photo sizes: judge it small too.</div>
<div class="grid">
{cards}
</div></body></html>
"""
    out = samples_dir / GALLERY
    write_text_atomic(out, page)
    return out


def review_card(item: dict, image_at: Callable[[int], str | None], prefix: str = "", actions: str = "") -> str:
    """One scored image as a person reviews a profile photo: at 400x400 and as 100 px and 40 px circles, its rank
    or why it was dropped, likeness, every check, where a variation came from and what the face-detail pass did.
    The one card of gallery.html (`image_at`: the file beside it, whatever the size) and the web app's Review tab
    (`image_at(side)`: a data URI of a preview that size, None when the image cannot be read; `prefix`: its CSS
    classes' prefix; `actions`: its buttons, after the card's title)."""
    def cls(name: str) -> str:
        return f"{prefix}{name}"

    name = html.escape(item["file"])
    status = "kept" if item["kept"] else "dropped"
    badge = f"#{item['rank']}" if item["kept"] else "dropped"
    sim = "n/a" if item["similarity"] is None else f"{item['similarity']:.2f} (max {item['similarity_max']:.2f})"
    failed = {c["detail"] for c in item.get("reasons", []) if not c["passed"]}
    reason = "" if item["reason"] in failed else f"<br>{html.escape(item['reason'])}"  # said once: in the checks below
    checks = "".join(f"<li class='{'ok' if c['passed'] else 'no'}'>{'&#10003;' if c['passed'] else '&#10007;'} "
                     f"{html.escape(c['detail'])}</li>" for c in item.get("reasons", []))
    full = image_at(CARD_SIDES[0])
    images = (f"<img class='{cls('full')}' src='{full}' alt='{name} at 400x400' loading='lazy'><div class='{cls('small')}'>"
              f"<img class='{cls('avatar')}' src='{image_at(CARD_SIDES[1])}' alt='{name} as a 100 px avatar'>"
              f"<img class='{cls('tiny')}' src='{image_at(CARD_SIDES[2])}' alt='{name} as a 40 px avatar'>"
              ) if full else f"<div class='{cls('small')}'>"
    return (f"<div class='{cls('card')} {status}' data-file='{name}'><span class='{cls('badge')}'>{badge}</span> "
            f"<b>{html.escape(item['style'])}</b> &middot; {name} &middot; seed {item['seed']}{_source_note(item.get('source'))}"
            f"{actions}{images}<div class='{cls('meta')}'>likeness {sim}{reason}{_detail_note(item.get('detail'))}"
            f"</div></div><ul class='{cls('checks')}'>{checks}</ul></div>")


def _beside(file: str) -> Callable[[int], str]:
    """gallery.html's image source at every size: the file beside it (the browser scales it)."""
    escaped = html.escape(quote(file))  # a URL: a `#` or `%` in a name would cut it short
    return lambda side: escaped


def _source_note(source: str | None) -> str:
    """Where a variation came from (more like this)."""
    return f" &middot; more like {html.escape(source)}" if source else ""


def _detail_note(detail: dict | None) -> str:
    """Which version the face-detail pass left, and by how much it won or lost."""
    if not detail:
        return ""
    if "skipped" in detail:
        return f"<br>face detail: none ({html.escape(detail['skipped'])})"
    def fmt(value):
        return "no face" if value is None else f"{value:.2f}"
    figures = f"re-drawn {fmt(detail['similarity_redrawn'])} vs original {fmt(detail['similarity_original'])}"
    gain = "" if detail["gain"] is None else f" ({detail['gain']:+.2f})"
    failed = f"; the other failed: {html.escape(detail['other_failed'])}" if detail.get("other_failed") else ""
    return f"<br>face detail: {'re-drawn face kept' if detail['chosen'] == 'redrawn' else 'original kept'}{gain}: {figures}{failed}"


def _floor(scores: dict) -> str:
    floor = scores.get("threshold_floor")
    return "" if floor is None else f", never below {floor:.2f}"
