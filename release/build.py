"""Build a Hub-ready release: Parquet shards per config and split, and the dataset card.

The row engine (``release.rows.rows_table`` / ``rejected_tables``) turns generation runs, the image manifest and the images into rows; this writes them
with ``datasets``' own Parquet writer (so ``Image`` and ``ClassLabel`` survive) as
``OUT/<config>/<split>-NNNNN-of-NNNNN.parquet``, in shards of bounded size and small
row groups, then renders ``OUT/README.md`` from ``dataset_card.md`` with the
release's statistics and ``OUT/release.json`` (the marker, see ``release.folder``).
The build streams: records are memory-mapped, rows are written a batch at a time. The inputs are
checked before anything is written (``release.rows.Sources``) and the release is written into a
staging folder and swapped in whole (``release.folder``); the rules are in docs/release.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import re
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets.arrow_writer import ParquetWriter
from tqdm.auto import tqdm

from common.options import add_options, option, parse_options
from generation.near_duplicates import DEFAULT_THRESHOLD, threshold_or_none
from imagenet_think_errors import MissingInputError, RefusedError, UsageError, no_room_reported
from release.card import card_template, render_card
from release.folder import (
    CARD,
    FORMAT,
    FORMAT_VERSION,
    MARKER,
    NO_ROOM_ADVICE,
    HashingFile,
    ReleaseFiles,
    check_writable,
    discards_staging_on_failure,
    edited_card,
    keep_edited_card,
    restore_interrupted_swap,
    staging_folder,
    swap_in,
)
from release.rows import Sources, rejected_tables, rows_table
from release.schema import (
    FORCED_ANSWERS,
    JOINT,
    JOINT_CONFIG,
    REJECTED_CONFIG,
    SINGLE,
    ImageNetThinkConfig,
    config_features,
    release_configs,
)
from release.splits import DEFAULT_FRACTIONS, DEFAULT_SEED, SPLITS
from release.stats import ReleaseStats
from release.think_words import early_think_words
from release.trace_chart import trace_quality_chart
from release.trace_quality import TRACE_QUALITY_CHART

EXAMPLE = "imagenet-think build --shards runs/glm runs/kimi --manifest manifest.parquet --out imagenet_think"
DEFAULT_MAX_SHARD_BYTES = 500 * 2**20
DEFAULT_ROWS_PER_GROUP = 100
IMAGENET_LICENSE = "imagenet"
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # a Hub licence identifier: cc-by-4.0, mit, ...

RULES = "rules (input checks, configs, verdicts, filtering, splits, near-duplicates): docs/release.md"
logger = logging.getLogger(__name__)


@dataclass
class ReleaseSummary:
    out: Path
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    arrow_bytes: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> Arrow bytes
    parquet_bytes: dict[str, int] = field(default_factory=dict)  # config -> bytes on disk
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    models: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # annotator -> model ids/revisions
    questions: list[str] = field(default_factory=list)
    fractions: dict[str, float] = field(default_factory=dict)  # validation, test, seed
    provenance: dict = field(default_factory=dict)  # the manifest's and each run's fingerprints (Sources)
    license: str = IMAGENET_LICENSE  # of the images: ImageNet's terms, or a Hub licence id (--license)
    edited_card: Path | None = None  # where the previous release's hand-edited card was kept (--force)
    near_duplicates: dict = field(default_factory=dict)  # release.leakage.Leakage.summary()

    def published_name(self, path: str) -> str:
        """How the release names a local input: its path relative to the folder holding the release
        when it lies inside it (``runs/glm``), else its own name; never an absolute local path."""
        base, resolved = self.out.resolve().parent, Path(path).resolve()
        return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else resolved.name

    def published_inputs(self) -> dict:
        """``provenance`` as the release publishes it (``release.json``, ``stats.json``, the card): each
        input by :meth:`published_name` and its fingerprints."""
        published = {**self.provenance, "manifest": {**self.provenance["manifest"]}}
        published["manifest"]["path"] = self.published_name(self.provenance["manifest"]["path"])
        published["runs"] = [
            {**run, "path": self.published_name(run["path"])} for run in self.provenance["runs"]
        ]
        return published

    def published_near_duplicates(self) -> dict:
        """``near_duplicates`` as the release publishes it: the reference collection by :meth:`published_name`."""
        reference = self.near_duplicates.get("reference")
        if not reference:
            return self.near_duplicates
        return {
            **self.near_duplicates,
            "reference": {**reference, "path": self.published_name(reference["path"])},
        }

    def images_missing(self) -> dict[str, int]:
        """Run folder -> images of its manifest that no committed chunk covers (only those with gaps)."""
        return {
            run["path"]: run["images_missing"]
            for run in self.provenance.get("runs", [])
            if run["images_missing"]
        }


class _ShardedParquetWriter:
    """Writes one config's split as shards of at most ``max_bytes`` (Arrow size) each."""

    def __init__(
        self, files: ReleaseFiles, folder: Path, split: str, features, max_bytes: int, rows_per_group: int
    ):
        self.files, self.folder, self.split, self.features = files, folder, split, features
        self.max_bytes, self.rows_per_group = max_bytes, rows_per_group
        self.shards: list[HashingFile] = []
        self.rows = self.arrow_bytes = self._shard_bytes = 0
        self._writer: ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            shard = HashingFile(self.folder / f".{self.split}-{len(self.shards):05d}.partial.parquet")
            self.shards.append(shard)
            self._writer = ParquetWriter(
                stream=shard, features=self.features, writer_batch_size=self.rows_per_group
            )
        self._writer.write_table(table)
        self.rows += table.num_rows
        self._shard_bytes += table.nbytes
        if self._shard_bytes >= self.max_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        self.arrow_bytes += self._writer.finalize()[1]
        self._writer, self._shard_bytes = None, 0

    def finish(self) -> list[Path]:
        """Close the last shard and give shards their final names (none for an empty split)."""
        if self._writer is not None:
            self._close_shard()
        total = len(self.shards)
        final = [self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
        for shard, path in zip(self.shards, final, strict=True):
            shard.path.replace(path)
            self.files.add(path, shard)
        return final


def _record_split(summary: ReleaseSummary, name: str, split: str, writer: _ShardedParquetWriter) -> None:
    """Close ``writer`` and count what it wrote (datasets cannot read a Parquet file without rows:
    an empty split gets no file)."""
    summary.parquet_bytes[name] += sum(path.stat().st_size for path in writer.finish())
    if writer.rows:
        summary.rows[name][split] = writer.rows
        summary.arrow_bytes[name][split] = writer.arrow_bytes


class _WriteBehind:
    """Runs writes in one thread, in order, at most ``ahead`` behind the caller (bounded memory);
    :meth:`drain` waits for them and raises the first write's error."""

    def __init__(self, ahead: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="release-writer")
        self._pending: deque[Future] = deque()
        self._ahead = ahead

    def submit(self, write: Callable, *args) -> None:
        self._pending.append(self._pool.submit(write, *args))
        while len(self._pending) > self._ahead:
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, *exc) -> None:
        for future in self._pending:  # after an error: nothing more is written
            future.cancel()
        self._pool.shutdown(wait=True)


