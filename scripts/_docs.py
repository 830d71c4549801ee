"""Writing a script's figures into a doc, shared by the scripts in scripts/.

Two shapes. docs/benchmarks.md is split at its level-2 headings and each benchmark owns one "## ..." section
(`write_section`). A doc whose figures sit among hand-written prose, as docs/intake_quality.md's do, holds each
script's figures between two comment lines (`write_block`): the script rewrites what lies between them and never
the prose around them, so the explanations are edited as Markdown, not as string literals in a script.
Re-running one script must not disturb the others' parts.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmarks\n\nEach figure comes from the script named in its section."


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace the section whose heading line is exactly `heading` ("## ...") with `body`, or append it."""
    text = path.read_text() if path.is_file() else HEADER
    parts = [part.rstrip() for part in re.split(r"(?m)^(?=## )", text) if part.strip()]
    section = f"{heading}\n\n{body.strip()}"
    same = [i for i, part in enumerate(parts) if part.split("\n", 1)[0] == heading]
    if same:
        parts[same[0]] = section
    else:
        parts.append(section)
    path.write_text("\n\n".join(parts) + "\n")


def block_marks(name: str) -> tuple[str, str]:
    """The comment lines around the block `name` (not shown when the Markdown is rendered)."""
    return f"<!-- {name}: generated, edit the script instead -->", f"<!-- end of {name} -->"


def write_block(path: Path, name: str, body: str) -> None:
    """Replace what lies between block `name`'s two marks with `body`, or, where the file has no such block yet
    (a new file, or `--out` elsewhere), append the block at its end."""
    begin, end = block_marks(name)
    text = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin not in text:
        path.write_text((text.rstrip() + "\n\n" if text.strip() else "") + block + "\n")
        return
    before, rest = text.split(begin, 1)
    if end not in rest:
        raise SystemExit(f"error: {path} has the line {begin!r} without its {end!r}: put it back after the block's "
                         "last line (or delete the first), then run again")
    path.write_text(before + block + rest.split(end, 1)[1])
