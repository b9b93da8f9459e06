"""Train / validation / test: which split each image of a manifest belongs to (:func:`assign_splits`),
by the rule of docs/release.md, "Splits".
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable

from imagenet_think_errors import UsageError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"validation": 0.05, "test": 0.05}
DEFAULT_SEED = 0


def _rank_key(seed: int, image_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).digest()


def assign_splits(
    images: Iterable[tuple[str, str]],
    validation: float = DEFAULT_FRACTIONS["validation"],
    test: float = DEFAULT_FRACTIONS["test"],
    seed: int = DEFAULT_SEED,
) -> dict[str, str]:
    """Map each ``image_id`` of ``(image_id, wnid)`` pairs to its split."""
    if validation < 0 or test < 0 or validation + test >= 1:
        raise UsageError(f"split fractions must be >= 0 and leave room for train, got {validation=} {test=}")
    by_class: dict[str, list[str]] = defaultdict(list)
    for image_id, wnid in images:
        by_class[wnid].append(image_id)
    assignment = {}
    for ids in by_class.values():
        ids.sort(key=lambda image_id: _rank_key(seed, image_id))
        n_test = math.floor(len(ids) * test + 0.5)
        n_validation = math.floor(len(ids) * validation + 0.5)
        for rank, image_id in enumerate(ids):
            if rank < n_test:
                assignment[image_id] = "test"
            elif rank < n_test + n_validation:
                assignment[image_id] = "validation"
            else:
                assignment[image_id] = "train"
    return assignment
