"""Perceptual hashes of images and the search for near-duplicate pairs among them.

:func:`phash` is the hash of the manifest's ``phash`` column (docs/sample.md); what near-duplicates
are, :data:`DEFAULT_THRESHOLD` and how it was chosen: docs/release.md, "Near-duplicate images" and
"The near-duplicate audit and threshold". The search compares every pair without a Python loop over
pairs: the hashes are ``uint64`` numbers, and blocks of them are XORed against each other and their
set bits counted with ``numpy.bitwise_count``, blocks of queries in threads (3.1e10 pairs in a couple
of CPU minutes; ``benchmarks/bench_audit.py``). Memory: the hashes, one block's distances per
thread, and the pairs found. Groups are the connected components of the pairs
(``scipy.sparse.csgraph``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imagenet_think_errors import UsageError

HASH_BITS = 64
DEFAULT_THRESHOLD = 10  # bits; see docs/release.md, "Near-duplicate images"
MAX_THRESHOLD = 24  # past it, distinct photos pair up by the thousand (they differ by 32 bits on average)
QUERY_BLOCK = 64  # hashes compared at once against ...
CANDIDATE_BLOCK = 4096  # ... this many: 2 MiB of XORed words per step, in the cache


def phash(image: Image.Image) -> str:
    """The 64-bit perceptual hash of an (upright, RGB) picture, as 16 hex characters (image files:
    :func:`generation.images.file_phash`)."""
    return str(imagehash.phash(image))


def hash_values(hexes: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, known)``: each hex hash as a ``uint64`` (0 where it is "") and whether it is known."""
    texts = list(hexes)
    known = np.array([bool(text) for text in texts], dtype=bool)
    values = np.array([int(text, 16) if text else 0 for text in texts], dtype=np.uint64)
    return values, known


@dataclass(frozen=True)
class Pairs:
    """Pairs of hashes within a threshold: positions ``a`` and ``b`` (``a < b`` within one collection)
    and their ``distance`` in bits, sorted by ``(a, b)``."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def check_threshold(threshold: int) -> None:
    """Refuse a threshold outside 0 to :data:`MAX_THRESHOLD` bits."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise UsageError(
            f"the near-duplicate threshold must be 0 to {MAX_THRESHOLD} bits of {HASH_BITS}, not {threshold} "
            f"(default {DEFAULT_THRESHOLD}; distinct photos differ by about 32)"
        )


def threshold_or_none(text: str) -> int | None:
    """A threshold argument: whole bits, or ``none`` (no near-duplicate search)."""
    if text.strip().lower() == "none":
        return None
    try:
        threshold = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a number of bits (0-{MAX_THRESHOLD}) or `none`, not {text!r}"
        ) from None
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise argparse.ArgumentTypeError(f"{threshold} is not 0 to {MAX_THRESHOLD} bits")
    return threshold


def near_pairs(values: np.ndarray, threshold: int, known: np.ndarray | None = None) -> Pairs:
    """Every pair of ``values`` (``uint64`` hashes) at most ``threshold`` bits apart; positions where
    ``known`` is false take part in no pair."""
    return _collect(_blocks(values, values, threshold, known, known, same=True))


def cross_pairs(
    values: np.ndarray,
    others: np.ndarray,
    threshold: int,
    known: np.ndarray | None = None,
    others_known: np.ndarray | None = None,
) -> Pairs:
    """Every pair (position in ``values``, position in ``others``) at most ``threshold`` bits apart."""
    return _collect(_blocks(values, others, threshold, known, others_known, same=False))


def _blocks(
    values: np.ndarray,
    others: np.ndarray,
    threshold: int,
    known: np.ndarray | None,
    others_known: np.ndarray | None,
    same: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs of each block of queries, blocks searched in threads (numpy frees the GIL)."""
    check_threshold(threshold)
    values, others = np.ascontiguousarray(values, np.uint64), np.ascontiguousarray(others, np.uint64)

    def search(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = values[start : start + QUERY_BLOCK, None]
        found = []
        for offset in range(start if same else 0, len(others), CANDIDATE_BLOCK):  # itself: each pair once
            distances = np.bitwise_count(queries ^ others[None, offset : offset + CANDIDATE_BLOCK])
            rows, columns = np.nonzero(distances <= threshold)
            if len(rows):
                found.append((rows + start, columns + offset, distances[rows, columns]))
        a, b, distance = (np.concatenate(part) for part in zip(*found, strict=True)) if found else _NONE
        keep = a < b if same else np.ones(len(a), dtype=bool)
        if known is not None:
            keep &= known[a]
        if others_known is not None:
            keep &= others_known[b]
        return a[keep], b[keep], distance[keep]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield from pool.map(search, range(0, len(values), QUERY_BLOCK))


_NONE = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))


def _collect(blocks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Pairs:
    parts = list(blocks)
    a = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    b = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    distance = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.uint8)
    order = np.lexsort((b, a))
    return Pairs(a[order].astype(np.int64), b[order].astype(np.int64), distance[order].astype(np.int64))


def group_labels(size: int, pairs: Pairs) -> np.ndarray:
    """Each of ``size`` positions' group: the connected components of ``pairs`` (a position in no pair
    is a group of its own), numbered from 0."""
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs.a, pairs.b)), shape=(size, size))
    return connected_components(graph, directed=False)[1]


def groups(size: int, pairs: Pairs) -> list[np.ndarray]:
    """The groups of two or more positions that ``pairs`` link, each sorted, in order of their first."""
    labels = group_labels(size, pairs)
    counts = np.bincount(labels)
    linked = np.flatnonzero(counts[labels] > 1)
    by_group: dict[int, list[int]] = {}
    for position in linked.tolist():
        by_group.setdefault(int(labels[position]), []).append(position)
    return [np.array(members) for members in by_group.values()]
