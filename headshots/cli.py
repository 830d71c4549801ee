"""One CLI style for every stage:

    python -m <stage> <command> --user NAME [--profile tiny] [--config my.yaml] [key=value ...]

Errors a user can fix are printed as two lines (what, then what to do) with exit status 2;
an interrupt (Ctrl-C, or SIGTERM: `kill`, `timeout`, a rented GPU taken back) says how to resume. No tracebacks
unless --verbose.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from headshots.config import Config, load_config
from headshots.errors import HeadshotsError, storage_error
from headshots.logs import setup_logging
from headshots.workspace import private_files


def build_parser(prog: str, description: str, commands: Mapping[str, str],
                 example: str = "train.max_steps=500") -> argparse.ArgumentParser:
    """`example`: an override the commands read, for --help. Which run is an override too, so --help names it (a
    CLI walk found no way to tell from --help how to work on a second run)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("command", choices=list(commands), help="; ".join(f"{k}: {v}" for k, v in commands.items()))
    parser.add_argument("--user", required=True, help="whose data: data/users/<user>/")
    return add_config_args(parser, overrides_help=f"config overrides, e.g. {example}; run=NAME works on "
                                                  "outputs/<user>/NAME/ (default: run=default)")


def add_config_args(parser: argparse.ArgumentParser, *, profile_help: str = "model profile in configs/model/ (default: sdxl)",
                    config_help: str = "extra YAML file layered over the defaults",
                    overrides_help: str = "config overrides, e.g. train.max_steps=500") -> argparse.ArgumentParser:
    """The options every command shares: which settings (--profile, --config, key=value ...) and --verbose."""
    parser.add_argument("--profile", default=None, help=profile_help)
    parser.add_argument("--config", default=None, help=config_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("overrides", nargs="*", help=overrides_help)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Options and key=value overrides in any order (`--users a x=1 --profile tiny y=2`), then logging set up, and the
    files the command makes kept private (`private_files`)."""
    args = parser.parse_intermixed_args(argv)
    setup_logging(args.verbose)
    private_files()
    return args


TRAINING_RESUMES = ("what was finished is kept; run the same command again (training goes on from its last checkpoint, "
                    "if it had saved one)")


@contextmanager
def signal_handled(signum: signal.Signals, handler: Callable | int) -> Iterator[None]:
    """`handler` for `signum` while the block runs, the caller's again after. Only the main thread can set one:
    elsewhere (a thread of the web app) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, before)


@contextmanager
def environment_set(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ while the block runs (what a process started meanwhile inherits), then each variable
    as it was: set to its old value again, or removed."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def shielded_from_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM held off while the block runs: the clean-up after a first one (a batch's statuses written,
    Ray stopped and its logs deleted; the web app's jobs ended and Gradio's copies of the headshots it served deleted)
    takes seconds, and a second, pressed or sent a moment later, cut it short and left files that name the people (a
    batch walk)."""
    with signal_handled(signal.SIGINT, signal.SIG_IGN), signal_handled(signal.SIGTERM, signal.SIG_IGN):
        yield


def terminate_as_interrupt() -> AbstractContextManager[None]:
    """SIGTERM taken as Ctrl-C while the block runs: `kill`, `timeout`, a service manager, the web app's Stop and a
    rented GPU's notice before it is taken back all send it, and its default ended the process on the spot, with no
    "interrupted" line and the records of what was done not put back."""
    return signal_handled(signal.SIGTERM, signal.default_int_handler)


def run(parser: argparse.ArgumentParser, commands: Mapping[str, Callable[[Config], object]], argv=None,
        interrupted: str | Mapping[str, str | Callable[[Config], str]] = TRAINING_RESUMES) -> int:
    """Parse, load the config, run the command; a person's error is two lines, Ctrl-C says `interrupted` (one text,
    or one per command: what a stopped intake keeps is not what a stopped training keeps; a callable reads it from the
    person's files, e.g. the step a training goes on from)."""
    args = parse(parser, argv)
    cfg = None
    try:
        with terminate_as_interrupt():
            cfg = load_config(args.user, args.profile, args.config, args.overrides)
            commands[args.command](cfg)
    except HeadshotsError as exc:
        return print_error(exc, args.verbose)
    except KeyboardInterrupt:
        said = interrupted if isinstance(interrupted, str) else interrupted.get(args.command, TRAINING_RESUMES)
        if callable(said):
            said = said(cfg) if cfg is not None else TRAINING_RESUMES
        print(f"\ninterrupted: {said}", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk or a read-only folder is the person's to fix; anything else is a bug
        if (refused := storage_error(exc)) is None or args.verbose:
            raise
        return print_error(refused)
    return 0


def print_error(exc: HeadshotsError, verbose: bool = False) -> int:
    """What went wrong and what to do, as two lines on stderr; the exit status for it (2).
    With --verbose, the traceback instead."""
    if verbose:
        raise exc
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  -> {exc.hint}", file=sys.stderr)
    return 2
