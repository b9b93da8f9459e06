"""A release folder on disk: its marker, the check every reader runs, the folders the build may
write, and the atomic swap.

``release.json`` marks a folder as a release this toolkit wrote and lists every file in it (path,
size and sha256, hashed by :class:`ReleaseFiles` as the build writes the bytes); it is written last.
:func:`verify_release` is the check every reader (``stats``, ``push``, the training recipes, eval)
runs first; :func:`edited_card` finds a card edited by hand since the build. The build writes into a
staging folder beside ``--out`` and swaps it in when complete: on Linux with
``renameat2(RENAME_EXCHANGE)`` (one atomic step), elsewhere with two renames. What a user can rely on
(what is refused, what survives a kill or a full disk, what is never deleted): docs/release.md, "A
release is read as it was built" and the sections after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import weakref
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from generation.records import file_sha256
from imagenet_think_errors import InputError, MissingInputError, RefusedError, WriteError, no_room_reported

MARKER = "release.json"
FORMAT = "imagenet-think-release"
FORMAT_VERSION = 2  # 2: every file listed with its sha256
STAGING_MARKER = ".imagenet-think-staging"
CARD = "README.md"
HASH_THREADS = 8  # files hashed at once by verify_release (shards are hundreds of MB)
REBUILD = "rebuild it with `imagenet-think build ... --out {folder}`"
NO_ROOM_ADVICE = (
    "free space (or raise the file-size limit), then build again; the previous release is unchanged"
)

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


class HashingFile:
    """A file opened for writing whose bytes are hashed (sha256) and counted as they are written,
    so that the release lists each file's checksum without reading it again. A binary file
    object for ``pyarrow``/``datasets`` writers (``write``, ``tell``, ``flush``, ``close``).

    A write that finds no room is a :class:`~imagenet_think_errors.WriteError` naming the file; the
    file is then abandoned (:meth:`abandon`), as are the other open files of a build that fails, so
    that a writer closed later (a Parquet footer written at garbage collection) writes nothing more.
    """

    _open: ClassVar[weakref.WeakSet[HashingFile]] = weakref.WeakSet()

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), as the writers do
        self._sha256 = hashlib.sha256()
        self.size = 0
        self._abandoned = False
        HashingFile._open.add(self)

    def write(self, data) -> int:
        written = memoryview(data).nbytes
        if self._abandoned:
            return written
        try:
            with no_room_reported(self.path, NO_ROOM_ADVICE):
                self._file.write(data)
        except WriteError:
            self.abandon()
            raise
        self._sha256.update(data)
        self.size += written
        return written

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if not self._abandoned:
            with no_room_reported(self.path, NO_ROOM_ADVICE):
                self._file.flush()

    def close(self) -> None:
        HashingFile._open.discard(self)
        if not self._abandoned:
            with no_room_reported(self.path, NO_ROOM_ADVICE):
                self._file.close()

    def abandon(self) -> None:
        """Close the file, dropping what is not written yet; later writes do nothing."""
        self._abandoned = True
        HashingFile._open.discard(self)
        with contextlib.suppress(OSError):  # the unwritten rest of the buffer
            self._file.close()

    @classmethod
    def abandon_all_in(cls, folder: Path) -> None:
        """Abandon every file still open in ``folder`` (the staging folder of a failed build)."""
        for file in list(cls._open):
            if folder in file.path.parents:
                file.abandon()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class ReleaseFiles:
    """The files a build writes into its staging folder, each with its size and sha256."""

    def __init__(self, staging: Path):
        self.staging = staging
        self._listed: dict[str, dict] = {}

    def add(self, path: Path, written: HashingFile) -> None:
        """List ``path`` (``written``'s file, possibly renamed since) with what ``written`` counted."""
        self._listed[path.relative_to(self.staging).as_posix()] = {
            "bytes": written.size,
            "sha256": written.sha256,
        }

    def write_bytes(self, relative: str, data: bytes) -> None:
        written = HashingFile(self.staging / relative)
        try:
            written.write(data)
        finally:
            written.close()
        self.add(self.staging / relative, written)

    def listing(self) -> dict[str, dict]:
        """Path in the release -> bytes and sha256; checked to be exactly the staging folder's files."""
        on_disk = set(_release_entries(self.staging))
        if on_disk != set(self._listed):  # a writer that bypassed ReleaseFiles: a bug
            raise RuntimeError(f"unlisted or missing release files: {sorted(on_disk ^ set(self._listed))}")
        return dict(sorted(self._listed.items()))


def _release_entries(folder: Path) -> list[str]:
    """The files of a release folder, relative: every file outside hidden files and folders."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if not any(part.startswith(".") for part in path.relative_to(folder).parts) and not path.is_dir()
    )


def _refuse(folder: Path, path: Path, problem: str) -> RefusedError:
    return RefusedError(
        f"{path} {problem}: {folder} is not the release its {MARKER} lists; {REBUILD.format(folder=folder)}"
    )


def verify_release(folder: str | Path, configs: Collection[str] | None = None) -> dict:
    """Check the release folder ``folder`` against its ``release.json`` and return the marker.

    Every listed file must exist with its listed size, and no other (non-hidden) file may be
    there; the sha256 of every file is checked, or with ``configs`` only that of the top-level
    files and of those configs' shards (the files the caller reads). Anything else is refused
    (:class:`RefusedError`) naming the file.
    """
    folder = Path(folder)
    marker = read_marker(folder)
    listed = marker.get("files")
    if marker.get("format_version", 1) < 2 or not isinstance(listed, dict):
        raise RefusedError(
            f"{folder / MARKER} lists no checksums (the release was built by an older imagenet-think); "
            + REBUILD.format(folder=folder)
        )
    for relative, entry in listed.items():
        path = folder / relative
        if not path.is_file():
            raise _refuse(folder, path, "is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            cut = "truncated" if size < entry["bytes"] else "longer than built"
            raise _refuse(folder, path, f"is {cut} ({size:,} bytes, {entry['bytes']:,} listed)")
    for relative in _release_entries(folder):
        if relative != MARKER and relative not in listed:
            raise _refuse(
                folder, folder / relative, "is not a file of the release (a stray copy? move it out)"
            )
    read = [r for r in listed if configs is None or "/" not in r or r.split("/")[0] in configs]
    with ThreadPoolExecutor(
        max_workers=min(HASH_THREADS, os.cpu_count() or 1)
    ) as pool:  # hashlib frees the GIL
        for relative, digest in zip(read, pool.map(lambda r: file_sha256(folder / r), read), strict=True):
            if digest != listed[relative]["sha256"]:
                raise _refuse(folder, folder / relative, "was changed since the build (its sha256 differs)")
    return marker


def listed_files(folder: str | Path) -> list[tuple[str, int]]:
    """(path in the release, size) of ``release.json`` and every file it lists, all verified."""
    folder = Path(folder)
    marker = verify_release(folder)
    files = [(MARKER, (folder / MARKER).stat().st_size)]
    return files + [(relative, entry["bytes"]) for relative, entry in sorted(marker["files"].items())]


def edited_card(out: Path) -> Path | None:
    """``out``'s card when it was edited after the build (its sha256 is not the one listed), else None."""
    card = out / CARD
    if not (out / MARKER).is_file() or not card.is_file():
        return None
    entry = read_marker(out).get("files", {}).get(CARD)
    if not isinstance(entry, dict):  # a release listing no checksums: the edit cannot be told
        return None
    return card if file_sha256(card) != entry["sha256"] else None


def keep_edited_card(card: Path) -> Path:
    """Copy a hand-edited card out of the release folder, beside it, and return where."""
    release = card.parent
    aside = release.parent / f"{release.name}.README.edited.md"
    number = 1
    while aside.exists():
        aside = release.parent / f"{release.name}.README.edited-{number}.md"
        number += 1
    shutil.copy2(card, aside)
    return aside


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


def _staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.imagenet-think-staging"


def staging_folder(out: Path) -> Path:
    """A fresh staging folder beside ``out``, after removing one left by a killed build."""
    staging = _staging_path(out)
    if staging.exists():
        ours = (staging / STAGING_MARKER).is_file() or (staging / MARKER).is_file()
        if not ours:
            raise RefusedError(f"{staging} exists and was not written by `imagenet-think build`; remove it")
        logger.info("removing %s, left by an interrupted build", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARKER).touch()
    return staging


def discards_staging_on_failure(build: Callable) -> Callable:
    """Decorate a build function (with an ``out`` argument) so that when it fails its staging folder
    is removed rather than left as a partial release (on a full disk, where it takes the room), and
    a write that found no room anywhere else is a :class:`~imagenet_think_errors.WriteError` naming
    the release. A build killed outright leaves its staging folder to the next build."""
    signature = inspect.signature(build)

    @functools.wraps(build)
    def discarding(*args, **kwargs):
        out = Path(signature.bind(*args, **kwargs).arguments["out"])
        try:
            with no_room_reported(f"the release {out} (staged in {_staging_path(out)})", NO_ROOM_ADVICE):
                return build(*args, **kwargs)
        except BaseException:
            staging = _staging_path(out)
            HashingFile.abandon_all_in(staging)
            if (staging / STAGING_MARKER).is_file():  # not yet swapped in
                shutil.rmtree(staging, ignore_errors=True)
            raise

    return discarding


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
