"""``imagenet-think sample``: a class-balanced, checked sample of ImageNet-21K-P (or any ImageFolder tree).

Owns the sampling rule (per-class seeded order, water-filled quotas, checks until each class
holds its quota, exact duplicates, refills) and the manifest it writes; the listing of the
source and its odd entries are :mod:`generation.listing`, the image checks
:mod:`generation.images`. The rule, the sources it reads and what becomes a reject are written
once, in ``docs/sample.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from common.classes import imagenet21k_classes
from common.options import add_options, option, parse_options
from generation.images import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageRejected,
    check_image,
    read_file,
)
from generation.listing import (
    LIST_LAYOUT,
    TREE_LAYOUT,
    Listing,
    check_image_root,
    counted,
    list_file,
    list_tree,
    no_classes_error,
    reason_summary,
    reject_row,
    source_is_tree,
    source_root,
)
from generation.records import (
    REJECT_SCHEMA,
    ManifestEntry,
    Reject,
    to_table,
    write_manifest,
    write_parquet_atomic,
)
from imagenet_think_errors import InputError, UsageError

logger = logging.getLogger(__name__)

RULES = "rules (the sampling rule, the sources and every reject reason): docs/sample.md"

EXAMPLE = (
    "imagenet-think sample --source /data/imagenet21k_resized/imagenet21k_train --out runs/manifest.parquet"
)

PAPER_MIN_PER_CLASS = 22
PAPER_MAX_PER_CLASS = 31
PAPER_BUDGET = 250_000
TOO_SMALL = "class_too_small"


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one file; ``reason`` is empty for a good image."""

    path: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    plain_rgb: bool = False
    phash: str = ""
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
    """The per-class limits and the budget (``None``: no maximum, no budget); limits that keep
    nothing or contradict each other raise :class:`UsageError` when the rule is made."""

    min_per_class: int = PAPER_MIN_PER_CLASS
    max_per_class: int | None = PAPER_MAX_PER_CLASS
    budget: int | None = PAPER_BUDGET
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_per_class < 1:
            raise UsageError(f"--min-per-class must be at least 1, not {self.min_per_class}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise UsageError(
                f"--max-per-class must be positive, not {self.max_per_class} (`none` for no maximum)"
            )
        if self.max_per_class is not None and self.max_per_class < self.min_per_class:
            raise UsageError(
                f"--max-per-class {self.max_per_class} is below --min-per-class {self.min_per_class}, "
                "so no class could be kept: raise --max-per-class or lower --min-per-class"
            )
        if self.budget is not None and self.budget < 1:
            raise UsageError(
                f"--budget must be a positive number of images, not {self.budget} (`none` for no budget)"
            )

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


def check_limits(*, min_side: int, max_pixels: int, workers: int | None) -> None:
    """Raise :class:`UsageError` for image limits or a worker count that make no sense."""
    if min_side < 1:
        raise UsageError(f"--min-side must be at least 1 px, not {min_side}")
    if max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive, not {max_pixels}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")


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
    dropped_classes: dict[str, int]  # wnid -> images it could still reach, fewer than min_per_class
    checked: int  # files read
    min_per_class: int = PAPER_MIN_PER_CLASS

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
                f"kept {counted(len(self.entries), 'image')} of {counted(len(counts), 'class', 'classes')} "
                f"(per class: {spread})",
                f"checked {self.checked:,} files; {self._dropped()}",
                f"rejects: {len(self.rejects):,}",
                *(f"  {reason:<22} {count:,}" for reason, count in sorted(reasons.items())),
            ]
        )

    def _dropped(self) -> str:
        if not self.dropped_classes:
            return f"no class dropped under --min-per-class {self.min_per_class}"
        shown = list(self.dropped_classes.items())[:10]
        more = len(self.dropped_classes) - len(shown)
        names = ", ".join(f"{wnid} ({reach})" for wnid, reach in shown) + (
            f" and {more:,} more" if more else ""
        )
        return (
            f"dropped {counted(len(self.dropped_classes), 'class', 'classes')} under --min-per-class "
            f"{self.min_per_class} (images each could reach: {names}); in the rejects as {TOO_SMALL}"
        )


