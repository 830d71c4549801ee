"""Shared core of the headshots pipeline: config, workspace paths, image I/O, faces, model loading.

`train` and `infer` both depend on this package and never on each other; they talk
through files on disk whose formats are documented in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
