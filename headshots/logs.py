"""The one logging path: standard `logging`, configured once by the CLIs."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(verbose: bool = False) -> None:
    """Plain, short log lines on stderr; quiet third-party chatter unless verbose. Under `accelerate launch` only the
    first process says what happens (every process does the same): the others log warnings and errors."""
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("RANK", "0") != "0" and not verbose:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # huggingface_hub gives its logger a handler of its own and also passes each record on to ours: every line of it
    # (a download's retry warnings) printed twice, once bare. Its records go through ours alone.
    import huggingface_hub.utils.logging  # noqa: F401 - its import adds that handler

    logging.getLogger("huggingface_hub").handlers.clear()
    if not verbose:
        for noisy in ("diffusers", "transformers", "accelerate", "datasets", "urllib3", "PIL", "httpx", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        # A phone or an editing app that wrote a broken EXIF block: Pillow says so while reading it, among the progress
        # bars, and reads the photo all the same (its orientation and date, if lost, are the checks' to report)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")  # EXIF is read as TIFF tags
        warnings.filterwarnings("ignore", message="Possibly corrupt EXIF MakerNote", category=UserWarning)
        # On CPUs with AVX512-BF16, importing bitsandbytes (peft does, to attach LoRA) tries an optional 4-bit
        # CPU kernel from the Hub and warns that it failed. This project never runs 4-bit matmuls on a CPU
        # (its one bitsandbytes use, 8-bit AdamW, is a GPU optimiser), so on every command that is noise.
        logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_4bit_cpu_kernel_notice)


def _not_the_4bit_cpu_kernel_notice(record: logging.LogRecord) -> bool:
    return "gemm_4bit_forward" not in record.getMessage()


def plural(count: int, noun: str) -> str:
    """A count for a log line or message: '1 new image', '3 new images'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def printable(name: str) -> str:
    """A file name as one safe line of a console table: a newline, tab or terminal escape in it (a name is the
    person's to choose) is shown escaped instead of breaking the table or driving the terminal."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in name)
