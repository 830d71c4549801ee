"""Starting the web app for a test: in this process, on a free loopback port, over a workspace in a
test's temporary folder, on the tiny profile with small settings (a few training steps, one image)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.accounts import Accounts
from service.app import HeadshotsApp, Settings

SMALL = ("train.max_steps=4", "train.checkpoint_every=2", "infer.images_per_style=1", "infer.steps=2", "infer.more.count=2",
         "wandb.mode=disabled")


@dataclass
class Server:
    url: str
    app: HeadshotsApp
    data: Path
    outputs: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(root: Path, tiny_model: Path, analyzer, *overrides: str, accounts: dict[str, str] | Path | None = None) -> Iterator[Server]:
    """`accounts`: name -> password (or hash), or a password file, read again when it changes, as `main` reads it."""
    data, outputs = root / "data", root / "outputs"
    settings = Settings("tiny", None, [f"paths.data_root={data}", f"paths.outputs_root={outputs}",
                                       f"paths.cache_root={root / 'cache'}", f"model.pretrained={tiny_model}", *SMALL, *overrides])
    if isinstance(accounts, Path):
        signing_in = Accounts.from_file(accounts)
    else:
        signing_in = None if accounts is None else Accounts(accounts)
    app = HeadshotsApp(settings, analyzer=analyzer, accounts=signing_in)
    try:
        url = app.launch("127.0.0.1", free_port(), block=False)
        yield Server(url, app, data, outputs)
    finally:
        app.close()
