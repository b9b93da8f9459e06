"""Checks of the row fields that become file paths or classes: ``image_id``, ``wnid``, ``image_path``.

A manifest is the user's data and a release is often someone else's: every reader that turns
these fields into a path, or starts work on a manifest, checks them here first
(:func:`check_manifest`; :func:`path_inside` for a file written from them) and refuses a bad row
in one line naming where it is (``source``) and the row. The rules are docs/generate.md's, "What
a manifest must hold".
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pyarrow as pa

from common.classes import NUM_CLASSES, imagenet21k_classes
from generation.records import read_manifest
from imagenet_think_errors import InputError

SEPARATORS = (("/", "'/'"), ("\\", "'\\'"))
NUL = ("\0", "NUL")
SHOWN_ROWS = 5  # rows named in a message before "and N more"
MANIFEST_FIX = (
    "fix or remove those rows, or write the manifest again with `imagenet-think sample` "
    "(without --any-classes: the release's labels are ImageNet-21K-P classes)"
)


def image_id_problem(image_id: object) -> str | None:
    """Why ``image_id`` is not a plain file stem, or None."""
    if not isinstance(image_id, str) or not image_id:
        return f"image_id {image_id!r} is empty"
    if image_id in (".", ".."):
        return f"image_id {image_id!r} is not a plain file name (it names a folder)"
    for bad, name in (*SEPARATORS, NUL):
        if bad in image_id:
            return f"image_id {image_id!r} is not a plain file name (it holds {name})"
    return None


def annotator_problem(annotator: object) -> str | None:
    """Why ``annotator`` (a model config's, or a run.json's) cannot name a dataset config, a folder
    of the release, or None."""
    if isinstance(annotator, str) and annotator.isidentifier():
        return None
    return f"annotator {annotator!r} must be an identifier (letters, digits, _): it names a dataset config"


def wnid_problem(wnid: object) -> str | None:
    """Why ``wnid`` is not an ImageNet-21K-P class, or None."""
    if wnid in imagenet21k_classes():
        return None
    return f"wnid {wnid!r} is not one of the {NUM_CLASSES:,} ImageNet-21K-P classes"


def image_path_problem(image_path: object) -> str | None:
    """Why ``image_path`` does not name a file under its image root, or None."""
    if not isinstance(image_path, str) or not image_path:
        return f"image_path {image_path!r} is empty"
    for bad, name in (SEPARATORS[1], NUL):
        if bad in image_path:
            return f"image_path {image_path!r} holds {name}"
    if image_path.startswith("/"):
        return f"image_path {image_path!r} is absolute (it must be relative to the image root)"
    if any(part in ("", ".", "..") for part in image_path.split("/")):
        return f"image_path {image_path!r} leaves its image root or has an empty, '.' or '..' part"
    return None


def path_inside(folder: str | os.PathLike, *parts: str) -> Path:
    """``folder/part/...``, refused (:class:`ValueError`) unless it resolves inside ``folder``
    (links followed): the last check before a file is written from row fields."""
    folder = Path(folder)
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{PurePosixPath(*parts)} resolves to {path.resolve()}, outside {folder}")
    return path


def read_checked_manifest(path: str | os.PathLike) -> tuple[pa.Table, Path]:
    """:func:`generation.records.read_manifest`, refused by :func:`check_manifest` if it breaks
    the rules: what ``generate`` and ``build`` start from."""
    table, root = read_manifest(path)
    check_manifest(table, f"manifest {path}", MANIFEST_FIX)
    return table, root


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(row) for row in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def check_manifest(table: pa.Table, source: str, fix: str, unique: bool = True) -> None:
    """Refuse (:class:`InputError`, one line: ``source``, the row or rows, ``fix``) a manifest
    table (``image_id``, ``wnid``, and ``image_path`` where it has one) that breaks the module's
    rules: the first bad ``image_id`` or ``image_path``, then the first unknown ``wnid`` with its
    rows, then (``unique``: a manifest, a ``both`` split) the first ``image_id`` in two rows.
    Rows count from 0, as ``table[i]``."""
    ids = table["image_id"].to_pylist()
    paths = table["image_path"].to_pylist() if "image_path" in table.column_names else [None] * len(ids)
    for row, (image_id, image_path) in enumerate(zip(ids, paths, strict=True)):
        problem = image_id_problem(image_id) or (image_path is not None and image_path_problem(image_path))
        if problem:
            raise InputError(f"{source}, row {row}: {problem}; {fix}")
    classes = imagenet21k_classes()
    unknown: dict[str, list[int]] = defaultdict(list)
    for row, wnid in enumerate(table["wnid"].to_pylist()):
        if wnid not in classes:
            unknown[wnid].append(row)
    if unknown:
        wnid, rows = next(iter(unknown.items()))
        others = f" (and {len(unknown) - 1} more unknown wnids)" if len(unknown) > 1 else ""
        raise InputError(
            f"{source}: {wnid_problem(wnid)} (row{'s' if len(rows) > 1 else ''} {_rows(rows)}){others}; {fix}"
        )
    first_row: dict[str, int] = {}
    for row, image_id in enumerate(ids if unique else ()):
        if image_id in first_row:
            repeated = len(ids) - len(set(ids))
            others = f" ({repeated} rows repeat an image_id in all)" if repeated > 1 else ""
            raise InputError(
                f"{source}: image_id {image_id!r} is in rows {first_row[image_id]} and {row}{others}; "
                f"each image is listed once: {fix}"
            )
        first_row[image_id] = row
