"""Shared core of the headshots pipeline: config, workspace paths, image I/O, faces, model loading.

`train` and `infer` both depend on this package and never on each other; they talk
through files on disk whose formats are documented in docs/ARCHITECTURE.md.
"""

import os
import sys

__version__ = "0.1.0"


def _no_hub_telemetry() -> None:
    """The Hugging Face libraries add usage details to their requests and, to name the AI agent running them, fetch a
    list of agents from the Hub, even for a model read from the cache alone: off (HF_HUB_DISABLE_TELEMETRY) unless the
    person set it otherwise. Set here, on the package's first import, since those libraries read it when they are
    imported (diffusers keeps its own copy): in the environment, for them and the processes this one starts, and in
    huggingface_hub's settings when it came first (the web app imports it with Gradio)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and os.environ["HF_HUB_DISABLE_TELEMETRY"].strip().lower() in ("1", "true", "yes", "on"):
        hub.HF_HUB_DISABLE_TELEMETRY = True


_no_hub_telemetry()
