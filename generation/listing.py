"""What a sampling source holds: the candidate files of each class of a tree or a list file, and a
reject row for each odd entry (the layouts and the rule for odd entries: docs/sample.md).

A folder is read with one ``os.scandir`` and the entries are classified without opening them, so
that a FIFO, socket or device is never opened. :func:`reject_row` makes a sample-stage reject row
(its texts valid UTF-8).
"""

from __future__ import annotations

import codecs
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from generation.images import SPECIAL_FILES, ImageRejected, not_regular, os_error_reason, read_file
from generation.records import Reject
from imagenet_think_errors import InputError, MissingInputError, UsageError

TREE_LAYOUT = "ROOT/<wnid>/<image> or ROOT/<split>/<wnid>/<image>"
LIST_LAYOUT = "lines `PATH` or `PATH CLASS`"


@dataclass
class Listing:
    """What a source holds: candidate paths per class (relative to the image root, possibly
    none), a reject row for each entry that cannot be a candidate, and the folder each class
    was first found in (for a dropped class's own reject row)."""

    candidates: dict[str, list[str]] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)


def source_is_tree(source: Path) -> bool:
    """Whether ``source`` is a folder (a tree) rather than a regular file (a list); anything
    else raises :class:`MissingInputError` or :class:`InputError`, without being opened."""
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise MissingInputError(
            f"--source {source} does not exist: give an image tree {TREE_LAYOUT}, or a list file of {LIST_LAYOUT}"
        ) from None
    except OSError as error:
        raise InputError(f"--source {source} cannot be read: {os_error_reason(error, source)[1]}") from None
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in SPECIAL_FILES if test(mode)), "a special file")
        raise InputError(
            f"--source {source} is {kind}, not a folder or a list file (reading it could block): "
            "write the list to a regular file and pass that"
        )
    return False


