"""Writing one benchmark's section of docs/benchmarks.md, shared by the scripts in scripts/.

Each script owns one "## ..." section and re-running it must not disturb the others, so the file is
split at its level-2 headings and only the section with the same heading line is replaced (in place,
so the page keeps its order) or, the first time, appended.
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
