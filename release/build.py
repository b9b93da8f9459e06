"""Build a Hub-ready release: Parquet shards per config and split, and the dataset card.

The ``ImageNetThink`` builder turns generation shards, the image manifest and
the images into rows; this writes them with ``datasets``' own Parquet writer
(so ``Image`` and ``ClassLabel`` survive) as ``OUT/<config>/<split>-NNNNN-of-NNNNN.parquet``,
in shards of bounded size and small row groups, then renders ``OUT/README.md``
from ``dataset_card.md`` with the release's statistics. The build streams:
records are memory-mapped, rows are written a batch at a time.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets.arrow_writer import ParquetWriter
from tqdm.auto import tqdm

from imagenet_think import ANNOTATORS, ImageNetThink, ImageNetThinkConfig, Sources
from release.card import render_card
from release.splits import DEFAULT_FRACTIONS, SPLITS
from release.stats import ReleaseStats

EXAMPLE = "imagenet-think build --shards runs/glm runs/kimi --manifest manifest.parquet --out imagenet_think"
DEFAULT_MAX_SHARD_BYTES = 500 * 2**20
DEFAULT_ROWS_PER_GROUP = 100
REJECTED_CONFIG = "rejected"
JOINT_CONFIG = ImageNetThink.DEFAULT_CONFIG_NAME


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


class _ShardedParquetWriter:
    """Writes one config's split as shards of at most ``max_bytes`` (Arrow size) each."""

    def __init__(self, folder: Path, split: str, features, max_bytes: int, rows_per_group: int):
        self.folder, self.split, self.features = folder, split, features
        self.max_bytes, self.rows_per_group = max_bytes, rows_per_group
        self.paths: list[Path] = []
        self.rows = self.arrow_bytes = 0
        self._writer: ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            path = self.folder / f".{self.split}-{len(self.paths):05d}.partial.parquet"
            self.paths.append(path)
            self._writer = ParquetWriter(
                path=str(path), features=self.features, writer_batch_size=self.rows_per_group
            )
        self._writer.write_table(table)
        self.rows += table.num_rows
        if self._writer._num_bytes >= self.max_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        self.arrow_bytes += self._writer.finalize()[1]
        self._writer = None

    def finish(self) -> list[Path]:
        """Close the last shard and give shards their final names (none for an empty split)."""
        if self._writer is not None:
            self._close_shard()
        total = len(self.paths)
        final = [self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
        for partial, path in zip(self.paths, final, strict=True):
            partial.replace(path)
        return final


def _record_split(summary: ReleaseSummary, name: str, split: str, writer: _ShardedParquetWriter) -> None:
    """Close ``writer`` and count what it wrote (datasets cannot read a Parquet file without rows:
    an empty split gets no file)."""
    summary.parquet_bytes[name] += sum(path.stat().st_size for path in writer.finish())
    if writer.rows:
        summary.rows[name][split] = writer.rows
        summary.arrow_bytes[name][split] = writer.arrow_bytes


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


def build_release(
    shards: list[str | Path],
    manifest: str | Path,
    out: str | Path,
    annotators: tuple[str, ...] = ANNOTATORS,
    image_root: str | Path | None = None,
    validation_fraction: float = DEFAULT_FRACTIONS["validation"],
    test_fraction: float = DEFAULT_FRACTIONS["test"],
    split_seed: int = 0,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
    stats_tokenizer: str | None = None,
    card_note: str | None = None,
) -> ReleaseSummary:
    """Write the release folder ``out`` (replacing its config folders) and return what went in."""
    out = Path(out)
    common = {
        "record_dirs": tuple(str(s) for s in shards),
        "manifest": str(manifest),
        "image_root": str(image_root) if image_root else None,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "rows_per_batch": rows_per_group,
    }
    sources = Sources(ImageNetThinkConfig(name=JOINT_CONFIG, kind="joint", annotators=annotators, **common))
    configs = [(a, {"kind": "single", "annotators": (a,)}) for a in annotators]
    if len(annotators) > 1:
        configs += [(JOINT_CONFIG, {"kind": "joint", "annotators": annotators})]
    configs += [(REJECTED_CONFIG, {"kind": "rejected", "annotators": annotators})]

    summary = ReleaseSummary(
        out=out,
        models=_models_by_annotator(sources.records, annotators),
        questions=_questions(sources.records, annotators),
        fractions={"validation": validation_fraction, "test": test_fraction, "seed": split_seed},
    )
    for reject in sources.rejected:
        if reject.annotator in annotators:
            summary.rejected_by_reason[reject.reason] = summary.rejected_by_reason.get(reject.reason, 0) + 1
    out.mkdir(parents=True, exist_ok=True)
    builders = {}
    for name, overrides in configs:
        builders[name] = ImageNetThink(config_name=name, **common, **overrides)
        builders[name].sources = sources
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
        summary.rows[name], summary.arrow_bytes[name], summary.parquet_bytes[name] = {}, {}, 0
    rejected = builders.pop(REJECTED_CONFIG)
    samples = Counter(annotator for _, annotator in sources.good)
    counted = ReleaseStats({a: samples[a] for a in annotators}, tokenizer=stats_tokenizer)

    def writer(name: str, split: str) -> _ShardedParquetWriter:
        features = builders.get(name, rejected).info.features
        return _ShardedParquetWriter(out / name, split, features, max_shard_bytes, rows_per_group)

    # One pass over the images, split by split, writing every config at once: each image is read once.
    with tqdm(total=len(sources.image_ids), desc="writing release", unit=" images") as progress:
        for split in SPLITS:
            writers = {name: writer(name, split) for name in builders}
            for rows in sources.image_batches(split, rows_per_group):
                image_cell = functools.cache(sources.image_cell)  # this batch's images, read once
                for name, builder in builders.items():
                    table = builder.rows_table(rows, image_cell)
                    if table is not None:
                        writers[name].write(table)
                        if builder.config.kind == "single":  # in the order `imagenet-think stats` reads them
                            counted.add(name, table)
                progress.update(len(rows))
            for name, split_writer in writers.items():
                _record_split(summary, name, split, split_writer)
    rejected_writer = writer(REJECTED_CONFIG, "train")
    for _, table in rejected._generate_tables("train"):
        rejected_writer.write(table)
    _record_split(summary, REJECTED_CONFIG, "train", rejected_writer)
    for name in list(summary.rows):
        if not summary.rows[name]:
            del summary.rows[name], summary.arrow_bytes[name], summary.parquet_bytes[name]
            (out / name).rmdir()

    stats = counted.result()
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(
        render_card(summary, stats, annotators, demo_note=card_note), encoding="utf-8"
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="run folders holding records-*.parquet")
    parser.add_argument(
        "--manifest", required=True, help="the image manifest written by `imagenet-think sample`"
    )
    parser.add_argument(
        "--out", required=True, help="release folder; name it imagenet_think to load it by that name"
    )
    parser.add_argument("--annotators", nargs="+", default=list(ANNOTATORS), help="annotator (config) names")
    parser.add_argument("--image-root", help="override the image root recorded in the manifest")
    parser.add_argument("--validation-fraction", type=float, default=DEFAULT_FRACTIONS["validation"])
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_FRACTIONS["test"])
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--max-shard-mb", type=int, default=DEFAULT_MAX_SHARD_BYTES // 2**20)
    parser.add_argument("--rows-per-group", type=int, default=DEFAULT_ROWS_PER_GROUP)
    parser.add_argument(
        "--stats-tokenizer", help="count tokens with this tokenizer instead of the annotators' own"
    )


def run(args: argparse.Namespace) -> int:
    summary = build_release(
        args.shards,
        args.manifest,
        args.out,
        annotators=tuple(args.annotators),
        image_root=args.image_root,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        max_shard_bytes=args.max_shard_mb * 2**20,
        rows_per_group=args.rows_per_group,
        stats_tokenizer=args.stats_tokenizer,
    )
    for name, splits in summary.rows.items():
        print(f"{name:>10}: " + ", ".join(f"{split} {rows}" for split, rows in splits.items()))
    rejected = (
        ", ".join(f"{reason} {n}" for reason, n in sorted(summary.rejected_by_reason.items())) or "none"
    )
    print(f"rejected records: {rejected}")
    print(f"release written to {summary.out} (card: {summary.out / 'README.md'})")
    return 0
