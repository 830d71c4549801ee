"""User-facing errors.

Every failure a person can cause (bad photo, bad config key, missing weights, unsafe
user name...) is raised as a `HeadshotsError` carrying what went wrong *and* what to do.
The CLIs print these as two plain lines and exit non-zero, never as a traceback.
"""

from __future__ import annotations


class HeadshotsError(Exception):
    """An error the user can fix. `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ConfigError(HeadshotsError):
    """A config key, value or file is wrong."""


class ImageError(HeadshotsError):
    """A file could not be used as a photo."""


class WeightsError(HeadshotsError):
    """Model weights could not be found or loaded."""
