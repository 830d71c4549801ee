"""What the web app shows, rendered from the stages' own files (intake.json, progress.json,
validation.json, scores.json): pure functions from a person's workspace to HTML or Markdown.

Pictures are embedded as small JPEG data URIs made here: the page never gets a path it could ask the
server for, so nothing one person sees can point at another person's files.
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from headshots.errors import HeadshotsError, ImageError
from headshots.images import jpeg_data_uri, list_photos, load_rgb, original_size
from headshots.logs import plural
from headshots.workspace import ADAPTER_WEIGHTS, Workspace
from infer.gallery import CARD_SIDES, review_card
from infer.manifest import MANIFEST, read_manifest
from service.jobs import DONE, FAILED, IMAGE_KINDS, QUEUED, RUNNING, STOPPED, Job
from train.intake_report import PREVIEW_SIDE, face_boxes_html, figures, set_summary

CSS = """
.hs-set{padding:10px 14px;border-left:6px solid #2a2;margin:6px 0 12px;background:#f6fff6}
.hs-set.warn{border-color:#e90;background:#fffaf0}.hs-set.reject{border-color:#d22;background:#fff5f5}
.hs-photos,.hs-grid{display:flex;flex-wrap:wrap;gap:14px}
.hs-photo{width:260px;border-left:6px solid #2a2;padding:8px;background:#fff;box-shadow:0 1px 3px #0002;font-size:13px}
.hs-photo.warn{border-color:#e90}.hs-photo.reject{border-color:#d22}
.hs-frame{position:relative;width:240px}.hs-frame img{width:240px;display:block}
.hs-box{position:absolute;border:2px solid #0f0;box-sizing:border-box}.hs-box.other{border-color:#e00}
.hs-verdict{font-weight:700;text-transform:uppercase}
.hs-card{background:#fff;border-radius:10px;padding:12px;box-shadow:0 1px 4px #0002;width:400px;max-width:calc(100% - 24px);box-sizing:content-box;font-size:13px}
.hs-card.dropped{opacity:.7}
/* 400x400 as on a profile page; on a phone narrower than that, the card's width, still square */
.hs-full{width:100%;height:auto;aspect-ratio:1;max-width:400px;object-fit:cover;border-radius:4px;display:block}
.hs-small{display:flex;align-items:center;gap:14px;margin-top:10px}
.hs-avatar{width:100px;height:100px;border-radius:50%;object-fit:cover}
.hs-tiny{width:40px;height:40px;border-radius:50%;object-fit:cover}
.hs-badge{font-weight:700}.hs-meta{margin-top:6px}
.hs-checks{list-style:none;padding:0;margin:8px 0 0}.hs-checks .ok{color:#1b4332}.hs-checks .no{color:#8a1c1c}
.hs-hidden{display:none !important}
/* Gradio's container hides its overflow, which makes it the scroller sticky follows; clip cuts the same without that */
.gradio-container{overflow:clip !important}
/* Phones: the five steps' tabs narrower, so more of them fit beside each other; the rest behind a button that says More */
@media (max-width:600px){.tab-container button{padding:6px 6px !important;font-size:13px !important}}
.overflow-menu > button::after{content:'More';margin-left:4px;font-size:13px}
#hs-spoken{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
#hs-status-row{position:sticky;top:0;z-index:20;background:var(--background-fill-primary);padding:4px 0;border-bottom:1px solid var(--border-color-primary)}
/* Gradio's message boxes at the bottom right: at the top they covered Sign out, and Stop in the status row */
.toast-wrap{top:auto !important;bottom:calc(var(--size-3) + env(safe-area-inset-bottom))}
.hs-tick,.hs-card-action{border:1px solid #ccc;border-radius:12px;background:#fff;padding:1px 10px;cursor:pointer;font-size:13px;white-space:nowrap}
.hs-card-action.hs-danger{color:#8a1c1c}
.hs-tick[aria-pressed=true]{background:#fff4c2;border-color:#e0b000}
.hs-actions{float:right;display:flex;flex-wrap:wrap;justify-content:flex-end;gap:6px}
/* Download names wrap instead of ending in "…": every crop of an image starts alike ("linkedin-12… .jpg" on a phone) */
#hs-files .stem{white-space:normal;overflow-wrap:anywhere}
.hs-refused{color:#8a1c1c}.hs-crops{margin:0 0 16px}.hs-crop-row{display:flex;flex-wrap:wrap;align-items:flex-end;gap:16px}
.hs-crop-row figure{margin:6px 0;max-width:220px;font-size:13px;text-align:center}
.hs-crop{display:block;margin:0 auto 4px;box-shadow:0 1px 3px #0003}
.hs-crop.hs-round{border-radius:50%}
.hs-yours{display:flex;flex-wrap:wrap;align-items:center;gap:10px;margin:4px 0 14px}.hs-photo .hs-tick{float:right}
/* Phones: the person's own faces in one row that scrolls sideways, so the review starts on the first screen */
@media (max-width:600px){.hs-yours{flex-wrap:nowrap;overflow-x:auto}.hs-yours>*{flex:none}.hs-yours span{max-width:110px}}
"""
# Run once when the page loads.
PAGE_JS = """() => {
  // A tab the person comes back to (from another tab, window or app) asks once for their job's status. Once: coming
  // back fires both events, and the second ask carried favourites the first had already taken out of the list (an
  // image deleted in another tab), which Gradio refused with an "Error" box.
  let asked = 0;
  const resync = () => {
    if (document.visibilityState !== "visible" || Date.now() - asked < 2000) return;
    asked = Date.now();
    document.getElementById("hs-resync")?.click();
  };
  document.addEventListener("visibilitychange", resync);
  window.addEventListener("focus", resync);
  // A card's tick button (tick_button: Favourite, Remove) ticks its file in the checkbox list it names, as a click
  // there would (the list is what the server reads); a tick there, either way, shows on the card's button.
  const listed = (list, file) => document.querySelector(`#${list} input[name="${CSS.escape(file)}"]`);
  document.addEventListener("click", (event) => {
    const tick = event.target.closest("[data-tick]");
    if (tick) listed(tick.dataset.tick, tick.dataset.file)?.click();
    // A card's action (card_action: More like this, Delete) names its image in the hidden #hs-card-file box and
    // presses the hidden button it names, once the person confirms when it asks: the same handler and checks as
    // the picker and button under the review. While a job runs (Stop can be pressed) it is not asked: the server
    // refuses, and a confirmation first would be answered for nothing.
    const action = event.target.closest("[data-press]");
    const box = document.querySelector("#hs-card-file textarea, #hs-card-file input");
    const busy = document.querySelector("#hs-stop:not([disabled])") !== null;
    if (action && box && (!action.dataset.confirm || busy || window.confirm(action.dataset.confirm))) {
      box.value = action.dataset.file;
      box.dispatchEvent(new Event("input", { bubbles: true }));
      document.getElementById(action.dataset.press)?.click();
    }
    if (event.target.closest("a[href$='#open-review']")) {  // OPEN_REVIEW
      event.preventDefault();
      document.getElementById("hs-open-review")?.click();
    }
  });
  // Delete ticked images asks first, as a card's Delete does (not while a job runs: the server refuses then).
  // Listening in the capture phase, a "no" stops the click before it reaches the button.
  document.addEventListener("click", (event) => {
    if (!event.target.closest("#hs-discard") || document.querySelector("#hs-stop:not([disabled])")) return;
    const ticked = [...document.querySelectorAll("#hs-discard-pick input:checked")].map((input) => input.name);
    const named = ticked.length > 4 ? `${ticked.slice(0, 3).join(", ")} and ${ticked.length - 3} more` : ticked.join(", ");
    const what = ticked.length === 1 ? ticked[0] : `${ticked.length} images (${named})`;
    if (ticked.length && !window.confirm(`Delete ${what} for good?`)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
  // The status line is spoken to screen readers when its headline (the bold words it starts with) changes: a job
  // waiting, running, done, failed or stopped; not each training step, which changes every second.
  const spoken = Object.assign(document.createElement("div"), { id: "hs-spoken" });
  spoken.setAttribute("role", "status");
  spoken.setAttribute("aria-live", "polite");
  document.body.append(spoken);
  let headline = null, shown = false;  // the last headline spoken, and whether the status has been shown at all
  const listen = () => {
    const status = document.getElementById("hs-status");
    if (!status) return setTimeout(listen, 200);
    if (status.querySelector("p")) {  // drawn before it was found (a page opened again): that is what it opened with
      shown = true;
      headline = status.querySelector("strong")?.textContent ?? null;
    }
    new MutationObserver(() => {
      const strong = status.querySelector("strong");
      const first = !shown;
      shown = true;
      if (!strong || strong.textContent === headline) return;  // no headline ("Not trained yet: ..."), or the same one
      // its paragraph, not Gradio's "processing" overlay beside it; the status the page opens with is not news
      if (!first) spoken.textContent = (strong.closest("p") ?? strong).innerText.trim();
      headline = strong.textContent;
    }).observe(status, { subtree: true, childList: true, characterData: true });
  };
  listen();
  // Keyboard focus follows an action to what it shows: the dropped cards, drawn above their toggle, to the first
  // card's first button (focus stayed on the toggle, below every card); a job's button, greyed while it runs (the
  // browser then sends focus to the top of the page), to the status line that follows the job.
  const focusWhenThere = (selector, tries = 50) => {
    const target = document.querySelector(selector);
    if (target) target.focus();
    else if (tries > 0) setTimeout(() => focusWhenThere(selector, tries - 1), 100);
  };
  document.addEventListener("click", (event) => {
    const toggle = event.target.closest("#hs-dropped-toggle");
    if (toggle && !document.querySelector("#hs-dropped .hs-card")) focusWhenThere("#hs-dropped .hs-card button");
    // a card's Delete: to the card now in its place (or the one before it), not the top of the page
    const deleted = event.target.closest("[data-press=hs-card-delete]")?.closest(".hs-card");
    if (deleted) {
      const grid = deleted.parentElement, place = [...grid.children].indexOf(deleted);
      const land = (tries) => {
        if (deleted.isConnected) return tries > 0 && setTimeout(() => land(tries - 1), 100);  // kept (said no): stay
        const cards = grid.isConnected ? grid.children : document.querySelectorAll(`#${grid.id} > .hs-card`);
        (cards[place] ?? cards[place - 1])?.querySelector("button")?.focus();
      };
      land(100);
    }
    const pressed = event.target.closest("#hs-train, #hs-generate, #hs-more");
    const follow = (tries) => {  // until the button is greyed (the server's answer), or the person moved on
      const here = document.activeElement;
      const status = document.getElementById("hs-status");
      if (status && (here === document.body || here?.disabled)) {
        status.tabIndex = -1;
        status.focus();
      } else if (here === pressed && tries > 0) setTimeout(() => follow(tries - 1), 100);
    };
    if (pressed) follow(50);
  });
  document.addEventListener("change", (event) => {
    const input = event.target.closest("input[type=checkbox]");
    const list = input?.closest("[id^=hs-]")?.id;
    if (!list) return;
    for (const tick of document.querySelectorAll(`[data-tick="${list}"][data-file="${CSS.escape(input.name)}"]`)) {
      tick.setAttribute("aria-pressed", String(input.checked));
      tick.textContent = input.checked ? tick.dataset.on : tick.dataset.off;
    }
  });
  // Gradio's tabs are announced as tabs, but only Tab moved between them: the arrow keys (and Home, End) move to the
  // next tab and open it, as a screen reader's user expects of tabs (WAI-ARIA's tabs pattern).
  const MOVES = { ArrowRight: 1, ArrowLeft: -1, Home: "first", End: "last" };
  document.addEventListener("keydown", (event) => {
    const here = event.target.closest?.("[role=tab]");
    if (!here?.closest("[role=tablist]") || !(event.key in MOVES)) return;
    const tabs = [...here.closest("[role=tablist]").querySelectorAll("[role=tab]:not([aria-disabled=true])")]
      .filter((tab) => tab.getClientRects().length);  // on a phone, Gradio folds some into its "..." menu
    const move = MOVES[event.key];
    const next = move === "first" ? tabs[0] : move === "last" ? tabs.at(-1)
      : tabs[(tabs.indexOf(here) + move + tabs.length) % tabs.length];
    event.preventDefault();
    next.click();
    next.focus();
  });
  // Gradio's accordions say nothing of being open or shut: each one's button tells it (aria-expanded), from the
  // class Gradio gives it when open.
  const expanded = () => {
    for (const button of document.querySelectorAll(".gr-accordion button.label-wrap")) {
      const open = String(button.classList.contains("open"));
      if (button.getAttribute("aria-expanded") !== open) button.setAttribute("aria-expanded", open);
    }
  };
  new MutationObserver(expanded).observe(document.body, { subtree: true, childList: true, attributeFilter: ["class"] });
  expanded();
}"""
# Words Gradio's own English lacks (6.31): a finished step is announced to screen readers as its key, "common.complete"
GRADIO_WORDS = {"common.complete": "Done"}
FAVOURITE = ("☆ Favourite", "★ Favourite")  # a review card's tick button, unticked and ticked
TO_REMOVE = ("Remove", "✓ To remove")  # a photo card's


def tick_button(list_id: str, file: str, ticked: bool, labels: tuple[str, str]) -> str:
    """A card's button that ticks `file` in the checkbox list `list_id` (PAGE_JS), pressed when it is ticked."""
    off, on = (html.escape(label) for label in labels)
    named = html.escape(f"{labels[0].lstrip('☆ ')}: {file}")  # what a screen reader says of it: "Remove: 01.jpg"
    return (f"<button type='button' class='hs-tick' data-tick='{list_id}' data-file='{html.escape(file)}' "
            f"data-off='{off}' data-on='{on}' aria-label='{named}' aria-pressed='{str(ticked).lower()}'>{on if ticked else off}</button>")


def plain(text: str) -> str:
    """`text` shown as it is in Markdown: a file name's underscores or asterisks ("my_best_photo_.jpg") made the rest
    italic, and dropped the marks."""
    return re.sub(r"([\\`*_\[\]<>~])", r"\\\1", text)


# The status line's way to the review: on a phone Gradio folds the later tabs into a "..." menu, so "see Review"
# alone sent the person looking for it. A Markdown link (the status is sanitised Markdown), which PAGE_JS turns into
# a press of the hidden #hs-open-review, which selects the tab.
OPEN_REVIEW = "[Review](#open-review)"


def card_action(button_id: str, file: str, label: str, title: str, confirm: str = "") -> str:
    """A card's button that runs the action of the hidden button `button_id` on `file` (PAGE_JS); one that asks the
    person to `confirm` first cannot be undone, and is drawn in red."""
    asks = f" data-confirm='{html.escape(confirm)}'" if confirm else ""
    danger = " hs-danger" if confirm else ""
    return (f"<button type='button' class='hs-card-action{danger}' data-press='{button_id}' data-file='{html.escape(file)}' "
            f"aria-label='{html.escape(f'{label}: {file}')}' title='{html.escape(title)}'{asks}>{html.escape(label)}</button>")


CROP_PREVIEW = 200  # px, the long side of an exported crop's preview on the Download tab
REVIEW_PAGE = 24  # review cards drawn at first, and added by each Show more (each of kept and dropped)
PREVIEW_CACHE = 256  # files whose previews are kept in memory (a review card's three: ~55 KB for real photos)


def data_uri(path: Path, side: int) -> str | None:
    """A JPEG preview at most `side` px long, or None for a file that is not a readable image."""
    return previews(path, (side,)).get(side)


def _version(path: Path) -> tuple[str, int, int] | None:
    """(path, modification time, size): what the preview caches key a file's version by; None when it is gone."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), stat.st_mtime_ns, stat.st_size


def previews(path: Path, sides: tuple[int, ...]) -> dict[int, str]:
    """JPEG previews at most each of `sides` px long (largest first), as data URIs, from one decoding; empty for a
    file that is not a readable image. Made once per version of a file (its size and modification time): the
    review is drawn again after every job, deletion and page load, and a 1024 px PNG takes ~50 ms to decode."""
    version = _version(path)
    return _previews(*version, sides) if version else {}


@functools.lru_cache(maxsize=PREVIEW_CACHE)
def _previews(path: str, mtime_ns: int, size: int, sides: tuple[int, ...]) -> dict[int, str]:
    try:
        image = load_rgb(Path(path), draft_side=max(sides))
    except ImageError:
        return {}
    made = {}
    for side in sorted(sides, reverse=True):  # each from the one before: one decoding, small resizes
        image.thumbnail((side, side))
        made[side] = jpeg_data_uri(image)
    return made


def face_uri(path: Path, face_box: tuple[float, ...], side: int) -> str | None:
    """A square JPEG of the face in a photo (`face_box`: x1, y1, x2, y2 in 0..1 of the upright photo, as intake and
    prepare give it) with room around it, `side` px, as a data URI; None for a file that is not a readable image."""
    version = _version(path)
    return _face_uri(*version, tuple(face_box), side) if version else None


@functools.lru_cache(maxsize=PREVIEW_CACHE)
def _face_uri(path: str, mtime_ns: int, size: int, face_box: tuple[float, ...], side: int) -> str | None:
    try:
        image = load_rgb(Path(path), draft_side=4 * side)
    except ImageError:
        return None
    x1, y1, x2, y2 = (v * s for v, s in zip(face_box, (image.width, image.height) * 2))
    half = min(0.8 * max(x2 - x1, y2 - y1), image.width / 2, image.height / 2)  # 1.6x the face, inside the photo
    cx = min(max((x1 + x2) / 2, half), image.width - half)
    cy = min(max((y1 + y2) / 2, half), image.height - half)
    crop = image.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half))).resize((side, side), Image.LANCZOS)
    return jpeg_data_uri(crop)


def forget_previews() -> None:
    """Drop every cached preview (Delete my data: no picture of the person stays in this process's memory)."""
    _previews.cache_clear()
    _face_uri.cache_clear()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _items(lines: list[str]) -> str:
    return "".join(f"<li>{html.escape(line)}</li>" for line in lines)


# -- photos (intake) --------------------------------------------------------------------------------


def photos_on_disk(ws: Workspace) -> list[tuple[str, int, int]]:
    """(name, bytes, modified) of each photo: what a page's photos panel was drawn from, to tell when another tab (or
    the CLI) has added, removed or deleted them since."""
    try:
        photos = list_photos(ws.selfies)
    except OSError:  # no folder (yet, or deleted meanwhile)
        return []
    found = []
    for photo in photos:
        with contextlib.suppress(OSError):  # removed between the listing and now (another tab)
            stat = photo.stat()
            found.append((photo.name, stat.st_size, stat.st_mtime_ns))
    return found


def photos_html(ws: Workspace, previews: dict[str, str] | None = None) -> str:
    """The set verdict with what to add, then every photo with its face box, verdict, reason and advice.
    `previews` (file -> data URI, from the intake just run) saves decoding each photo again (~40 ms a phone photo)."""
    photos = list_photos(ws.selfies) if ws.selfies.is_dir() else []
    report = read_json(ws.intake_report)
    if not photos:
        return f"<p class='hs-empty'>No photos yet: add {ws.photos_wanted} recent photos of yourself, alone, face visible.</p>"
    if report is None:  # judged elsewhere right now (another tab's upload, a batch, `make intake`): the app did not wait
        return (f"<p class='hs-empty'>Your photos ({len(photos)}) are being checked elsewhere (another tab, a "
                "terminal or a batch): reload the page in a moment to see the verdicts.</p>")
    s = report["set"]
    head = (f"<div class='hs-set {s['verdict']}' id='hs-set'><span class='hs-verdict'>{html.escape(s['verdict'])}</span>: "
            f"{html.escape(set_summary(s['usable'], s['total'], s.get('reason')))}<ul>{_items(s['advice'])}</ul></div>")
    previews = previews or {}
    cards = "".join(_photo_card(p, previews.get(p["file"]) or data_uri(ws.selfies / p["file"], PREVIEW_SIDE))
                    for p in report["photos"])
    return f"{head}<div class='hs-photos'>{cards}</div>"


def _photo_card(p: dict, uri: str | None) -> str:
    frame = "<div class='hs-frame'>(no preview)</div>"
    if uri:
        boxes = face_boxes_html(p.get("face_box"), p.get("other_faces", []), "hs-box")
        frame = f"<div class='hs-frame'><img src='{uri}' alt='{html.escape(p['file'])}'>{boxes}</div>"
    measured = _measured(p["checks"])
    return (f"<div class='hs-photo {p['verdict']}' data-file='{html.escape(p['file'])}'>{frame}"
            f"<b>{html.escape(p['file'])}</b> <span class='hs-verdict'>{html.escape(p['verdict'])}</span> "
            f"{tick_button('hs-remove-pick', p['file'], False, TO_REMOVE)}"
            f"<p>{html.escape(p.get('reason') or 'good photo')}</p><ul>{_items(p['advice'])}</ul>"
            f"{f'<details><summary>figures</summary><small>{html.escape(measured)}</small></details>' if measured else ''}</div>")


def _measured(checks: dict) -> str:
    """The figures of each check that fired, for whoever wants them: folded away on the card, as they are the
    measures' own names ("skin_light 121.0"), while the reason and advice above say what they mean."""
    fired = ((name, figures(check["value"])) for name, check in checks.items() if check["status"] != "ok")
    return "; ".join(f"{name}: {shown}" for name, shown in fired if shown)


def set_usable(ws: Workspace) -> bool:
    """Intake's verdict on the photos there now (the app re-runs intake on every change)."""
    report = read_json(ws.intake_report)
    return bool(report) and report["set"]["verdict"] != "reject" and bool(ws.selfies.is_dir() and list_photos(ws.selfies))


# -- the job ----------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def training_progress(ws: Workspace, run: str, since: float | None = None) -> dict | None:
    """progress.json, read once per status line: None when there is none, or it is older than `since` (an earlier
    training's)."""
    progress = read_json(ws.progress(run))
    return None if progress is None or (since is not None and progress["updated"] < since) else progress


def training_line(ws: Workspace, run: str, progress: dict) -> str:
    """Step, loss, ETA and the validation likeness, from progress.json (`training_progress`) and validation.json."""
    line = f"step **{progress['step']} of {progress['max_steps']}** · loss {progress['loss']:.4f}"
    if progress.get("eta_s") is not None and progress["step"] < progress["max_steps"]:
        line += f" · about {_clock(progress['eta_s'])} left"
    validation = read_json(ws.validation(run))
    if validation and validation.get("history"):
        last, best = validation["history"][-1], validation["best"]
        line += (f" · likeness {last['face_similarity']:.2f} at step {last['step']}"
                 f" (best {best['face_similarity']:.2f} at step {best['step']})")
    return line


def _progress_bar(progress: dict) -> str:
    return f"\n\n<progress value='{progress['step']}' max='{progress['max_steps']}' style='width:100%'></progress>"


RESTART = {"train": "Press Train to continue from the last checkpoint (with other photos, it starts over).",
           "generate": "Press Generate to start again.",
           "more": "Press More like this to start again."}  # what a stopped job of each kind asks of the person


ELSEWHERE = "started in a terminal, a batch or an earlier copy of this app"  # where a training the app did not start runs


RETRAIN, RECHECK = "retrain", "recheck"  # what a job would do first, the adapter being trained (app.training_due)


# what a job of each kind does before its first step's progress.json (train) or its first image (generate, more)
STARTING = {"train": "checking and preparing your photos, loading the model",
            "generate": "checking your photos, loading the model", "more": "loading the model"}


def job_markdown(ws: Workspace, run: str, job: Job | None, position: int, outdated: str = "",
                 elsewhere: bool = False) -> str:
    """The status line shown above every tab: the person's latest job (a generation's "Done", or a failure, only while
    nothing has changed since: then, as for no job, what the files say), or what is on disk (`outdated`: RETRAIN, the
    adapter was trained on other photos or settings than the person's now; RECHECK, the photos are checked and
    prepared again first, and trained on only if that changes them; `elsewhere`: a training this app did not start
    runs now, `training_now`)."""
    if job is None:
        return _disk_status(ws, run, outdated, elsewhere)
    what = "Training" if job.kind == "train" else "Generating"
    if job.state == QUEUED:
        waiting = position - 1  # behind what runs now (a job per GPU), which "0 jobs ahead" left out
        after = "what is running now" + (f" and {plural(waiting, 'job')} waiting before yours" if waiting else "")
        return f"**{what}: waiting in line**, after {after}. You can close this page."
    if job.state == RUNNING:
        elapsed = _clock(time.time() - (job.started or time.time()))
        bar = ""
        progress = training_progress(ws, run, since=job.started) if job.kind in ("train", "generate") else None
        if job.kind == "train":
            body, bar = ((training_line(ws, run, progress), _progress_bar(progress)) if progress
                         else (STARTING["train"], ""))
        elif progress and progress["step"] < progress["max_steps"]:  # a Generate whose chain trains first
            body = f"training your adapter again first (your photos or settings changed): {training_line(ws, run, progress)}"
            bar = _progress_bar(progress)
        else:
            body = images_line(ws, run, job)
        return f"**{what}** ({elapsed}): {body}. You can close this page: it runs on.{bar}"
    if job.state == FAILED and not elsewhere and not inputs_changed_since(ws, run, job):
        return f"**{what} failed:** {job.error}" + (f"\n\n→ {job.hint}" if job.hint else "")
    if job.state == STOPPED:
        return f"**{what} stopped.** " + RESTART[job.kind]
    if job.state == DONE and job.kind in IMAGE_KINDS and not (outdated or elsewhere) and not images_changed_since(ws, run, job):
        if job.images_made is None:  # counted once: an image deleted in the review since was still made
            job.images_made = images_made(ws, run, job)
        return f"**Done:** {plural(job.images_made, 'new image')}. {_results(ws, run) or ''}"
    return _disk_status(ws, run, outdated, elsewhere)


def images_changed_since(ws: Workspace, run: str, job: Job) -> bool:
    """Whether the images changed after `job` ended: a deletion, or a round or more like this from a terminal, each of
    which rewrites samples/manifest.json. Its "Done: 4 new images" then no longer says what happened last, and gives
    way to what the files say (it stayed until the next job, over a review of 3)."""
    return changed_after(job, ws.samples_dir(run) / MANIFEST)


def inputs_changed_since(ws: Workspace, run: str, job: Job) -> bool:
    """Whether the person changed what a failed `job` read after it ended: their photos (one added or removed changes
    the selfies folder), their settings.yaml, or the images (a deletion in the review: a damaged image stops scoring,
    and its error sends the person there). Its error and hint were about those as they were, and stayed on after the
    person had done what they asked ("only 2 usable photos" over 5 good ones) until the next job: the line then says
    what the files say (the set's verdict now), which is what pressing the button again meets. A failure no file
    shows the fix of (a full disk, a download) stays until the next job."""
    return changed_after(job, ws.selfies, ws.person_settings) or images_changed_since(ws, run, job)


def changed_after(job: Job, *paths: Path) -> bool:
    """Whether a file or folder of `paths` was written after `job` ended (one that is not there was not)."""
    def written_after(path: Path) -> bool:
        try:
            return path.stat().st_mtime > (job.finished or 0)
        except FileNotFoundError:  # a job that made no images, a person with no settings.yaml
            return False

    return any(written_after(path) for path in paths)


def images_line(ws: Workspace, run: str, job: Job) -> str:
    """A running generate or more job's progress: the images it has written (face-detailed versions aside); before
    the first, what it does meanwhile, as a training says until its first step's progress.json (checking the photos
    and loading the model, 18-60 s on the tiny profile and ~30 s on SDXL, read "0 of 4 images made so far")."""
    made = images_made(ws, run, job)
    if not made:
        return STARTING[job.kind] + (f" to draw {plural(job.expected_images, 'image')}" if job.expected_images else "")
    if job.expected_images:
        return f"{min(made, job.expected_images)} of {job.expected_images} images made so far"
    return f"{plural(made, 'image')} made so far"


def images_made(ws: Workspace, run: str, job: Job) -> int:
    """The images a generate or more job has written so far (face-detailed versions aside); one deleted between
    the listing and its reading (a discard in a terminal) is not counted, rather than failing the page's poll."""
    def made_since(path: Path) -> bool:
        try:
            return path.stat().st_mtime >= (job.started or 0)
        except FileNotFoundError:
            return False

    return sum(1 for p in ws.samples_dir(run).glob("*.png") if not p.name.endswith(".detail.png") and made_since(p))


def _results(ws: Workspace, run: str) -> str | None:
    scores = read_json(ws.scores(run))
    if not scores:
        return None
    count, waiting = len(scores["images"]), _unscored_count(ws, run, scores)
    more = f" ({waiting} more drawn, not scored yet)" if waiting else ""
    return (f"Your review holds {plural(count, 'image')}{more}, {scores['kept']} kept by the likeness filter and the "
            f"checks: see {OPEN_REVIEW}.")


def _trained_on(ws: Workspace) -> str:
    """" on 7 of your 9 photos (...)": what the last prepare kept, so that the photos left out are no surprise."""
    prepared = read_json(ws.prepare_report)
    if not prepared:
        return ""
    kept, total = prepared["kept"], prepared["kept"] + prepared["rejected"]
    left_out = " (those rejected in 1. Photos were left out)" if kept < total else ""
    return f" on {kept} of your {plural(total, 'photo')}{left_out}"


def _disk_status(ws: Workspace, run: str, outdated: str = "", elsewhere: bool = False) -> str:
    """No job in this app's memory (never started, or the app restarted), or the last one done: what the files say,
    and a training this app did not start (`elsewhere`), which they said was "interrupted" while it ran."""
    progress = read_json(ws.progress(run))
    unfinished = bool(progress) and progress["step"] < progress["max_steps"]
    if elsewhere:  # a finished progress is an earlier training's: this one has not reached its first step
        now, bar = ((training_line(ws, run, progress), _progress_bar(progress)) if unfinished
                    else ("starting (checking and preparing the photos, loading the model)", ""))
        return f"**Training, {ELSEWHERE}:** {now}. Train and Generate can start once it ends.{bar}"
    if unfinished:
        return (f"**Training was interrupted** at step {progress['step']} of {progress['max_steps']}: press Train to "
                "continue, from its last checkpoint if your photos and settings are as they were, else from the start.")
    report = read_json(ws.intake_report)
    refused = bool(report) and report["set"]["verdict"] == "reject"  # why Train cannot be pressed, on the tab it is on
    if (ws.adapter_dir(run) / ADAPTER_WEIGHTS).is_file():
        if refused:  # the photos changed since, or the settings: a job starts with intake, and would stop there
            return (f"**Your adapter is trained**, but your photo set is not usable now: {report['set']['reason']}. "
                    "Train and Generate would stop at it. See 1. Photos for what to change.")
        if outdated == RETRAIN:
            return ("**Your adapter was trained on other photos or settings** than you have now: Generate trains it again "
                    "first, or press Train to do only that.")
        if outdated == RECHECK:
            return (f"**Your adapter is trained**{_trained_on(ws)}. Settings that check or prepare your photos changed "
                    "since: Train or Generate checks them again first, and trains again only if that changes the "
                    "prepared photos.")
        return f"**Your adapter is trained**{_trained_on(ws)}. {_results(ws, run) or 'Pick styles and generate.'}"
    if refused:
        return f"Not trained yet: your photo set is not usable yet: {report['set']['reason']}. See 1. Photos for what to add."
    if report:
        return "Not trained yet: your photos are ready. Press Train (2. Train)."
    return "Not trained yet: add your photos, then press Train."


# -- review (scores) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """The Review tab as drawn: its HTML, and what the buttons under it offer."""

    html: str
    more: int  # cards of the lists on view not drawn yet (Show more)
    dropped: int  # images the checks dropped (their list is folded until asked for)


def review(ws: Workspace, run: str, shown: int = REVIEW_PAGE, dropped_open: bool = False,
           favourites: frozenset[str] = frozenset()) -> Review:
    """Ranked kept images, each at 400x400, 100 px and 40 px; the dropped ones with their reasons when asked for.
    At most `shown` cards of each list are drawn: every card carries its pictures (~55 KB), so a review of 192
    images would be a 10 MB page sent again after every job, deletion and page load (docs/app.md, Speed).
    Each card has a Favourite button, pressed for the images in `favourites` (the picker's ticks)."""
    samples = ws.samples_dir(run)
    scores = read_json(ws.scores(run))
    if scores is None:
        return Review("<p class='hs-empty'>Nothing generated yet.</p>", 0, 0)
    kept = [item for item in scores["images"] if item["kept"]]
    dropped = [item for item in scores["images"] if not item["kept"]]
    head = (f"<p id='hs-review-head'>{len(kept)} of {len(scores['images'])} kept, ranked by likeness to your "
            f"{scores['references']} reference photos (your threshold {scores['threshold']:.2f}). "
            f"Judge them small too: that is how most people will see your photo.{_unscored_note(ws, run, scores)}</p>")
    body = _cards(kept[:shown], samples, "hs-kept", len(kept), favourites) if kept else NOTHING_KEPT
    if dropped and dropped_open:
        body += (f"<h4>{plural(len(dropped), 'dropped image')}, and why</h4>"
                 + _cards(dropped[:shown], samples, "hs-dropped", len(dropped), favourites))
    more = max(0, len(kept) - shown) + (max(0, len(dropped) - shown) if dropped_open else 0)
    return Review(head + body, more, len(dropped))


def your_faces(ws: Workspace, count: int = 6) -> str:
    """The person's own photos as 100 px faces, the size of a card's avatar view, above the review: what the images
    are judged against, side by side at the size most people will see. Those are the photos prepare kept (their
    embeddings are the references scoring compares with); before any training, the usable ones intake found. Drawn
    with the review, so a photo added or removed after training shows only once it is trained on and scored with."""
    prepared = read_json(ws.prepare_report)
    if prepared is not None:
        photos = [{**p, "face_box": _fractions(ws.selfies / p["file"], p["face_box"])} for p in prepared.get("photos", [])
                  if p.get("kept") and p.get("face_box")]
    else:
        intake = read_json(ws.intake_report) or {}
        photos = [p for p in intake.get("photos", []) if p.get("verdict") != "reject" and p.get("face_box")]
    shown = f" ({count} of {len(photos)})" if len(photos) > count else ""
    faces = [(p["file"], face_uri(ws.selfies / p["file"], p["face_box"], CARD_SIDES[1])) for p in photos[:count] if p["face_box"]]
    circles = "".join(f"<img class='hs-avatar' src='{uri}' alt='{html.escape(file)}'>" for file, uri in faces if uri)
    return f"<div class='hs-yours' id='hs-yours'><span>You, in your photos{shown}:</span>{circles}</div>" if circles else ""


def _fractions(photo: Path, face_box: list[float]) -> list[float] | None:
    """A face box in 0..1 of the photo; prepare_report.json before 2026-12-05 gave it in the photo's pixels (a person
    prepared then is not prepared again for it). None when the photo cannot be read."""
    if max(face_box) <= 1:
        return face_box
    try:
        width, height = original_size(photo)
    except (OSError, ValueError):
        return None
    return [v / s for v, s in zip(face_box, (width, height, width, height))]


def _cards(items: list[dict], samples: Path, elem_id: str, total: int, favourites: frozenset[str]) -> str:
    """A grid of review cards, saying how many of `total` it shows when not all."""
    grid = "".join(_card(item, samples, item["file"] in favourites) for item in items)
    note = f"<p class='hs-shown'>Showing {len(items)} of {total}.</p>" if len(items) < total else ""
    return f"<div class='hs-grid' id='{elem_id}'>{grid}</div>{note}"


def _card(item: dict, samples: Path, favourite: bool) -> str:
    """A review card with a preview made at each size it is shown (the page carries ~1.2x the big one, not 3x), and
    its More like this, Favourite and Delete buttons (PAGE_JS)."""
    file = item["file"]
    actions = (f"<span class='hs-actions'>"
               f"{card_action('hs-card-more', file, 'More like this', 'New images drawn from this one, as close as How close (below the review) says')}"
               f"{tick_button('hs-favourites', file, favourite, FAVOURITE)}"
               f"{card_action('hs-card-delete', file, 'Delete', 'Delete this image for good', f'Delete {file} for good?')}</span>")
    return review_card(item, previews(samples / item["file"], CARD_SIDES).get, "hs-", actions)


NOTHING_KEPT = ("<p id='hs-nothing-kept'>No image passed the checks yet. Look at the dropped ones and why (below): if they are "
                "dropped for likeness, generate again (each round draws new seeds) or add more varied photos of yourself and "
                "train again; if for framing or a face not found, other styles may suit better.</p>")


def review_choices(ws: Workspace, run: str) -> list[tuple[str, str]]:
    """(label, file) for the favourites and more-like-this pickers: kept images by rank, then the dropped ones."""
    scores = read_json(ws.scores(run))
    if scores is None:
        return []
    return [(f"#{i['rank']} {i['file']}" if i["kept"] else f"{i['file']} (dropped)", i["file"]) for i in scores["images"]]


def refusal_html(exc: HeadshotsError) -> str:
    """Why an action was not done, and what to do, in the place its result would have gone."""
    hint = f" {html.escape(exc.hint)}" if exc.hint else ""
    return f"<p class='hs-refused'><b>Not done:</b> {html.escape(exc.message)}{hint}</p>"


def crops_html(manifest: Path) -> str:
    """Each exported image's crops as they will look (export.json beside them), at most 200 px: the LinkedIn one in
    the circle LinkedIn shows it in, each with its size and any note (a source too small for it)."""
    rows = []
    for item in json.loads(manifest.read_text())["images"]:
        crops = []
        for crop in item["exports"]:
            uri = data_uri(manifest.parent / crop["path"], CROP_PREVIEW)
            size = crop["size"]
            shape = " hs-round" if size.startswith("linkedin") else ""
            picture = f"<img class='hs-crop{shape}' src='{uri}' alt='{html.escape(size)}'>" if uri else "(no preview)"
            note = f"<br><small>{html.escape(crop['note'])}</small>" if crop.get("note") else ""
            crops.append(f"<figure>{picture}<figcaption>{html.escape(size)}{note}</figcaption></figure>")
        rows.append(f"<div class='hs-crops' data-file='{html.escape(item['file'])}'><b>{html.escape(item['file'])}</b>"
                    f"<div class='hs-crop-row'>{''.join(crops)}</div></div>")
    return "".join(rows)


def _unscored_count(ws: Workspace, run: str, scores: dict) -> int:
    """How many images were drawn that scoring never reached (it was stopped): the review's count said "0 of 5 kept"
    beside 64 of them, which only the delete list named (a cross-surface walk)."""
    try:
        manifest = read_manifest(ws, run) or {"images": []}
    except HeadshotsError:  # unreadable: the delete list says what it can
        return 0
    scored = {item["file"] for item in scores["images"]}
    return sum(1 for entry in manifest["images"] if entry["file"] not in scored)


def _unscored_note(ws: Workspace, run: str, scores: dict) -> str:
    waiting = _unscored_count(ws, run, scores)
    if not waiting:
        return ""
    return (f" <strong>{plural(waiting, 'more image')} drawn but not scored yet</strong> (scoring was stopped): the next "
            "Generate or More like this scores them with the rest.")


def discard_choices(ws: Workspace, run: str, choices: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(label, file) for the delete picker: the review's images (`choices`, when already read), then any the
    manifest names that scoring has not reached (a damaged image stops scoring, and its error sends the person
    here to delete it)."""
    choices = review_choices(ws, run) if choices is None else choices
    try:
        manifest = read_manifest(ws, run) or {"images": []}
    except HeadshotsError:  # unreadable: the review's own images can still be deleted
        return choices
    scored = {file for _, file in choices}
    return choices + [(f"{e['file']} (not scored)", e["file"]) for e in manifest["images"] if e["file"] not in scored]
