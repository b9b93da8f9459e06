"""ImageNet-Think as a ``datasets`` builder: generation shards + image manifest + images -> rows.

Configs:

- ``glm``, ``kimi`` (or any annotator name): one row per image with that
  annotator's think and answer and the record's provenance;
- ``both``: one row per image with both annotators' think and answer, the two
  references the paper's evaluation compares against (an image is here only if
  both records are good);
- ``rejected``: every record kept out of the others, with its reason
  (``generation.quality``), for those who study failures.

Splits ``train`` / ``validation`` / ``test`` follow ``release.splits`` (the rule
is in its docstring). ``datasets`` >= 4 no longer loads scripts, so this builder
is used directly, and ``imagenet-think build`` turns it into the Parquet release
that ``load_dataset`` reads::

    builder = ImageNetThink(config_name="both", data_dir="runs/")  # manifest.parquet + run folders
    builder.download_and_prepare()
    ds = builder.as_dataset("train")
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from PIL import Image, UnidentifiedImageError

from generation.classes import imagenet21k_classes
from generation.quality import rejection_reason
from generation.records import (
    RECORD_GLOB,
    RECORD_SCHEMA,
    REJECT_GLOB,
    committed_reject_shards,
    iter_rows,
    read_manifest,
)
from release.splits import DEFAULT_FRACTIONS, DEFAULT_SEED, SPLITS, assign_splits

ANNOTATORS = ("glm", "kimi")
MANIFEST_FILE = "manifest.parquet"
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

_CITATION = """\
@article{chittyvenkata2025imagenetthink,
  title   = {ImageNet-Think-250K: A Large-Scale Synthetic Dataset for Multimodal Reasoning for Vision Language Models},
  author  = {Chitty-Venkata, Krishna Teja and Emani, Murali},
  journal = {arXiv preprint arXiv:2510.01582},
  year    = {2025}
}"""

# Provenance columns of the per-annotator configs, taken as they are from the generation records.
RECORD_COLUMNS = {
    "think": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "annotator": datasets.Value("string"),
    "model_id": datasets.Value("string"),
    "model_revision": datasets.Value("string"),
    "think_closed": datasets.Value("bool"),
    "finish_reason": datasets.Value("string"),
    "num_prompt_tokens": datasets.Value("int32"),
    "num_output_tokens": datasets.Value("int32"),
    "sampling": datasets.Value("string"),
    "created_at": datasets.Value("string"),
}
REJECTED_COLUMNS = {
    "output": datasets.Value("string"),
    "split": datasets.Value("string"),
    "reject_reason": datasets.Value("string"),
    "reject_detail": datasets.Value("string"),
}
JOINT_SUFFIXES = ("think", "answer", "model_id")


@dataclass
class ImageNetThinkConfig(datasets.BuilderConfig):
    """``kind`` is ``single`` (one annotator), ``joint`` (all ``annotators`` per row) or ``rejected``."""

    kind: str = "single"
    annotators: tuple[str, ...] = ANNOTATORS
    record_dirs: tuple[str, ...] = ()
    manifest: str | None = None
    image_root: str | None = None
    validation_fraction: float = DEFAULT_FRACTIONS["validation"]
    test_fraction: float = DEFAULT_FRACTIONS["test"]
    split_seed: int = DEFAULT_SEED
    rows_per_batch: int = 100


def image_features(classes=None) -> dict:
    classes = classes or imagenet21k_classes()
    return {
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "wnid": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(classes.wnids)),
        "class_name": datasets.Value("string"),
        "question": datasets.Value("string"),
    }


def config_features(config: ImageNetThinkConfig) -> datasets.Features:
    columns = image_features()
    if config.kind == "joint":
        for annotator in config.annotators:
            columns.update({f"{annotator}_{suffix}": datasets.Value("string") for suffix in JOINT_SUFFIXES})
    else:
        columns.update(RECORD_COLUMNS)
    if config.kind == "rejected":
        columns.update(REJECTED_COLUMNS)
    return datasets.Features(columns)


@dataclass(frozen=True)
class RejectedRecord:
    image_id: str
    annotator: str
    reason: str
    detail: str
    record_row: int | None  # row in the records table; None for a generation-stage reject


class Sources:
    """The inputs of a release, indexed once: records (memory-mapped), manifest, images, verdicts, splits."""

    def __init__(self, config: ImageNetThinkConfig):
        self.config = config
        manifest_path, record_dirs = _resolve_inputs(config)
        self.manifest, root = read_manifest(manifest_path)
        self.image_root = Path(config.image_root) if config.image_root else root
        self.classes = imagenet21k_classes()
        self._workdir = tempfile.TemporaryDirectory(prefix="imagenet-think-")
        self.records = _memory_mapped_records(record_dirs, Path(self._workdir.name) / "records.arrow")
        self._record_batches = self.records.to_batches()
        self._batch_starts = np.cumsum([0] + [batch.num_rows for batch in self._record_batches])
        self.generation_rejects = list(iter_rows(committed_reject_shards(_find(record_dirs, REJECT_GLOB))))
        self.image_ids = self.manifest["image_id"].to_pylist()
        self.wnids = self.manifest["wnid"].to_pylist()
        self.image_paths = self.manifest["image_path"].to_pylist()
        self.manifest_row = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.plain_rgb = self.manifest["plain_rgb"].to_pylist()  # stored as they are; the others re-encoded
        self.image_problems = {  # the sampler decoded every image fully: here, only its presence is checked
            image_id: f"no file {self.image_root / relative}"
            for image_id, relative in zip(self.image_ids, self.image_paths, strict=True)
            if not (self.image_root / relative).is_file()
        }
        self.splits = assign_splits(
            zip(self.image_ids, self.wnids, strict=True),
            validation=config.validation_fraction,
            test=config.test_fraction,
            seed=config.split_seed,
        )
        self.good, self.rejected = self._judge_records()

    def _judge_records(self) -> tuple[dict[tuple[str, str], int], list[RejectedRecord]]:
        good: dict[tuple[str, str], int] = {}
        rejected: list[RejectedRecord] = []
        row = 0
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # zlib frees the GIL
            for keys, quality in pool.map(_judge_batch, self.records.to_batches()):
                for (image_id, annotator), reason in zip(keys, quality, strict=True):
                    key = (image_id, annotator)
                    if reason is None and key in good:
                        reason = "duplicate_record"
                    if reason is None and image_id not in self.manifest_row:
                        reason = "image_not_in_manifest"
                    detail = _REASON_DETAILS.get(reason, "")
                    if reason is None and image_id in self.image_problems:
                        reason, detail = "image_unreadable", self.image_problems[image_id]
                    if reason is None:
                        good[key] = row
                    else:
                        rejected.append(RejectedRecord(image_id, annotator, reason, detail, row))
                    row += 1
        for reject in self.generation_rejects:
            rejected.append(
                RejectedRecord(
                    reject["image_id"], reject["annotator"], reject["reason"], reject["detail"], None
                )
            )
        return good, rejected

    def take_records(self, rows: list[int]) -> pa.Table:
        """Records at ``rows``, in that order, taken batch by batch.

        ``Table.take`` on the memory-mapped table would concatenate every chunk of a column
        first; here only the few record batches the rows fall in are touched.
        """
        rows = np.asarray(rows, dtype=np.int64)
        batch_of = np.searchsorted(self._batch_starts, rows, side="right") - 1
        ascending = bool(np.all(rows[1:] > rows[:-1]))  # the usual case: records written in manifest order
        order = np.arange(len(rows)) if ascending else np.argsort(batch_of, kind="stable")
        pieces = []
        for batch in np.unique(batch_of):
            wanted = rows[order][batch_of[order] == batch] - self._batch_starts[batch]
            pieces.append(self._record_batches[batch].take(pa.array(wanted)))
        gathered = pa.Table.from_batches(pieces, schema=self.records.schema)
        return gathered if ascending else gathered.combine_chunks().take(pa.array(np.argsort(order)))

    def image_batches(self, split: str, size: int) -> Iterator[list[int]]:
        """Manifest rows of the images in ``split``, in manifest order, ``size`` at a time."""
        rows = [row for row, image_id in enumerate(self.image_ids) if self.splits[image_id] == split]
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    def image_cell(self, manifest_row: int) -> dict:
        """The image as ``datasets.Image`` stores it: original bytes, or RGB re-encoded when it must be."""
        relative = self.image_paths[manifest_row]
        path = self.image_root / relative
        try:
            data = path.read_bytes() if self.plain_rgb[manifest_row] else _rgb_bytes(path)
            return {"bytes": data, "path": relative}
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise RuntimeError(
                f"image {self.image_root / relative} became unreadable during the build: {error}"
            ) from error


_REASON_DETAILS = {
    "truncated": "generation stopped at max_tokens (finish_reason=length)",
    "think_not_closed": "the reasoning delimiter was never closed",
    "empty_answer": "no answer after the reasoning",
    "repetition_loop": "the text degenerates into a repetition loop",
    "duplicate_record": "a second record for the same image and annotator",
    "image_not_in_manifest": "the record's image is not in the manifest",
}
_EMPTY = defaultdict(str, {pa.bool_(): False, pa.int32(): 0})


def _rgb_bytes(path: Path) -> bytes:
    """The image as upright RGB: PNG for lossless sources, JPEG (quality 95) for JPEGs."""
    from generation.images import load_rgb

    with Image.open(path) as image:
        lossless = image.format != "JPEG"
    buffer = io.BytesIO()
    load_rgb(path).save(buffer, format="PNG" if lossless else "JPEG", **({} if lossless else {"quality": 95}))
    return buffer.getvalue()


def _judge_batch(batch: pa.RecordBatch) -> tuple[list[tuple[str, str]], list[str | None]]:
    """(image_id, annotator) and the quality verdict of each record of a batch."""
    columns = batch.select(
        ["image_id", "annotator", "think_closed", "finish_reason", "think", "answer"]
    ).to_pydict()
    keys = list(zip(columns["image_id"], columns["annotator"], strict=True))
    verdicts = [
        rejection_reason(*fields)
        for fields in zip(
            columns["think_closed"],
            columns["finish_reason"],
            columns["think"],
            columns["answer"],
            strict=True,
        )
    ]
    return keys, verdicts


def _find(dirs: tuple[Path, ...], pattern: str) -> list[Path]:
    return sorted(
        {path for folder in dirs for path in folder.rglob(pattern) if not path.name.startswith(".")}
    )


def _resolve_inputs(config: ImageNetThinkConfig) -> tuple[Path, tuple[Path, ...]]:
    data_dir = Path(config.data_dir) if config.data_dir else None
    manifest = Path(config.manifest) if config.manifest else (data_dir / MANIFEST_FILE if data_dir else None)
    record_dirs = tuple(Path(d) for d in config.record_dirs) or ((data_dir,) if data_dir else ())
    if manifest is None or not record_dirs:
        raise ValueError(
            "ImageNetThink needs data_dir= (manifest.parquet + run folders) or manifest= and record_dirs="
        )
    if not manifest.is_file():
        raise FileNotFoundError(
            f"image manifest not found: {manifest} (write it with `imagenet-think sample`)"
        )
    if not _find(record_dirs, RECORD_GLOB):
        raise FileNotFoundError(f"no {RECORD_GLOB} shards under {[str(d) for d in record_dirs]}")
    return manifest, record_dirs


def _memory_mapped_records(record_dirs: tuple[Path, ...], arrow_path: Path) -> pa.Table:
    """All record shards as one memory-mapped Arrow table: bounded memory, random access by row."""
    files = _find(record_dirs, RECORD_GLOB)
    scanner = pads.dataset([str(f) for f in files], format="parquet", schema=RECORD_SCHEMA).scanner(
        batch_size=1000
    )
    with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_file(sink, RECORD_SCHEMA) as writer:
        for batch in scanner.to_batches():
            writer.write_batch(batch)
    return pa.ipc.open_file(pa.memory_map(str(arrow_path))).read_all()


class ImageNetThink(datasets.ArrowBasedBuilder):
    """ImageNet-Think: ImageNet-21K-P images with thinking VLMs' reasoning traces and answers."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ImageNetThinkConfig
    BUILDER_CONFIGS = [
        ImageNetThinkConfig(
            name="glm", kind="single", annotators=("glm",), description="GLM-4.1V-9B-Thinking"
        ),
        ImageNetThinkConfig(
            name="kimi", kind="single", annotators=("kimi",), description="Kimi-VL-A3B-Thinking-2506"
        ),
        ImageNetThinkConfig(
            name="both", kind="joint", description="both annotators' think and answer per image"
        ),
        ImageNetThinkConfig(
            name="rejected", kind="rejected", description="records kept out, with their reason"
        ),
    ]
    DEFAULT_CONFIG_NAME = "both"

    def _create_builder_config(self, config_name=None, custom_features=None, **config_kwargs):
        if isinstance(config_name, str) and config_name not in self.builder_configs:
            # Any other annotator name is a per-annotator config of a release made with other models.
            config_kwargs.update(name=config_name, kind="single", annotators=(config_name,))
            config_name = None
        return super()._create_builder_config(config_name, custom_features, **config_kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__.split("\n")[0],
            features=config_features(self.config),
            homepage="https://arxiv.org/abs/2510.01582",
            license="cc-by-4.0",
            citation=_CITATION,
        )

    @cached_property
    def sources(self) -> Sources:
        return Sources(self.config)

    def _split_generators(self, dl_manager):
        names = ("train",) if self.config.kind == "rejected" else SPLITS
        return [datasets.SplitGenerator(name=name, gen_kwargs={"split": name}) for name in names]

    def _generate_tables(self, split: str) -> Iterator[tuple[str, pa.Table]]:
        if self.config.kind == "rejected":
            rejects = self._rejects()
            for index in range(0, len(rejects), self.config.rows_per_batch):
                yield (
                    f"{split}-{index}",
                    self._rejected_table(rejects[index : index + self.config.rows_per_batch]),
                )
            return
        for index, rows in enumerate(self.sources.image_batches(split, self.config.rows_per_batch)):
            table = self.rows_table(rows, self.sources.image_cell)
            if table is not None:
                yield f"{split}-{index}", table

    def rows_table(self, rows: list[int], image_cell: Callable[[int], dict]) -> pa.Table | None:
        """This config's rows for the images at manifest ``rows`` (None when it has none of them).

        ``image_cell`` reads an image's cell: the release build passes one cached per batch, so
        that the glm, kimi and both configs read each image once.
        """
        ids, good = self.sources.image_ids, self.sources.good
        kept, records = [], []
        for row in rows:
            found = [good.get((ids[row], annotator)) for annotator in self.config.annotators]
            if None not in found:
                kept.append(row)
                records.append(found)
        if not kept:
            return None
        columns = self._image_columns(kept, [image_cell(row) for row in kept])
        for position, (annotator, record_rows) in enumerate(
            zip(self.config.annotators, zip(*records, strict=True), strict=True)
        ):
            taken = self.sources.take_records(list(record_rows))
            if position == 0:
                columns["question"] = taken["question"]
            if self.config.kind == "single":
                columns.update({name: taken[name] for name in RECORD_COLUMNS})
            else:
                columns.update({f"{annotator}_{suffix}": taken[suffix] for suffix in JOINT_SUFFIXES})
        return pa.table(columns)

    def _rejects(self) -> list[tuple[int | None, bool, RejectedRecord]]:
        """(manifest row, whether its image can be read, reject) for this config's annotators' rejects."""
        wanted, rejects = set(self.config.annotators), []
        for reject in self.sources.rejected:
            if reject.annotator in wanted:
                row = self.sources.manifest_row.get(reject.image_id)
                usable = row is not None and reject.image_id not in self.sources.image_problems
                rejects.append((row, usable, reject))
        return rejects

    # Table assembly: Arrow columns taken from the manifest and the memory-mapped records.
    def _image_columns(self, rows: list[int | None], cells: list[dict | None]) -> dict[str, pa.Array]:
        """Image and class columns; ``None`` rows (records of images outside the manifest) get empty cells."""
        sources, classes = self.sources, self.sources.classes
        wnids = [sources.wnids[r] if r is not None else "" for r in rows]
        return {
            "image": pa.array(cells, type=IMAGE_STRUCT),
            "image_id": pa.array([sources.image_ids[r] if r is not None else "" for r in rows], pa.string()),
            "wnid": pa.array(wnids, pa.string()),
            "label": pa.array([classes.index(w) if w in classes else -1 for w in wnids], pa.int64()),
            "class_name": pa.array([classes.name(w) if w in classes else w for w in wnids], pa.string()),
        }

    def _rejected_table(self, batch) -> pa.Table:
        rows, usable, rejects = zip(*batch, strict=True)
        cells = [self.sources.image_cell(row) if ok else None for row, ok in zip(rows, usable, strict=True)]
        record_rows = [r.record_row for r in rejects]
        known = [r for r in record_rows if r is not None]
        found = self.sources.take_records(known).to_pylist() if known else []
        by_row = dict(zip(known, found, strict=True))
        fields = list(RECORD_COLUMNS) + ["question", "output"]
        values: dict[str, list] = defaultdict(list)
        for reject in rejects:
            record = by_row.get(reject.record_row, {})
            for name in fields:
                values[name].append(record.get(name, _EMPTY[RECORD_SCHEMA.field(name).type]))
            values["annotator"][-1] = reject.annotator
            values["split"].append(self.sources.splits.get(reject.image_id, ""))
            values["reject_reason"].append(reject.reason)
            values["reject_detail"].append(reject.detail)
        columns = self._image_columns(list(rows), list(cells))
        columns["image_id"] = pa.array([r.image_id for r in rejects], pa.string())
        columns.update(values)
        return pa.table(columns)