def sample_images(options: SampleOptions, progress: bool = True) -> SampleResult:
    """Sample and check images of a tree or list file by the rule in this module's docstring.

    Manifest paths are relative to ``image_root``: by default the tree itself, or a list file's folder.
    Raises :class:`UsageError` for limits that make no sense, :class:`MissingInputError` for a
    source that does not exist or holds no class, and :class:`InputError` when no image is kept.
    """
    rule, image_root, min_side, max_pixels = (
        options.rule(),
        options.image_root,
        options.min_side,
        options.max_pixels,
    )
    check_limits(min_side=min_side, max_pixels=max_pixels, workers=options.workers)
    source = Path(options.source)
    is_tree = source_is_tree(source)
    root = source_root(source, image_root)
    check_image_root(root, given=image_root is not None)
    known = None if options.any_classes else imagenet21k_classes()
    listing = list_tree(source, root, known, progress) if is_tree else list_file(source, root, known)
    if not listing.candidates:
        raise no_classes_error(source, listing, is_tree)
    sampling = Sampling(rule, listing)
    sampling.drop_short_classes()
    if not sampling.states:
        raise sampling.nothing_kept(source)
    if rule.budget is not None and rule.budget < rule.min_per_class * len(sampling.states):
        raise UsageError(
            f"a --budget of {rule.budget:,} cannot give {len(sampling.states):,} classes "
            f"--min-per-class {rule.min_per_class} images each: lower --min-per-class or raise --budget "
            f"(to {rule.min_per_class * len(sampling.states):,} at least)"
        )
    check = partial(check_batch, root=str(root), min_side=min_side, max_pixels=max_pixels)
    with batch_mapper(check, options.workers or os.cpu_count() or 1) as map_batches:
        sampling.fill(map_batches, progress)
    if not sampling.states:
        raise sampling.nothing_kept(source)
    return sampling.result()


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

    def __init__(self, rule: SamplingRule, listing: Listing) -> None:
        self.rule = rule
        self.states = {
            wnid: ClassState(shuffled(paths, rule.seed, wnid))
            for wnid, paths in sorted(listing.candidates.items())
        }
        self.folders = {
            wnid: listing.folders.get(wnid) or str(PurePosixPath(min(paths, default="")).parent)
            for wnid, paths in listing.candidates.items()
        }
        self.rejects = list(listing.rejects)
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
        """Drop the classes that can no longer reach ``min_per_class``: each of their files that
        has no reject row yet (good, or not checked) gets one, or the class gets one of its own."""
        for wnid in [wnid for wnid, state in self.states.items() if state.capacity < self.rule.min_per_class]:
            state = self.states.pop(wnid)
            detail = self._too_small(wnid, state)
            unchecked = state.order[state.checked :]
            self.rejects += (_image_reject(image, TOO_SMALL, detail) for image in state.kept)
            self.rejects += (
                reject_row(PurePosixPath(path).stem, path, TOO_SMALL, detail) for path in unchecked
            )
            if not state.kept and not unchecked:
                self.rejects.append(reject_row("", self.folders[wnid], TOO_SMALL, detail))
            self.dropped[wnid] = state.capacity
            logger.info("dropped class %s: %s", wnid, detail)

    def _too_small(self, wnid: str, state: ClassState) -> str:
        files, minimum = counted(len(state.order), "file"), self.rule.min_per_class
        if not state.checked:
            return f"class {wnid} has {files}, fewer than --min-per-class {minimum}; not checked"
        return (
            f"class {wnid} can reach at most {counted(state.capacity, 'good image')} ({len(state.kept)} good, "
            f"{state.checked - len(state.kept)} rejected, {len(state.order) - state.checked} unchecked of "
            f"{files}), fewer than --min-per-class {minimum}"
        )

    def nothing_kept(self, source: Path) -> InputError:
        """The error for a sample in which every class was dropped: why, the fix, and the rejects."""
        wnid, most = max(sorted(self.dropped.items()), key=lambda item: item[1])
        classes = counted(len(self.dropped), "class", "classes")
        if most:
            head = (
                f"no class of {source} reached --min-per-class {self.rule.min_per_class}: the largest of its "
                f"{classes} had {counted(most, 'image')} ({wnid}); lower --min-per-class (to {most} to keep {wnid})"
            )
        else:
            head = (
                f"no class of {source} has a usable image: its {classes} hold no image file that passes the "
                "checks; replace the rejected files, or relax the checks they fail (--min-side, --max-pixels)"
            )
        rejected = [reject for reject in self.rejects if reject.reason != TOO_SMALL]
        if any(reject.reason == "unknown_class" for reject in rejected):
            head += "; --any-classes keeps the classes rejected as unknown_class"
        return InputError(head + (f". Rejects: {reason_summary(rejected)}" if rejected else ""))

    def result(self) -> SampleResult:
        kept = [(wnid, image) for wnid, state in self.states.items() for image in state.kept]
        ids = image_ids([image.path for _, image in kept])
        entries = [_entry(wnid, image, ids[image.path]) for wnid, image in kept]
        return SampleResult(
            entries=sorted(entries, key=lambda entry: (entry.wnid, entry.image_id)),
            rejects=sorted(self.rejects, key=lambda reject: (reject.image_path, reject.reason)),
            dropped_classes=dict(sorted(self.dropped.items())),
            checked=self.checked,
            min_per_class=self.rule.min_per_class,
        )


