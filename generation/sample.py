"""``imagenet-think sample``: a class-balanced, checked sample of ImageNet-21K-P (or any ImageFolder tree).

Sources: a tree ``ROOT/<class>/<file>`` or ``ROOT/<split>/<class>/<file>`` (a folder
holding only folders is a split; the same class in several splits is one class), or
a list file whose lines are ``PATH`` or ``PATH CLASS`` (PATH relative to
``--image-root``, by default the list's folder; without CLASS it is PATH's parent
folder name; blank lines and ``#`` comments are skipped). Classes are the 10,450
ImageNet-21K-P (winter21) wnids unless ``--any-classes``; other classes are
rejected as ``unknown_class`` without reading their files (one row per folder for a
tree, per line for a list).

The rule, deterministic for a seed whatever the number of workers:

1. Each class's candidates (its files, hidden ones aside) are sorted by path, then
   shuffled by a per-class RNG seeded with sha256(f"{seed}:{wnid}"): a class's order
   depends on neither the other classes nor the listing order. Classes with fewer
   candidates than ``min_per_class`` are dropped unchecked.
2. Quotas: capacity = good images kept + candidates not yet checked, capped at
   ``max_per_class``; if the capacities add up to more than ``budget``, the budget is
   water-filled: every class gets min(capacity, L) for the largest level L that fits,
   and what is left goes one image each to the classes with capacity above L, in order
   of sha256(f"{seed}:{wnid}"). A budget too small to give every class
   ``min_per_class`` is an error. The defaults are the paper's (Table 2): 22 to 31
   per class, 250,000 images in all.
3. Each class checks its candidates in order until it holds its quota of good images
   (:func:`generation.images.check_image`: decodes fully, shorter side >= ``min_side``,
   at most ``max_pixels``), classes in parallel. Only what is needed is read.
4. Exact duplicates (same sha256 of the file bytes, across all classes): the smallest
   path stays, the others are rejected as ``duplicate``. A class that can no longer
   reach ``min_per_class`` is dropped; its good images are rejected as
   ``class_too_small``.
5. Steps 2-4 repeat until every class holds its quota, so classes refill what
   duplicates took and share the budget dropped classes left.

Writes the manifest (:func:`generation.records.write_manifest`, sorted by wnid and
image_id; width and height are after EXIF rotation; image_id is the file stem, or
the path with ``/`` written ``__`` where sampled files share a stem) and ``<stem>.rejects.parquet``
next to it, then prints a summary. A bad file is a reject row, never an error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from generation.classes import imagenet21k_classes
from generation.images import MAX_PIXELS, MIN_SIDE, ImageRejected, check_image
from generation.records import (
    REJECT_SCHEMA,
    ManifestEntry,
    Reject,
    to_table,
    write_manifest,
    write_parquet_atomic,
)

EXAMPLE = (
    "imagenet-think sample --source /data/imagenet21k_resized/imagenet21k_train --out runs/manifest.parquet"
)

PAPER_MIN_PER_CLASS = 22
PAPER_MAX_PER_CLASS = 31
PAPER_BUDGET = 250_000


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one file; ``reason`` is empty for a good image."""

    path: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    plain_rgb: bool = False
    reason: str = ""
    detail: str = ""

    @property
    def good(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class ClassBatch:
    """Work for one class: check ``paths`` in order until ``need`` good images are found."""

    wnid: str
    paths: tuple[str, ...]
    need: int


@dataclass(frozen=True)
class SamplingRule:
    min_per_class: int = PAPER_MIN_PER_CLASS
    max_per_class: int | None = PAPER_MAX_PER_CLASS
    budget: int | None = PAPER_BUDGET
    seed: int = 0

    def quotas(self, capacities: dict[str, int]) -> dict[str, int]:
        """Images to keep per class: capacity capped at ``max_per_class``, the budget water-filled."""
        caps = {wnid: min(cap, self.max_per_class or cap) for wnid, cap in capacities.items()}
        if self.budget is None or sum(caps.values()) <= self.budget:
            return caps
        level = self._water_level(caps.values())
        quotas = {wnid: min(cap, level) for wnid, cap in caps.items()}
        above = sorted(
            (wnid for wnid, cap in caps.items() if cap > level), key=partial(class_seed, self.seed)
        )
        for wnid in above[: self.budget - sum(quotas.values())]:
            quotas[wnid] += 1
        return quotas

    def _water_level(self, caps: Collection[int]) -> int:
        """The largest level L with sum(min(cap, L)) <= budget."""
        low, high = 0, max(caps)
        while low < high:
            level = (low + high + 1) // 2
            fits = sum(min(cap, level) for cap in caps) <= self.budget
            low, high = (level, high) if fits else (low, level - 1)
        return low


@dataclass
class ClassState:
    order: list[str]  # candidates, in check order
    checked: int = 0
    kept: list[Checked] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return len(self.kept) + len(self.order) - self.checked


@dataclass
class SampleResult:
    entries: list[ManifestEntry]
    rejects: list[Reject]
    dropped_classes: dict[str, int]  # wnid -> good images it had, fewer than min_per_class
    checked: int  # files read

    def summary(self) -> str:
        counts = Counter(entry.wnid for entry in self.entries).values()
        spread = (
            f"min {min(counts)}, max {max(counts)}, avg {len(self.entries) / len(counts):.1f}"
            if counts
            else "none"
        )
        reasons = Counter(reject.reason for reject in self.rejects)
        return "\n".join(
            [
                f"kept {len(self.entries):,} images of {len(counts):,} classes (per class: {spread})",
                f"checked {self.checked:,} files; dropped {len(self.dropped_classes):,} classes under the minimum",
                f"rejects: {len(self.rejects):,}",
                *(f"  {reason:<20} {count:,}" for reason, count in sorted(reasons.items())),
            ]
        )


def sample_images(
    source: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    any_classes: bool = False,
    rule: SamplingRule = SamplingRule(),
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> SampleResult:
    """Sample and check images of a tree or list file by the rule in this module's docstring.

    Manifest paths are relative to ``image_root``: by default the tree itself, or a list file's folder.
    """
    root = source_root(source, image_root)
    known = None if any_classes else imagenet21k_classes()
    listing = (
        list_tree(Path(source), root, known, progress)
        if Path(source).is_dir()
        else list_file(Path(source), known)
    )
    sampling = Sampling(rule, *listing)
    sampling.drop_short_classes()
    if rule.budget is not None and rule.budget < rule.min_per_class * len(sampling.states):
        raise ValueError(
            f"a budget of {rule.budget:,} cannot give {len(sampling.states):,} classes "
            f"{rule.min_per_class} images each: lower --min-per-class or raise --budget"
        )
    check = partial(check_batch, root=str(root), min_side=min_side, max_pixels=max_pixels)
    with batch_mapper(check, workers or os.cpu_count() or 1) as map_batches:
        sampling.fill(map_batches, progress)
    return sampling.result()


def source_root(source: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
    """The folder manifest paths are relative to: ``image_root``, a tree source, or a list file's folder."""
    if image_root is not None:
        return Path(image_root)
    source = Path(source)
    return source if source.is_dir() else source.parent


def list_tree(
    tree: Path, root: Path, known: Collection[str] | None, progress: bool = False
) -> tuple[dict[str, list[str]], list[Reject]]:
    """Candidate paths (relative to ``root``) per class of ``tree``, and a reject row per folder
    of an unknown class."""
    if not tree.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"the tree {tree} is not under the image root {root}")
    tree = root / tree.resolve().relative_to(root.resolve())
    candidates: dict[str, list[str]] = defaultdict(list)
    rejects = []
    for folder in tqdm(class_folders(tree), desc="listing", unit="folder", disable=not progress):
        relative = folder.relative_to(root).as_posix()
        if known is not None and folder.name not in known:
            rejects.append(_unknown_class("", relative, folder.name, "its folder was not read"))
        else:
            candidates[folder.name] += (f"{relative}/{name}" for name in _file_names(folder))
    return dict(candidates), rejects


def class_folders(root: Path) -> list[Path]:
    """``root``'s folders that hold files, and the subfolders of those that hold only folders (splits)."""
    folders = []
    for child in _subfolders(root):
        folders += [child] if _holds_files(child) else _subfolders(child)
    return folders


def _subfolders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(
            Path(entry.path) for entry in entries if entry.is_dir() and not entry.name.startswith(".")
        )


def _holds_files(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(entry.is_file() and not entry.name.startswith(".") for entry in entries)


def _file_names(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if entry.is_file() and not entry.name.startswith(".")]


def list_file(path: Path, known: Collection[str] | None) -> tuple[dict[str, list[str]], list[Reject]]:
    """Candidate paths per class of a list file, and a reject row per line of an unknown class.

    A path listed more than once counts once, in the class of its first line.
    """
    class_of: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            image_path, wnid = _parse_list_line(line)
            class_of.setdefault(image_path, wnid)
    candidates: dict[str, list[str]] = defaultdict(list)
    rejects = []
    for image_path, wnid in class_of.items():
        if known is not None and wnid not in known:
            rejects.append(_unknown_class(PurePosixPath(image_path).stem, image_path, wnid, "not read"))
        else:
            candidates[wnid].append(image_path)
    return dict(candidates), rejects


def _parse_list_line(line: str) -> tuple[str, str]:
    """``(path, wnid)`` of ``PATH CLASS``, or of ``PATH`` whose parent folder names the class."""
    fields = line.rsplit(maxsplit=1)
    image_path = PurePosixPath(fields[0].replace("\\", "/"))
    return image_path.as_posix(), fields[1] if len(fields) == 2 else image_path.parent.name


def _unknown_class(image_id: str, image_path: str, wnid: str, consequence: str) -> Reject:
    detail = f"{wnid!r} is not an ImageNet-21K-P (winter21) class; {consequence} (--any-classes keeps it)"
    return _reject(image_id, image_path, "unknown_class", detail)


def _reject(image_id: str, image_path: str, reason: str, detail: str) -> Reject:
    return Reject(image_id, image_path, stage="sample", annotator="", reason=reason, detail=detail)


def class_seed(seed: int, wnid: str) -> int:
    """A class's own RNG seed (and its priority for leftover budget)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{wnid}".encode()).digest()[:8], "big")


def shuffled(paths: Iterable[str], seed: int, wnid: str) -> list[str]:
    """``paths`` sorted, then shuffled by the class's own RNG."""
    order = sorted(paths)
    random.Random(class_seed(seed, wnid)).shuffle(order)
    return order


class Sampling:
    """The classes being filled (steps 2-5 of the rule), the rejects so far and the classes dropped."""

    def __init__(self, rule: SamplingRule, candidates: dict[str, list[str]], rejects: list[Reject]) -> None:
        self.rule = rule
        self.states = {
            wnid: ClassState(shuffled(paths, rule.seed, wnid)) for wnid, paths in sorted(candidates.items())
        }
        self.rejects = rejects
        self.dropped: dict[str, int] = {}
        self.checked = 0

    def fill(
        self, map_batches: Callable[[list[ClassBatch]], Iterable[list[Checked]]], progress: bool
    ) -> None:
        """Check candidates, round after round, until every class holds its quota."""
        with tqdm(desc="checking", unit="img", disable=not progress) as bar:
            while True:
                quotas = self.rule.quotas({wnid: state.capacity for wnid, state in self.states.items()})
                bar.total = sum(quotas.values())
                bar.n = sum(len(state.kept) for state in self.states.values())
                bar.refresh()
                batches = self.batches(quotas)
                if not batches:
                    return
                for batch, outcomes in zip(batches, map_batches(batches), strict=True):
                    self.record(batch.wnid, outcomes)
                    bar.update(sum(image.good for image in outcomes))
                self.drop_duplicates()
                self.drop_short_classes()

    def batches(self, quotas: dict[str, int]) -> list[ClassBatch]:
        """The next candidates of each class short of its quota, with a margin for rejects."""
        batches = []
        for wnid, state in self.states.items():
            need = quotas[wnid] - len(state.kept)
            if need > 0:
                paths = state.order[state.checked : state.checked + need + need // 2 + 4]
                batches.append(ClassBatch(wnid, tuple(paths), need))
        return batches

    def record(self, wnid: str, outcomes: list[Checked]) -> None:
        state = self.states[wnid]
        state.checked += len(outcomes)
        state.kept += (image for image in outcomes if image.good)
        self.rejects += (
            _image_reject(image, image.reason, image.detail) for image in outcomes if not image.good
        )
        self.checked += len(outcomes)

    def drop_duplicates(self) -> None:
        """Of each set of identical files kept, across classes, keep the smallest path."""
        first: dict[str, str] = {}
        for state in self.states.values():
            for image in state.kept:
                first[image.sha256] = min(first.get(image.sha256, image.path), image.path)
        for state in self.states.values():
            duplicates = [image for image in state.kept if image.path != first[image.sha256]]
            state.kept = [image for image in state.kept if image.path == first[image.sha256]]
            for image in duplicates:
                self.rejects.append(_image_reject(image, "duplicate", f"same bytes as {first[image.sha256]}"))

    def drop_short_classes(self) -> None:
        """Drop the classes that can no longer reach ``min_per_class``, rejecting their good images."""
        for wnid in [wnid for wnid, state in self.states.items() if state.capacity < self.rule.min_per_class]:
            kept = self.states.pop(wnid).kept
            detail = (
                f"class {wnid} has {len(kept)} good images, fewer than the minimum {self.rule.min_per_class}"
            )
            self.rejects += (_image_reject(image, "class_too_small", detail) for image in kept)
            self.dropped[wnid] = len(kept)

    def result(self) -> SampleResult:
        kept = [(wnid, image) for wnid, state in self.states.items() for image in state.kept]
        ids = image_ids([image.path for _, image in kept])
        entries = [_entry(wnid, image, ids[image.path]) for wnid, image in kept]
        return SampleResult(
            entries=sorted(entries, key=lambda entry: (entry.wnid, entry.image_id)),
            rejects=sorted(self.rejects, key=lambda reject: (reject.image_path, reject.reason)),
            dropped_classes=dict(sorted(self.dropped.items())),
            checked=self.checked,
        )


def _image_reject(image: Checked, reason: str, detail: str) -> Reject:
    return _reject(PurePosixPath(image.path).stem, image.path, reason, detail)


def image_ids(paths: list[str]) -> dict[str, str]:
    """Each sampled path's ``image_id``: its file stem (``n01530575_10086`` in ImageNet), or,
    for a stem that several sampled files share, the path with ``/`` written ``__``."""
    stems = {path: PurePosixPath(path).stem for path in paths}
    shared = Counter(stems.values())
    ids = {path: stem if shared[stem] == 1 else path.replace("/", "__") for path, stem in stems.items()}
    taken = Counter(ids.values())
    clashes = sorted(path for path in paths if taken[ids[path]] > 1)
    if clashes:
        raise ValueError(f"these files would share an image_id; rename one of each: {clashes[:10]}")
    return ids


def _entry(wnid: str, image: Checked, image_id: str) -> ManifestEntry:
    return ManifestEntry(
        image_id,
        wnid,
        image.path,
        image.width,
        image.height,
        image.sha256,
        image.plain_rgb,
    )


@contextmanager
def batch_mapper(
    check: Callable[[ClassBatch], list[Checked]], workers: int
) -> Iterator[Callable[[list[ClassBatch]], Iterable[list[Checked]]]]:
    """A function mapping ``check`` over batches, in order: in this process, or over ``workers`` processes."""
    if workers <= 1:
        yield lambda batches: map(check, batches)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield lambda batches: pool.map(check, batches, chunksize=max(1, len(batches) // (8 * workers)))


def check_batch(batch: ClassBatch, *, root: str, min_side: int, max_pixels: int) -> list[Checked]:
    """Check ``batch.paths`` in order, stopping at the ``batch.need``-th good image."""
    outcomes, good = [], 0
    for path in batch.paths:
        outcomes.append(check_file(root, path, min_side=min_side, max_pixels=max_pixels))
        good += outcomes[-1].good
        if good == batch.need:
            break
    return outcomes


def check_file(
    root: str | os.PathLike, path: str, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS
) -> Checked:
    """Read and check ``root/path``; a bad or missing file is an outcome, never an exception."""
    try:
        data = Path(root, path).read_bytes()
    except FileNotFoundError:
        return Checked(path, reason="missing_file", detail=f"no file {Path(root, path)}")
    except OSError as error:
        return Checked(path, reason="unreadable", detail=f"{type(error).__name__}: {error}")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        width, height, plain_rgb = check_image(data, min_side=min_side, max_pixels=max_pixels)
    except ImageRejected as rejection:
        return Checked(path, sha256=sha256, reason=rejection.reason, detail=rejection.detail)
    return Checked(path, width, height, sha256, plain_rgb)


def rejects_path(manifest: str | os.PathLike) -> Path:
    """``<manifest stem>.rejects.parquet`` next to the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.rejects.parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", required=True, help="an image tree ROOT/[split/]class/file, or a list file"
    )
    parser.add_argument("--out", required=True, help="the manifest (.parquet); rejects go next to it")
    parser.add_argument("--image-root", help="what a list file's paths are relative to (default: its folder)")
    parser.add_argument("--any-classes", action="store_true", help="keep classes that are not winter21 wnids")
    parser.add_argument(
        "--min-per-class",
        type=int,
        default=PAPER_MIN_PER_CLASS,
        help="drop classes with fewer (default %(default)s)",
    )
    parser.add_argument(
        "--max-per-class", type=int, default=PAPER_MAX_PER_CLASS, help="default %(default)s; 0: no maximum"
    )
    parser.add_argument(
        "--budget", type=int, default=PAPER_BUDGET, help="images in all (default %(default)s; 0: none)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the per-class shuffles (default %(default)s)"
    )
    parser.add_argument(
        "--min-side", type=int, default=MIN_SIDE, help="shorter side kept, px (default %(default)s)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="larger images are rejected undecoded (default %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="processes (default: %(default)s, the cores)"
    )


def run(args: argparse.Namespace) -> int:
    rule = SamplingRule(args.min_per_class, args.max_per_class or None, args.budget or None, args.seed)
    result = sample_images(
        args.source,
        image_root=args.image_root,
        any_classes=args.any_classes,
        rule=rule,
        min_side=args.min_side,
        max_pixels=args.max_pixels,
        workers=args.workers,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(result.entries, out, source_root(args.source, args.image_root))
    write_parquet_atomic(to_table(result.rejects, REJECT_SCHEMA), rejects_path(out))
    print(f"{result.summary()}\nwrote {out} and {rejects_path(out)}")
    return 0
