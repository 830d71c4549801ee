"""The one logging path: standard `logging`, configured once by the CLIs."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(verbose: bool = False) -> None:
    """Plain, short log lines on stderr; quiet third-party chatter unless verbose."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not verbose:
        for noisy in ("diffusers", "transformers", "accelerate", "datasets", "urllib3", "PIL", "httpx", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=FutureWarning)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