def _questions(records: pa.Table, annotators: tuple[str, ...]) -> list[str]:
    """The questions the released annotators were asked (grouped in place on the memory-mapped records)."""
    asked = records.select(["annotator", "question"]).group_by(["annotator", "question"]).aggregate([])
    return sorted({row["question"] for row in asked.to_pylist() if row["annotator"] in annotators})


def _models_by_annotator(records: pa.Table, annotators: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    """The model ids and revisions behind each released annotator (grouped in place, as ``_questions``)."""
    table = records.select(["annotator", "model_id", "model_revision"])
    groups = table.group_by(["annotator", "model_id", "model_revision"]).aggregate([])
    models: dict[str, list[dict[str, str]]] = {}
    for row in groups.to_pylist():
        if row["annotator"] in annotators:
            models.setdefault(row["annotator"], []).append(
                {"model_id": row["model_id"], "revision": row["model_revision"]}
            )
    return models


def _megabytes(value: str) -> int:
    return int(value) * 2**20


@dataclass
class BuildOptions:
    """The options of ``imagenet-think build`` (and of :func:`build_release`), each declared once."""

    shards: list[str | Path] = option(
        nargs="+",
        help="the run folders of `imagenet-think generate` (or folders holding run folders); each must "
        "exist, hold a run made from --manifest, and have only committed chunks that verify",
    )
    manifest: str | Path = option(help="the image manifest the runs were generated from")
    out: str | Path = option(
        help="release folder: absent, empty, or a release this command wrote (it is replaced whole, "
        "atomically); name it imagenet_think to load it by that name",
    )
    annotators: tuple[str, ...] | None = option(
        None,
        nargs="+",
        help="annotators (config names) to release, in config order (default: those of the runs, in run order)",
    )
    allow_other_manifest: bool = option(
        False,
        help="accept runs generated from another manifest (each record's image hash is still checked "
        "against --manifest; the card records it)",
    )
    forced_answer_records: str = option(
        "keep",
        aliases=("--forced-answers",),
        choices=FORCED_ANSWERS,
        help="records whose answer was forced (generate's on_truncation: force_answer): keep (default) or "
        "reject; --forced-answers is the former name",
    )
    force: bool = option(
        False,
        help="rebuild over a release whose README.md was edited by hand (the edited card is kept beside "
        "--out, as NAME.README.edited.md); without it such a rebuild is refused",
    )
    near_duplicate_threshold: int | None = option(
        DEFAULT_THRESHOLD,
        type=threshold_or_none,
        help="near-duplicate images: perceptual hashes at most this many bits apart, 0-24 (default "
        "%(default)s; `none`: off)",
    )
    reference: str | Path | None = option(
        None,
        help="a folder of images or a manifest (e.g. a benchmark's images) the release must not overlap",
    )
    license: str = option(
        IMAGENET_LICENSE,
        help="the images' licence the card declares: imagenet (default) or, for your own images, their "
        "Hub licence id (e.g. cc-by-4.0)",
    )
    image_root: str | Path | None = option(None, help="override the image root recorded in the manifest")
    validation_fraction: float = option(DEFAULT_FRACTIONS["validation"], type=float)
    test_fraction: float = option(DEFAULT_FRACTIONS["test"], type=float)
    split_seed: int = option(DEFAULT_SEED, type=int)
    max_shard_bytes: int = option(
        DEFAULT_MAX_SHARD_BYTES,
        flag="--max-shard-mb",
        type=_megabytes,
        help="shard size, in MiB (default 500)",
    )
    rows_per_group: int = option(DEFAULT_ROWS_PER_GROUP, type=int)
    stats_tokenizer: str | None = option(
        None, help="count tokens with this tokenizer instead of the annotators' own"
    )

    def config_fields(self) -> dict:
        """The :class:`~release.schema.ImageNetThinkConfig` fields these options set (every config's)."""
        return {
            "record_dirs": tuple(str(s) for s in self.shards),
            "manifest": str(self.manifest),
            "image_root": str(self.image_root) if self.image_root else None,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "rows_per_batch": self.rows_per_group,
            "allow_other_manifest": self.allow_other_manifest,
            "forced_answers": self.forced_answer_records,
            "near_duplicate_threshold": self.near_duplicate_threshold,
            "reference": str(self.reference) if self.reference else None,
        }


def build_release(options: BuildOptions, card_note: str | None = None) -> ReleaseSummary:
    """Write the release folder ``options.out`` (replacing the release there, whole) and return what
    went in (the options' help says what each does; ``card_note``: a note atop the card, the demo's).
    """
    return _build(Path(options.out), options, card_note)


@discards_staging_on_failure
def _build(out: Path, options: BuildOptions, card_note: str | None) -> ReleaseSummary:
    check_license(options.license)
    card_template()  # a file of the checkout: a non-editable install fails here, before any work
    restore_interrupted_swap(out)
    check_writable(out)
    card = edited_card(out)
    if card and not options.force:
        raise RefusedError(
            f"{card} was edited since the build (its sha256 is not the one {MARKER} lists) and a rebuild "
            "replaces it: copy your edits out first, or pass "
            "--force to rebuild and keep the edited card beside the release"
        )
    words = early_think_words(options.shards)  # a large release's trace report starts while inputs check
    plan = _plan(out, options.config_fields(), options.annotators, options.license)
    staging = staging_folder(out)
    files = ReleaseFiles(staging)
    samples = Counter(annotator for _, annotator in plan.sources.good)
    counted = ReleaseStats({a: samples[a] for a in plan.annotators}, options.stats_tokenizer, words)
    _write(plan, staging, files, options.max_shard_bytes, options.rows_per_group, counted)
    _finish(plan, staging, files, counted, card_note)
    if card:
        plan.summary.edited_card = keep_edited_card(card)
        logger.warning("%s was edited by hand: kept as %s", card, plan.summary.edited_card)
    swap_in(staging, out)
    return plan.summary


@dataclass
class _Plan:
    """What a release will hold: its checked inputs, its annotators and configs, and the summary
    its writing fills in."""

    sources: Sources
    annotators: tuple[str, ...]
    configs: dict[str, ImageNetThinkConfig]  # the configs written a row batch at a time
    rejected: ImageNetThinkConfig
    summary: ReleaseSummary


def _plan(out: Path, common: dict, wanted: tuple[str, ...] | None, license: str) -> _Plan:
    """Check and index the inputs (:class:`release.rows.Sources`) and decide the configs."""
    sources = Sources(ImageNetThinkConfig(name=JOINT_CONFIG, kind=JOINT, **common))
    annotators = _released_annotators(wanted, sources)
    configs = release_configs(annotators, **common)
    rejected = configs.pop(REJECTED_CONFIG)
    summary = ReleaseSummary(
        out=out,
        models=_models_by_annotator(sources.records.table, annotators),
        questions=_questions(sources.records.table, annotators),
        fractions={
            "validation": common["validation_fraction"],
            "test": common["test_fraction"],
            "seed": common["split_seed"],
        },
        provenance=sources.provenance(),
        near_duplicates=sources.leakage.summary(),
        license=license,
    )
    for reject in sources.rejected:
        if reject.annotator in annotators:
            summary.rejected_by_reason[reject.reason] = summary.rejected_by_reason.get(reject.reason, 0) + 1
    return _Plan(sources, annotators, configs, rejected, summary)


def _write(
    plan: _Plan,
    staging: Path,
    files: ReleaseFiles,
    max_shard_bytes: int,
    rows_per_group: int,
    counted: ReleaseStats,
) -> None:
    """Write every config's Parquet shards into ``staging``, counting the statistics as they go."""
    sources, configs, summary = plan.sources, plan.configs, plan.summary
    for name in [*configs, REJECTED_CONFIG]:
        (staging / name).mkdir()
        summary.rows[name], summary.arrow_bytes[name], summary.parquet_bytes[name] = {}, {}, 0
    features = {
        name: config_features(config) for name, config in [*configs.items(), (REJECTED_CONFIG, plan.rejected)]
    }

    def writer(name: str, split: str) -> _ShardedParquetWriter:
        return _ShardedParquetWriter(
            files, staging / name, split, features[name], max_shard_bytes, rows_per_group
        )

    # One pass over the images, split by split, writing every config at once: each image is read once.
    # Parquet encoding frees the GIL, so one thread writes the tables while the next batch's are built.
    with (
        _WriteBehind() as behind,
        tqdm(total=len(sources.image_ids), desc="writing release", unit=" images") as progress,
    ):
        for split in SPLITS:
            writers = {name: writer(name, split) for name in configs}
            for rows in sources.image_batches(split, rows_per_group):
                image_cell = functools.cache(sources.images.cell)  # this batch's images, read once
                for name, config in configs.items():
                    table = rows_table(config, sources, rows, image_cell)
                    if table is not None:
                        behind.submit(writers[name].write, table)
                        if config.kind == SINGLE:  # in the order `imagenet-think stats` reads them
                            counted.add(name, table)
                progress.update(len(rows))
            behind.drain()
            for name, split_writer in writers.items():
                _record_split(summary, name, split, split_writer)
    rejected_writer = writer(REJECTED_CONFIG, "train")
    for table in rejected_tables(plan.rejected, sources):
        rejected_writer.write(table)
        counted.add_rejected(table)
    _record_split(summary, REJECTED_CONFIG, "train", rejected_writer)
    for name in list(summary.rows):
        if not summary.rows[name]:
            del summary.rows[name], summary.arrow_bytes[name], summary.parquet_bytes[name]
            (staging / name).rmdir()


def _finish(
    plan: _Plan, staging: Path, files: ReleaseFiles, counted: ReleaseStats, card_note: str | None
) -> None:
    """``stats.json``, the card and, last, the marker ``release.json`` into ``staging``."""
    summary = plan.summary
    stats = {
        **counted.result(),
        "near_duplicates": summary.published_near_duplicates(),
        "inputs": summary.published_inputs(),
    }
    files.write_bytes("stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    files.write_bytes(TRACE_QUALITY_CHART, trace_quality_chart(stats["trace_quality"]))
    files.write_bytes(CARD, render_card(summary, stats, plan.annotators, demo_note=card_note).encode())
    _write_marker(staging, summary, plan.annotators, files.listing())


def check_license(license: str) -> None:
    """Refuse a ``--license`` that is not ``imagenet`` or a Hub licence identifier."""
    if license != IMAGENET_LICENSE and (license == "other" or not LICENSE_ID.match(license)):
        raise UsageError(
            f"--license {license!r}: give `imagenet` (the default: ImageNet's terms of access, for ImageNet "
            "images) or the Hub licence id your own images are under, e.g. cc-by-4.0 "
            "(https://huggingface.co/docs/hub/repositories-licenses)"
        )


def _released_annotators(wanted: tuple[str, ...] | None, sources: Sources) -> tuple[str, ...]:
    """The annotators to release: ``wanted`` (each must have a run), else every run's, in run order."""
    if not wanted:
        return sources.annotators
    missing = [a for a in wanted if a not in sources.annotators]
    if missing:
        raise MissingInputError(
            f"--annotators names {', '.join(missing)}, but no --shards run holds "
            f"{'it' if len(missing) == 1 else 'them'} (the runs hold: {', '.join(sources.annotators)}); "
            "add its run folder to --shards or drop it from --annotators"
        )
    return tuple(wanted)


def _write_marker(
    staging: Path, summary: ReleaseSummary, annotators: tuple[str, ...], files: dict[str, dict]
) -> None:
    """``release.json``, written last: the files of the release (size, sha256), its configs and its inputs."""
    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "annotators": list(annotators),
        "configs": summary.rows,
        "inputs": summary.published_inputs(),
        "near_duplicates": summary.published_near_duplicates(),
        "files": files,
    }
    marker["fingerprint"] = hashlib.sha256(json.dumps(marker, sort_keys=True).encode()).hexdigest()
    with no_room_reported(staging / MARKER, NO_ROOM_ADVICE):
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, BuildOptions)


def run(args: argparse.Namespace) -> int:
    summary = build_release(parse_options(args, BuildOptions))
    for name, splits in summary.rows.items():
        print(f"{name:>10}: " + ", ".join(f"{split} {rows}" for split, rows in splits.items()))
    rejected = (
        ", ".join(f"{reason} {n}" for reason, n in sorted(summary.rejected_by_reason.items())) or "none"
    )
    print(f"rejected records: {rejected}")
    for folder, missing in summary.images_missing().items():
        print(
            f"warning: {folder} covers {missing:,} fewer image(s) than its manifest (chunks not generated yet)"
        )
    if summary.edited_card:
        print(f"the previous release's hand-edited card is kept as {summary.edited_card}")
    print(f"release written to {summary.out} (card: {summary.out / 'README.md'})")
    return 0