def source_root(source: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
    """The folder manifest paths are relative to: ``image_root``, a tree source, or a list file's folder."""
    if image_root is not None:
        return Path(image_root)
    source = Path(source)
    return source if source.is_dir() else source.parent


def check_image_root(root: Path, *, given: bool) -> None:
    """``--image-root`` must be a folder, and the root's path valid UTF-8 (the manifest stores it as text)."""
    if given and not root.is_dir():
        if not root.exists():
            raise MissingInputError(
                f"--image-root {root} does not exist: give the folder the list file's paths are relative to"
            )
        raise InputError(
            f"--image-root {root} is not a folder: give the folder the list's paths are relative to"
        )
    if not _is_utf8(str(root.resolve())):
        raise InputError(
            f"the image root {_printable(str(root.resolve()))} is not valid UTF-8 and the manifest stores it "
            "as text: rename it, or pass an --image-root whose path is UTF-8"
        )


def _is_utf8(name: str) -> bool:
    """Whether a name (undecodable bytes held as surrogates, as ``os`` gives them) is valid UTF-8."""
    try:
        name.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` (a file name possibly holding undecodable bytes) as valid UTF-8, bad bytes as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def no_classes_error(source: Path, listing: Listing, is_tree: bool) -> MissingInputError:
    """The error for a source in which no class has a candidate file: what it holds instead, and the fix."""
    layout = f"{source}/<wnid>/<image> or {source}/<split>/<wnid>/<image>" if is_tree else LIST_LAYOUT
    reasons = Counter(reject.reason for reject in listing.rejects)
    if not reasons:
        what = (
            f"{source} holds no images (it is empty, hidden files aside)"
            if is_tree
            else f"{source} lists no images (it has only blank lines and # comments)"
        )
        return MissingInputError(f"{what}: expected {layout}")
    loose = reasons.pop("not_in_a_class_folder", 0)
    if is_tree and loose:
        head = (
            f"no class folders under {source}: expected {layout}; it holds {counted(loose, 'file')} "
            "outside class folders: move them into a folder per class, named by its wnid"
        )
    else:
        head = f"{source} holds no image in a class: expected {layout}"
    if "unknown_class" in reasons:
        head += "; --any-classes keeps classes that are not ImageNet-21K-P wnids"
    others = [reject for reject in listing.rejects if reject.reason != "not_in_a_class_folder"]
    return MissingInputError(head + (f". Rejects: {reason_summary(others)}" if others else ""))


def reason_summary(rejects: list[Reject]) -> str:
    """``reason count, ...`` of ``rejects``, commonest first, with an example of the commonest."""
    counts = Counter(reject.reason for reject in rejects).most_common()
    example = min((reject for reject in rejects if reject.reason == counts[0][0]), key=lambda r: r.image_path)
    listed = ", ".join(f"{reason} {count:,}" for reason, count in counts)
    return f"{listed} (e.g. {example.image_path}: {example.detail})"


def counted(number: int, noun: str, plural: str = "") -> str:
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


@dataclass(frozen=True)
class _Entry:
    """A folder entry: ``kind`` is ``file``, ``folder``, or the reason it is rejected."""

    name: str  # valid UTF-8 (bad bytes written \xNN)
    kind: str
    detail: str = ""


FILE, FOLDER = "file", "folder"


def _scan(folder: Path) -> list[_Entry]:
    """``folder``'s entries, hidden ones aside, by name; raises OSError if it cannot be listed.
    Only symlinks and entries of unknown type are stat-ed; nothing is opened."""
    with os.scandir(folder) as entries:
        return sorted((_classify(entry) for entry in entries if not entry.name.startswith(".")), key=_name)


def _name(entry: _Entry) -> str:
    return entry.name


def _classify(entry: os.DirEntry) -> _Entry:
    if not _is_utf8(entry.name):
        name = _printable(entry.name)
        return _Entry(
            name, "undecodable_name", f"the name {os.fsencode(entry.name)!r} is not valid UTF-8: rename it"
        )
    try:
        if entry.is_file(follow_symlinks=False):
            return _Entry(entry.name, FILE)
        if entry.is_dir(follow_symlinks=False):
            return _Entry(entry.name, FOLDER)
        mode = os.stat(entry.path).st_mode  # a symlink (followed), or a special file
    except OSError as error:
        return _Entry(entry.name, *os_error_reason(error, entry.path))
    if stat.S_ISDIR(mode):
        return _Entry(entry.name, FOLDER)
    try:
        not_regular(mode)
    except ImageRejected as rejected:
        return _Entry(entry.name, rejected.reason, rejected.detail)
    return _Entry(entry.name, FILE)


def list_tree(tree: Path, root: Path, known: Collection[str] | None, progress: bool = False) -> Listing:
    """Candidate paths (relative to ``root``) per class folder of ``tree``; a reject row per folder
    of an unknown class and per entry that cannot be a candidate (see the module docstring)."""
    if not tree.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"the tree {tree} is not under the image root {root}: pass an --image-root above it")
    tree = root / tree.resolve().relative_to(root.resolve())
    try:
        top = _scan(tree)
    except OSError as error:
        raise InputError(f"--source {tree} cannot be listed ({error}): check its permissions") from None
    listing = Listing()

    def reject(
        folder: Path, entry: _Entry, reason: str = "", detail: str = "", image_id: bool = True
    ) -> None:
        path = (folder / entry.name).relative_to(root).as_posix()
        stem = PurePosixPath(path).stem if image_id else ""
        listing.rejects.append(reject_row(stem, path, reason or entry.kind, detail or entry.detail))

    def scanned(folder: Path, entry: _Entry) -> list[_Entry] | None:
        try:
            return _scan(folder / entry.name)
        except OSError as error:
            reject(folder, entry, "unreadable", f"the folder cannot be listed ({error}); not read", False)
            return None

    for entry in tqdm(top, desc="listing", unit="folder", disable=not progress):
        if entry.kind == FILE:
            detail = f"a file directly in the tree's root: images go in {TREE_LAYOUT}; not read"
            reject(tree, entry, "not_in_a_class_folder", detail)
        elif entry.kind != FOLDER:
            reject(tree, entry)
        elif (inner := scanned(tree, entry)) is not None:
            kinds = Counter(item.kind for item in inner)
            if kinds[FILE] > kinds[FOLDER] or not kinds[FOLDER]:
                _add_class(listing, tree / entry.name, inner, root, known, reject)
                continue
            for item in inner:  # a split: its folders are classes
                if item.kind == FILE:
                    detail = f"a file in the split folder {entry.name}: images go in {TREE_LAYOUT}; not read"
                    reject(tree / entry.name, item, "not_in_a_class_folder", detail)
                elif item.kind != FOLDER:
                    reject(tree / entry.name, item)
                elif (files := scanned(tree / entry.name, item)) is not None:
                    _add_class(listing, tree / entry.name / item.name, files, root, known, reject)
    return listing


def _add_class(
    listing: Listing,
    folder: Path,
    entries: list[_Entry],
    root: Path,
    known: Collection[str] | None,
    reject: Callable[..., None],
) -> None:
    relative = folder.relative_to(root).as_posix()
    wnid = folder.name
    if known is not None and wnid not in known:
        listing.rejects.append(_unknown_class("", relative, wnid, "its folder was not read"))
        return
    paths = listing.candidates.setdefault(wnid, [])
    listing.folders.setdefault(wnid, relative)
    for entry in entries:
        if entry.kind == FILE:
            paths.append(f"{relative}/{entry.name}")
        elif entry.kind == FOLDER:
            detail = f"a folder inside the class folder {relative}: images go in {TREE_LAYOUT}; not read"
            reject(folder, entry, "not_a_file", detail, False)
        else:
            reject(folder, entry)


def list_file(path: Path, root: Path, known: Collection[str] | None) -> Listing:
    """Candidate paths per class of a list file, and a reject row per line of an unknown class
    or that is not valid UTF-8.

    Listed paths are relative to ``root`` (absolute ones under it are made relative, and
    ``a/../b`` is ``b``); a path that leaves ``root`` is a :class:`UsageError` naming the line (and,
    for absolute paths, the ``--image-root`` that holds them all), so the manifest's paths stay
    inside its image root (:mod:`generation.row_checks`). A path listed more than once counts once, in the
    class of its first line. What a path names (a file, a FIFO, nothing) is seen when it is
    checked, never here.
    """
    listing = Listing()
    class_of: dict[str, str] = {}
    top = os.path.abspath(root)
    outside: list[tuple[int, str]] = []
    for number, raw in enumerate(_read_list(path).splitlines(), 1):
        raw = raw.strip()
        if not raw or raw.startswith(b"#"):
            continue
        image_path, wnid = _parse_list_line(raw.decode("utf-8", "surrogateescape"))
        if not _is_utf8(image_path) or not _is_utf8(wnid):
            detail = (
                f"line {number} of {path} is not valid UTF-8 ({raw!r}): rename the file, list it in UTF-8"
            )
            listing.rejects.append(
                reject_row(PurePosixPath(image_path).stem, image_path, "undecodable_name", detail)
            )
            continue
        inside = _under_root(image_path, top)
        if inside is None:
            outside.append((number, image_path))
            continue
        class_of.setdefault(inside, wnid)
    if outside:
        number, image_path = outside[0]
        others = f" ({len(outside)} lines are not)" if len(outside) > 1 else ""
        fix = "list each path relative to the image root, or absolute under it"
        if all(posixpath.isabs(p) for _, p in outside):
            fix += f", or pass --image-root {os.path.commonpath([top, *(p for _, p in outside)])}"
        raise UsageError(
            f"line {number} of {path}: {image_path!r} is not under the image root {root}{others}; {fix}"
        )
    for image_path, wnid in class_of.items():
        if known is not None and wnid not in known:
            listing.rejects.append(
                _unknown_class(PurePosixPath(image_path).stem, image_path, wnid, "not read")
            )
        else:
            listing.candidates.setdefault(wnid, []).append(image_path)
    return listing


def _under_root(image_path: str, top: str) -> str | None:
    """``image_path`` (relative to the absolute folder ``top``, or absolute) as a normalized path
    relative to ``top``; None where it leaves ``top``."""
    relative = posixpath.relpath(posixpath.normpath(posixpath.join(top, image_path)), top)
    return None if relative == ".." or relative.startswith("../") else relative


def _read_list(path: Path) -> bytes:
    try:
        data = read_file(path)
    except ImageRejected as rejected:
        raise InputError(f"the list file {path} cannot be read: {rejected.detail}") from None
    if b"\0" in data:
        raise InputError(
            f"--source {path} is not a list file (it holds NUL bytes): give an image tree {TREE_LAYOUT}, "
            f"or a text file of {LIST_LAYOUT}"
        )
    return data.removeprefix(codecs.BOM_UTF8)


def _parse_list_line(line: str) -> tuple[str, str]:
    """``(path, wnid)`` of ``PATH CLASS``, or of ``PATH`` whose parent folder names the class."""
    fields = line.rsplit(maxsplit=1)
    image_path = PurePosixPath(fields[0].replace("\\", "/"))
    return image_path.as_posix(), fields[1] if len(fields) == 2 else image_path.parent.name


def _unknown_class(image_id: str, image_path: str, wnid: str, consequence: str) -> Reject:
    detail = f"{wnid!r} is not an ImageNet-21K-P (winter21) class; {consequence} (--any-classes keeps it)"
    return reject_row(image_id, image_path, "unknown_class", detail)


def reject_row(image_id: str, image_path: str, reason: str, detail: str) -> Reject:
    """A sample-stage reject row; its texts are made valid UTF-8 (a Parquet string must be)."""
    return Reject(
        _printable(image_id),
        _printable(image_path),
        stage="sample",
        annotator="",
        reason=reason,
        detail=_printable(detail),
    )
