"""python -m infer {generate,detail,score,export,more,discard,recover,all} --user NAME [--profile tiny] [infer.styles=[linkedin,actor] ...]

`all` and `export`, when they end well, record their stage as done (headshots/stages.py), so the web app and
the batch runner do not do them again.
"""

from __future__ import annotations

import sys

from headshots.cli import build_parser, run
from headshots.config import Config
from headshots.stages import run_recorded
from headshots.workspace import Workspace


def _generate(cfg: Config) -> None:
    from infer.generate import generate

    generate(cfg)


def _score(cfg: Config) -> None:
    from infer.gallery import score_and_show

    print(f"gallery: {score_and_show(cfg)[1]}")


def _export(cfg: Config) -> None:
    from infer.export import export

    print(f"export: {run_recorded('export', cfg, lambda: export(cfg))}")


def _detail(cfg: Config) -> None:
    """The pass, then scoring: which version of each image wins is the review's to say, so the gallery is not left
    showing the pass as not run."""
    from infer.detail import detail

    detail(cfg)
    _score(cfg)


def _discard(cfg: Config) -> None:
    from infer.discard import discard

    print(f"deleted: {', '.join(discard(cfg)) or 'no files (they were deleted before)'}")
    gallery = Workspace.from_config(cfg).gallery(cfg.run)
    if gallery.is_file():  # scored again; gone with the last image
        print(f"gallery: {gallery}")


def _recover(cfg: Config) -> None:
    from infer.manifest import recover

    result = recover(cfg)
    for label, names in (("added from their own entries", result.adopted), ("gone, taken out", result.missing),
                         ("left alone (no entry of their own)", result.foreign)):
        if names:
            print(f"{label}: {', '.join(names)}")
    if result.broken:
        print(f"the unreadable manifest is kept as {result.broken}")
    if result.remembered:
        print(f"not on disk, their names never given again: {', '.join(result.remembered)}")
    if result.images:
        _score(cfg)


def _more(cfg: Config) -> None:
    from infer.gallery import make_and_review
    from infer.variations import more_like

    print(f"gallery: {make_and_review(cfg, more_like)[1]}")


def _all(cfg: Config) -> None:
    from infer.gallery import make_and_review

    print(f"gallery: {run_recorded('infer', cfg, lambda: make_and_review(cfg))[1]}")


COMMANDS = {"generate": _generate, "detail": _detail, "score": _score, "export": _export, "more": _more, "discard": _discard,
            "recover": _recover, "all": _all}
HELP = {
    "generate": "sample N new images per style from base model + adapter (added to the earlier ones)",
    "detail": "face-detail pass: re-draw each face at full resolution with the adapter (keeps both versions), then score",
    "score": "face-similarity filter, ranking, scores.json and gallery.html",
    "more": "more like this: infer.more.count variations of infer.more.image (img2img from it; + face detail when enabled), then score",
    "export": "crop infer.export_files, else your favourites, else the kept images, for LinkedIn, 4:5 portrait and CV",
    "discard": "delete infer.discard_files (and their face-detailed versions) for good, then score what is left",
    "recover": "rebuild samples/manifest.json from the images' own entries (a broken or lost one, images it misses), then score",
    "all": "generate (then the face-detail pass when infer.detail.enabled) then score",
}

if __name__ == "__main__":
    sys.exit(run(build_parser("python -m infer", "Generate, filter and review a user's headshots.", HELP, "infer.images_per_style=4"), COMMANDS,
                 interrupted="what was finished is kept (images drawn so far are scored by the next command)"))
