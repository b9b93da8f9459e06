"""A release folder on disk: its marker, the folders the build may write, and the atomic swap.

``release.json`` marks a folder as a release this toolkit wrote and lists every file
in it (path and size), the configs and what the release was built from. It is the
last file written, so a folder is a finished release exactly when it holds one.

The build writes the new release into a staging folder beside ``--out``
(``.<name>.imagenet-think-staging``) and swaps it in only when it is complete:
on Linux with ``renameat2(RENAME_EXCHANGE)`` (one atomic step), elsewhere with two
renames. A build killed at any moment leaves the previous release as it was, and a
staging folder that the next build removes. Nothing the toolkit did not write is
deleted: ``--out`` must be absent, empty, or a release whose files are all listed in
its ``release.json``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
from pathlib import Path

from imagenet_think_errors import InputError, MissingInputError, RefusedError

MARKER = "release.json"
FORMAT = "imagenet-think-release"
FORMAT_VERSION = 1
STAGING_MARKER = ".imagenet-think-staging"

logger = logging.getLogger(__name__)


def read_marker(folder: str | Path) -> dict:
    """The ``release.json`` of a release folder; a clear error for a folder that is not a release."""
    folder = Path(folder)
    path = folder / MARKER
    if not folder.is_dir():
        raise MissingInputError(
            f"release folder {folder} does not exist; build one with `imagenet-think build`"
        )
    if not path.is_file():
        raise MissingInputError(
            f"{folder} is not a release written by `imagenet-think build` (it has no {MARKER}); "
            "build the release first, or pass the folder given to `build --out`"
        )
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is damaged ({error}); rebuild the release") from error
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise InputError(f"{path} is not an ImageNet-Think release marker; rebuild the release")
    return marker


def listed_files(folder: str | Path, marker: dict | None = None) -> list[tuple[str, int]]:
    """(path in the release, size) of every file the release lists, each checked against its size."""
    folder = Path(folder)
    marker = marker or read_marker(folder)
    files = [(MARKER, (folder / MARKER).stat().st_size)]
    for relative, size in sorted(marker["files"].items()):
        path = folder / relative
        if not path.is_file() or path.stat().st_size != size:
            found = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
            raise RefusedError(
                f"{path} is not the file the build wrote ({found}, {size} listed in {folder / MARKER}); "
                "rebuild the release"
            )
        files.append((relative, size))
    return files


def _entries(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())


def check_writable(out: Path) -> None:
    """Refuse an ``--out`` that is neither absent, empty, nor wholly a release this toolkit wrote."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RefusedError(f"--out {out} is a file; give a folder for the release")
    entries = _entries(out)
    if not entries:
        return
    if not (out / MARKER).is_file():
        raise RefusedError(
            f"--out {out} holds files that are not a release written by `imagenet-think build` "
            f"(no {MARKER}; e.g. {entries[0]}); choose an empty or new folder"
        )
    listed = {MARKER, *read_marker(out)["files"]}
    foreign = [entry for entry in entries if entry not in listed]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise RefusedError(
            f"--out {out} is a release, but also holds {len(foreign)} file(s) the build did not write "
            f"({shown}); a rebuild replaces the whole folder, so move them out first"
        )


def staging_folder(out: Path) -> Path:
    """A fresh staging folder beside ``out``, after removing one left by a killed build."""
    staging = out.parent / f".{out.name}.imagenet-think-staging"
    if staging.exists():
        ours = (staging / STAGING_MARKER).is_file() or (staging / MARKER).is_file()
        if not ours:
            raise RefusedError(f"{staging} exists and was not written by `imagenet-think build`; remove it")
        logger.info("removing %s, left by an interrupted build", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARKER).touch()
    return staging


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); False where that is not available."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM}:  # filesystem or kernel without it
        return False
    raise OSError(code, os.strerror(code), str(a))


def swap_in(staging: Path, out: Path) -> None:
    """Make the complete release in ``staging`` the release at ``out``, then remove the old one."""
    (staging / STAGING_MARKER).unlink()
    if not out.exists():
        staging.rename(out)
    elif _exchange(staging, out):
        shutil.rmtree(staging)  # now the previous release (or the empty folder that was there)
    else:
        previous = out.parent / f".{out.name}.imagenet-think-previous"
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
        staging.rename(out)
        shutil.rmtree(previous)
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def restore_interrupted_swap(out: Path) -> None:
    """Where a build without ``renameat2`` was killed between its two renames, put the previous
    release back at ``out``."""
    previous = out.parent / f".{out.name}.imagenet-think-previous"
    if not out.exists() and (previous / MARKER).is_file():
        previous.rename(out)
        logger.info("restored the previous release at %s (a build was interrupted mid-swap)", out)