def _image_reject(image: Checked, reason: str, detail: str) -> Reject:
    return reject_row(PurePosixPath(image.path).stem, image.path, reason, detail)


def image_ids(paths: list[str]) -> dict[str, str]:
    """Each sampled path's ``image_id``: its file stem (``n01530575_10086`` in ImageNet), or,
    for a stem that several sampled files share, the path with ``/`` written ``__``."""
    stems = {path: PurePosixPath(path).stem for path in paths}
    shared = Counter(stems.values())
    ids = {path: stem if shared[stem] == 1 else path.replace("/", "__") for path, stem in stems.items()}
    taken = Counter(ids.values())
    clashes = sorted(path for path in paths if taken[ids[path]] > 1)
    if clashes:
        raise InputError(f"these files would share an image_id; rename one of each: {clashes[:10]}")
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
        image.phash,
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
    """Read and check ``root/path``; a bad, missing or odd file (a FIFO is never opened) is an
    outcome, never an exception."""
    try:
        data = read_file(Path(root, path))
    except ImageRejected as rejection:
        return Checked(path, reason=rejection.reason, detail=rejection.detail)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        checked = check_image(data, min_side=min_side, max_pixels=max_pixels)
    except ImageRejected as rejection:
        return Checked(path, sha256=sha256, reason=rejection.reason, detail=rejection.detail)
    return Checked(path, checked.width, checked.height, sha256, checked.plain_rgb, checked.phash)


def rejects_path(manifest: str | os.PathLike) -> Path:
    """``<manifest stem>.rejects.parquet`` next to the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.rejects.parquet")


def count_or_none(text: str) -> int | None:
    """An argument that is a whole number, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or `none`, not {text!r}") from None


@dataclass
class SampleOptions:
    """The options of ``imagenet-think sample`` (and of :func:`sample_images`), each declared once."""

    source: str | os.PathLike = option(
        help=f"an image tree {TREE_LAYOUT}, or a list file of {LIST_LAYOUT}; it must exist"
    )
    out: str | os.PathLike | None = option(
        None,
        required=True,
        help="the manifest (.parquet); rejects go next to it as <stem>.rejects.parquet, a reason for each "
        "file, folder or class kept out. Nothing is written when no image is kept (an error)",
    )  # the command's; sample_images writes nothing
    image_root: str | os.PathLike | None = option(
        None, help="what a list file's paths are relative to (default: its folder)"
    )
    any_classes: bool = option(False, help="keep classes that are not winter21 wnids")
    min_per_class: int = option(
        PAPER_MIN_PER_CLASS,
        help="drop classes that cannot reach this many good images (at least 1; default %(default)s); "
        "their files are rejects (class_too_small); if no class reaches it, that is an error",
    )
    max_per_class: int | None = option(
        PAPER_MAX_PER_CLASS,
        type=count_or_none,
        help="at least --min-per-class, or `none` for no maximum (default %(default)s)",
    )
    budget: int | None = option(
        PAPER_BUDGET,
        type=count_or_none,
        help="images in all, positive, or `none` for no budget (default %(default)s); one too small to give "
        "every class --min-per-class images is an error",
    )
    seed: int = option(0, help="seed of the per-class shuffles (default %(default)s)")
    min_side: int = option(MIN_SIDE, help="shorter side kept, px (default %(default)s)")
    max_pixels: int = option(MAX_PIXELS, help="larger images are rejected undecoded (default %(default)s)")
    workers: int | None = option(None, help="processes (default: the cores)")

    def rule(self) -> SamplingRule:
        """The sampling rule these options set (its limits checked)."""
        return SamplingRule(self.min_per_class, self.max_per_class, self.budget, self.seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, SampleOptions)


def check_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that could not be written at the end."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: name the manifest file, e.g. {out / 'manifest.parquet'}")
    existing = next(folder for folder in (out.parent, *out.parent.parents) if folder.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {out} cannot be written: {existing} is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    options = parse_options(args, SampleOptions)
    options.rule()  # limits that contradict each other fail before anything is read
    out = Path(options.out)
    check_out(out)
    result = sample_images(options)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(result.entries, out, source_root(options.source, options.image_root))
    write_parquet_atomic(to_table(result.rejects, REJECT_SCHEMA), rejects_path(out))
    print(f"{result.summary()}\nwrote {out} and {rejects_path(out)}")
    return 0
