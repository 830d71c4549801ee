"""python -m infer {generate,score,export,all} --user NAME [--profile tiny] [infer.styles=[linkedin,actor] ...]"""

from __future__ import annotations

import sys

from headshots.cli import build_parser, run
from headshots.config import Config


def _generate(cfg: Config) -> None:
    from infer.generate import generate

    generate(cfg)


def _score(cfg: Config) -> None:
    from infer.gallery import write_gallery
    from infer.score import score

    score(cfg)
    print(f"gallery: {write_gallery(cfg)}")


def _export(cfg: Config) -> None:
    from infer.export import export

    print(f"export: {export(cfg)}")


def _all(cfg: Config) -> None:
    _generate(cfg)
    _score(cfg)


COMMANDS = {"generate": _generate, "score": _score, "export": _export, "all": _all}
HELP = {
    "generate": "sample N images per style from base model + adapter",
    "score": "face-similarity filter, ranking, scores.json and gallery.html",
    "export": "crop kept (or infer.export_files) images for LinkedIn, 4:5 portrait and CV, centred on the face",
    "all": "generate then score",
}

if __name__ == "__main__":
    sys.exit(run(build_parser("python -m infer", "Generate, filter and review a user's headshots.", HELP), COMMANDS))
