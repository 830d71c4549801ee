"""User-facing errors.

Every failure a person can cause (bad photo, bad config key, missing weights, unsafe
user name...) is raised as a `HeadshotsError` carrying what went wrong *and* what to do.
The CLIs print these as two plain lines and exit non-zero, never as a traceback.
"""

from __future__ import annotations

import errno
import re


class HeadshotsError(Exception):
    """An error the user can fix. `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


def first_line(exc: BaseException) -> str:
    """A library's error in one line, for a message that says what was wrong: its first line (torch's and datasets'
    go on for several, with advice meant for the library's own users), or its type where it says nothing."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]


class ConfigError(HeadshotsError):
    """A config key, value or file is wrong."""


class ImageError(HeadshotsError):
    """A file could not be used as a photo."""


class WeightsError(HeadshotsError):
    """Model weights could not be found or loaded."""


# What the disk or the folder refused, by errno: a full disk or quota, a file size limit, a read-only or forbidden
# file or folder. Other OSErrors are bugs or races, not something the person can fix, and stay tracebacks.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_ALLOWED = (errno.EROFS, errno.EACCES, errno.EPERM)
_OS_CODE = re.compile(r"Os \{ code: (\d+)")  # how safetensors (Rust) reports the OS error it met
_TORCH_WRITE = "file write failed"  # how torch.save (checkpoints' optimizer state) reports a write the disk refused


def storage_error(exc: BaseException) -> HeadshotsError | None:
    """A write (or read) the disk or folder refused, as the person's error (which file, why, what to do); None for
    anything else. Whatever the command finished before stays: files are written to a temporary name and renamed,
    so a rerun after the fix carries on. safetensors (adapters) and torch.save (checkpoints) report the OS error in
    their own words."""
    code, where = None, ""
    if isinstance(exc, OSError):
        code, where = exc.errno, f" {exc.filename}" if exc.filename else ""
    elif type(exc).__name__ == "SafetensorError" and (found := _OS_CODE.search(str(exc))):
        code, where = int(found.group(1)), " a checkpoint or adapter file"
    elif isinstance(exc, RuntimeError) and _TORCH_WRITE in str(exc):
        code, where = errno.ENOSPC, " a checkpoint"  # torch does not say why: a full disk is what it almost always is
    if code in NO_ROOM:
        return HeadshotsError(f"Could not write{where}: {errno.errorcode.get(code, code)} (no room on the disk, or a file size limit).",
                              "Free some disk space (or raise the limit), then run the same command again: what it finished is kept.")
    if code in NOT_ALLOWED:
        return HeadshotsError(f"Could not write or read{where}: {errno.errorcode.get(code, code)} (read-only, or not yours).",
                              "Make it writable and readable for you (or point paths.* elsewhere), then run the same command "
                              "again: what it finished is kept.")
    return None
