"""The one place that says which Chromium the browser tests and scripts drive, and how.

Debian's chromium (`apt-get install -y chromium`; `make setup` installs it under CI), or any Chromium named by
HEADSHOTS_CHROMIUM. The flags keep a headless browser quiet on a machine with no outside network: no background
connections, no component updates, no sync (each would be refused, many at a time, at every start)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

CHROMIUM = Path(os.environ.get("HEADSHOTS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
# How long an `expect` waits for the page: 15 s, not Playwright's 5. On 2 cores shared by test workers (make test) a
# Gradio event's answer once took longer than 5 s to move the focus; a wait ends as soon as the page is right.
expect.set_options(timeout=15_000)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def need_chromium(what: str) -> Path:
    """The browser, or skip the calling test saying what it would have checked."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install it (apt-get install -y chromium) to {what}")
    return CHROMIUM
