"""The web app's accounts: who may sign in, read from a password file (docs/app.md).

One line per person, `name:secret`. The secret is a scrypt hash, `$scrypt$n=131072,r=8,p=1$<salt>$<key>` (base64),
as `make account` writes it (`python -m service.accounts --password-file FILE --add-account NAME`; the app's own
`python -m service.app` takes the same options): someone who reads the file, or a backup of it, learns no password.
A password typed as it is (`alice:long-secret`, the file's first form) is still read, with a warning naming its
lines, so a file written by hand keeps working until it is replaced.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from headshots.cli import parse, print_error
from headshots.config import validate_user_name
from headshots.errors import ConfigError, HeadshotsError, storage_error
from headshots.logs import get_logger
from headshots.workspace import write_atomic

log = get_logger(__name__)

SCRYPT = "$scrypt$"
# scrypt's cost, OWASP's recommended minimum: 128 MiB and about 0.4 s a check on one core (the app checks in a worker
# thread). Each line keeps its own cost, so lines written later can be made dearer without breaking older ones.
COST = {"n": 2**17, "r": 8, "p": 1}
_HASHED = re.compile(r"\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
ADD_ACCOUNT = "python -m service.app --password-file {path} --add-account NAME"  # what the messages tell a person to run
FORMAT_HINT = f"One person per line: `name:` and a hash from `{ADD_ACCOUNT.format(path='FILE')}`."


class Accounts:
    """Who may sign in: each name's secret, from a password file that is read again when it changes (`reload`), so
    `make account` takes effect while the app runs; or given as they are (`path` None: tests)."""

    def __init__(self, secrets: dict[str, str], path: Path | None = None, seen: tuple[int, int, int] | None = None) -> None:
        self.secrets, self.path, self.seen = secrets, path, seen  # seen: the file's `_version` when it was read

    @classmethod
    def from_file(cls, path: Path) -> Accounts:
        version = _version(path)  # before reading: a change made meanwhile is read again at the next `reload`
        return cls(read_password_file(path), path, version)

    def get(self, name: str) -> str | None:
        return self.secrets.get(name)

    def spelling(self, name: str) -> str | None:
        """The account `name` is, in the file's spelling, whatever its case; None if it is none."""
        return _same_name(self.secrets, name)

    def reload(self) -> set[str]:
        """Read the file again if it changed; returns the names whose sign-ins must end: removed, or given another
        password (the old one may be why). A file that cannot be read now leaves the accounts as they were, said in
        the log once per change."""
        if self.path is None or (version := _version(self.path)) == self.seen:
            return set()
        self.seen = version
        try:
            now = read_password_file(self.path)
        except ConfigError as exc:
            log.warning("%s changed, but cannot be used: %s %s The accounts read before stay.", self.path, exc.message, exc.hint)
            return set()
        ended = {name for name, secret in self.secrets.items() if now.get(name) != secret}
        added = sorted(set(now) - set(self.secrets))
        changes = [f"added {', '.join(added)}"] if added else []
        if ended:
            changes.append(f"sign-ins ended for {', '.join(sorted(ended))}")
        self.secrets.clear()
        self.secrets.update(now)
        log.info("%s read again: %s", self.path, "; ".join(changes) or "no account changed")
        return ended


