"""The toolkit's expected failures: a wrong input or a refusal, with a message a person can act on.

Library code raises these where the user can fix the cause (a misspelled path, a run
from another manifest, a config typo). Their message names the input and the fix;
the ``imagenet-think`` entry point prints it in a line or two without a traceback
and exits with ``exit_code``. Anything else is a bug and keeps its traceback.

Reporting them is here too, so that every entry point (the CLI, the training recipes) shares it
without importing the CLI: :func:`run_reporting` runs a command and prints an expected failure
(:func:`describe_failure`: these classes, or an ``OSError`` that names its file) in one line;
``--debug`` (:func:`take_debug_flag`) or ``IMAGENET_THINK_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEBUG_FLAG = "--debug"
DEBUG_ENV = "IMAGENET_THINK_DEBUG"
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
# What an OSError that names its file(s) could not do to it.
_OS_VERBS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "open"),
    (IsADirectoryError, "open"),
    (NotADirectoryError, "open"),
    (PermissionError, "access"),
    (FileExistsError, "create"),
)


class ImageNetThinkError(Exception):
    """An expected failure; ``str(error)`` names the input and the fix."""

    exit_code = 1


class InputError(ImageNetThinkError, ValueError):
    """An input is wrong or does not fit the others: a file, a folder, a config value."""


class MissingInputError(InputError, FileNotFoundError):
    """An input named by the user does not exist (or holds nothing the stage can use)."""


class UsageError(InputError):
    """Command-line arguments that contradict each other or are out of range (exit status 2)."""

    exit_code = 2


class RefusedError(ImageNetThinkError, RuntimeError):
    """The stage refuses to go on because doing so would lose or mix up data (e.g. overwrite a
    folder it does not own, resume a run with another config)."""


class WriteError(ImageNetThinkError, OSError):
    """A file could not be written for want of room: a full disk, a quota or a file-size limit
    (:data:`NO_ROOM`). Raised by :func:`no_room_reported` where the writer knows what it wrote."""


NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})  # the errno of a write with no room


@contextmanager
def no_room_reported(what: str | os.PathLike, advice: str) -> Iterator[None]:
    """Turn an ``OSError`` of :data:`NO_ROOM` raised inside into a :class:`WriteError` that names
    ``what`` could not be written, why (``No space left on device``, ``File too large``) and
    ``advice``; other errors pass unchanged."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        if error.errno not in NO_ROOM:
            raise
        raise WriteError(f"cannot write {os.fspath(what)}: {os.strerror(error.errno)}; {advice}") from error


def debug_from_env() -> bool:
    """Whether ``IMAGENET_THINK_DEBUG`` asks for tracebacks (set, and not 0/false/no/off)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}


def take_debug_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` is among ``argv`` (before a ``--``), and ``argv`` without it."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [arg for arg in argv[:end] if arg != DEBUG_FLAG]
    return len(kept) < end, kept + argv[end:]


def describe_failure(error: BaseException) -> tuple[str, int] | None:
    """The message and exit status of an expected failure; None for anything else (a bug)."""
    if isinstance(error, ImageNetThinkError):
        return str(error), error.exit_code
    if isinstance(error, OSError) and error.filename is not None:
        verb = next((verb for kind, verb in _OS_VERBS if isinstance(error, kind)), None)
        if verb is not None:
            names = os.fsdecode(error.filename)
            if error.filename2 is not None:
                names += f" -> {os.fsdecode(error.filename2)}"
            return f"cannot {verb} {names}: {error.strerror or error}", 1
    return None


def _tell_torchelastic(message: str) -> None:
    """Under ``torchrun``/``accelerate launch`` with several processes, put the message in the
    launcher's failure summary (its error file) in place of "To enable traceback see: ..."."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as handle:
                json.dump({"message": message, "timestamp": int(time.time())}, handle)
        except OSError:
            pass


def run_reporting(prog: str, call: Callable[[], int | None], debug: bool = False) -> int:
    """``call()``'s exit status; an expected failure is printed as ``PROG: error: MESSAGE``
    (with the traceback when ``debug`` or ``IMAGENET_THINK_DEBUG=1``) and exits 1 or 2,
    Ctrl-C exits 130; any other exception propagates with its traceback."""
    debug = debug or debug_from_env()
    try:
        return int(call() or 0)
    except KeyboardInterrupt:
        sys.stdout.flush()
        if debug:
            traceback.print_exc()
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        failure = describe_failure(error)
        if failure is None:
            raise
        message, status = failure
        sys.stdout.flush()
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {message}", file=sys.stderr)
        _tell_torchelastic(message)
        return status