def hash_password(password: str) -> str:
    """A password file's secret for `password`: scrypt with a fresh salt, its cost written beside it."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, COST["n"], COST["r"], COST["p"])
    return f"{SCRYPT}n={COST['n']},r={COST['r']},p={COST['p']}${_b64(salt)}${_b64(key)}"


def password_matches(secret: str, password: str) -> bool:
    """Whether `password` is the one `secret` (a line of the file, checked when it was read) was made from; compared
    in constant time either way."""
    hashed = _HASHED.fullmatch(secret)
    if hashed is None:
        return hmac.compare_digest(secret.encode(), password.encode())
    n, r, p, salt, key = hashed.groups()
    return hmac.compare_digest(_scrypt(password, base64.b64decode(salt), int(n), int(r), int(p)), base64.b64decode(key))


def read_password_file(path: Path) -> dict[str, str]:
    """Each account's name (a valid user name: the folder it may open) and secret. Warns of passwords kept as typed,
    and of a file other users of this machine may read."""
    accounts, typed = {}, []
    for number, name, secret in _accounts_in(path, _read(path)):
        if (same := _same_name(accounts, name)) is not None:  # "Alice" and "alice" would share one folder on macOS's and Windows' file systems
            raise ConfigError(f"{path}, line {number}: {name!r} is already an account ({same!r}; case does not tell folders apart everywhere).",
                              "One line per person, each name different in more than its case.")
        if secret.startswith(SCRYPT):
            _check_hash(path, number, secret)
        else:
            typed.append(name)
        accounts[name] = secret
    if not accounts:
        raise ConfigError(f"Password file {path} has no accounts.", f"Add one with: {ADD_ACCOUNT.format(path=path)}")
    if typed:
        log.warning("%s keeps the passwords of %s as typed: anyone who reads the file can sign in as them. Replace "
                    "each with its hash: %s", path, ", ".join(typed), ADD_ACCOUNT.format(path=path))
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s can be read by other users of this machine: chmod 600 %s", path, path)
    return accounts


def add_account(path: Path, name: str, password: str) -> bool:
    """Set `name`'s password in the file (made if missing), as a hash: the line of that name (in any case; its
    spelling is kept) is replaced, or one added; every other line is kept as it is. The file is written whole, through a temporary file
    readable by its owner only. Returns whether the account is new."""
    name = validate_user_name(name)
    if not password:
        raise ConfigError("An empty password would let anyone sign in with that name.", "Type a password.")
    text = _read(path) if path.is_file() else ""
    # a file it could not read back is refused: rewriting it would keep its faults
    known = {name: number for number, name, _ in _accounts_in(path, text)}
    lines = text.splitlines()
    if (same := _same_name(known, name)) is None:
        lines.append(f"{name}:{hash_password(password)}")
    else:  # spelt as the file has it: the name of the person's folder
        lines[known[same] - 1] = f"{same}:{hash_password(password)}"
    text = "\n".join(lines) + "\n"
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))  # made 0600, never wider
    return same is None


def _same_name(names: Iterable[str], name: str) -> str | None:
    """The one of `names` that is `name` whatever its case: names are folders, and "Alice" and "alice" would share
    one on macOS's and Windows' file systems, so a file never holds both."""
    return next((known for known in names if known.casefold() == name.casefold()), None)


def _read(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"Password file {path} does not exist.", f"Make it with: {ADD_ACCOUNT.format(path=path)}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Password file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                          "Save it as plain UTF-8 text, one `name:password` line per person.") from exc


def _accounts_in(path: Path, text: str) -> list[tuple[int, str, str]]:
    """The file's accounts as (line number, name, secret), comments and blank lines left out."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep or not secret:
            raise ConfigError(f"{path}, line {number}: expected `name:password`.", FORMAT_HINT)
        found.append((number, validate_user_name(name.strip()), secret))
    return found


def _check_hash(path: Path, number: int, secret: str) -> None:
    """A hashed secret in the format `hash_password` writes, with a cost this machine can compute."""
    hashed = _HASHED.fullmatch(secret)
    n, r, p = (int(v) for v in hashed.groups()[:3]) if hashed else (0, 0, 0)
    if hashed is None or n < 2 or n & (n - 1) or not (1 <= r <= 64 and 1 <= p <= 16 and 128 * n * r <= 2**31):
        raise ConfigError(f"{path}, line {number}: the hash is damaged or not one this app writes.", FORMAT_HINT)


def _version(path: Path) -> tuple[int, int, int] | None:
    """What tells one state of the file from the next: its inode (`add_account` replaces the file), size and
    modification time; None while it is missing."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=129 * n * r + 2**20, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def set_password(path: Path | None, name: str, verbose: bool) -> int:
    """--add-account: the password asked for twice on a terminal (not echoed), else read as one line of standard input
    (a script's pipe), and stored in the password file as its hash."""
    try:
        if path is None:
            raise ConfigError("--add-account needs the file to write to.", "Add --password-file FILE (made if missing).")
        if sys.stdin.isatty():
            password = getpass.getpass(f"Password for {name}: ")
            if getpass.getpass("The same again: ") != password:
                raise ConfigError("The two passwords differ; nothing was changed.", "Run the command again.")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        new = add_account(path, name, password)
    except HeadshotsError as exc:
        return print_error(exc, verbose)
    except OSError as exc:  # a folder that cannot be written, a full disk: the file is as it was
        if (refused := storage_error(exc)) is None:
            raise
        return print_error(refused, verbose)
    print(f"{name}: {'account added to' if new else 'password changed in'} {path} (stored as a hash; the file is readable by you only)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`make account`: this module alone, so the password is asked for at once (the web app's module, which takes
    --add-account too, loads Gradio and torch first: `make account` took 6.4-7.4 s with a piped password, against
    0.8-1.0 s now, 0.4 s of it the hash; three runs each)."""
    parser = argparse.ArgumentParser(prog="python -m service.accounts", description="Set a web-app password, stored as its hash.")
    parser.add_argument("--password-file", type=Path, required=True, help="one `name:hash` per line (made if missing)")
    parser.add_argument("--add-account", metavar="NAME", required=True, help="whose password to set (asked for)")
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    args = parse(parser, argv)
    return set_password(args.password_file, args.add_account, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
