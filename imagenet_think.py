"""ImageNet-Think as a ``datasets`` builder: generation shards + image manifest + images -> rows.

Configs:

- ``glm``, ``kimi`` (or any annotator name): one row per image with that
  annotator's think and answer and the record's provenance;
- ``both``: one row per image with both annotators' think and answer, the two
  references the paper's evaluation compares against (an image is here only if
  both records are good);
- ``verified``: one row per trace (image, annotator) whose answer names the image's class
  or a more specific kind of it (label verdict ``exact`` or ``hyponym``): the
  rejection-sampled subset for SFT;
- ``rejected``: every record kept out of the others, with its reason
  (``generation.verdicts.quality``), for those who study failures.

Per-annotator and ``verified`` rows carry ``label_verdict`` and ``label_score`` (``both``:
``<annotator>_label_verdict`` / ``_label_score``): the answer's label verdict against the
image's class in the WordNet hierarchy (``generation.verdicts.labels.label_verdicts``).

Splits ``train`` / ``validation`` / ``test`` follow :func:`assign_splits` (the rule
is in its docstring). ``datasets`` >= 4 no longer loads scripts, so this builder
is used directly, and ``imagenet-think build`` turns it into the Parquet release
that ``load_dataset`` reads::

    builder = ImageNetThink(config_name="both", data_dir="runs/")  # manifest.parquet + run folders
    builder.download_and_prepare()
    ds = builder.as_dataset("train")
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import logging
import math
import os
import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from generation.classes import imagenet21k_classes
from generation.records import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    complete_record_columns,
    manifest_fingerprint,
    read_manifest,
)
from generation.runs import RUN_FILE, RunCheck, check_run
from generation.verdicts.labels import CORRECT_KINDS, KINDS
from generation.verdicts.policy import LabelVerdicts, current_quality_verdicts
from generation.verdicts.quality import REJECT_REASONS
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError

logger = logging.getLogger(__name__)

ANNOTATORS = ("glm", "kimi")
MANIFEST_FILE = "manifest.parquet"
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# Train / validation / test assignment: deterministic and class-stratified. The rule, applied to the
# image manifest (never to the records, so an image sits in the same split in every config whatever
# its annotations): within each class the images are ordered by ``sha256(f"{seed}:{image_id}")``; the
# first ``floor(n * test + 0.5)`` go to ``test``, the next ``floor(n * validation + 0.5)`` to
# ``validation`` and the rest to ``train``. The split of an image depends only on its own class's
# images and the seed.

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


CITATION = """\
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
    "forced_answer": datasets.Value("bool"),  # the think hit max_tokens and an answer was forced
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
VERDICT_COLUMNS = {"label_verdict": datasets.Value("string"), "label_score": datasets.Value("float32")}
# The joint config's columns per annotator: <annotator>_<field> (joint_column).
JOINT_RECORD_FIELDS = ("think", "answer", "model_id")
JOINT_CONFIG = "both"
FORCED_ANSWERS = ("keep", "reject")  # ImageNetThinkConfig.forced_answers (build --forced-answers)
VERIFIED_CONFIG = "verified"
REJECTED_CONFIG = "rejected"


def joint_column(annotator: str, field: str) -> str:
    """The ``both`` config's column holding ``annotator``'s ``field`` (``glm_think``, ``kimi_answer``)."""
    return f"{annotator}_{field}"


def joint_annotators(columns: list[str]) -> list[str]:
    """The annotators of a ``both`` table, in column order, from its column names."""
    suffix = "_" + JOINT_RECORD_FIELDS[0]
    return [column.removesuffix(suffix) for column in columns if column.endswith(suffix)]


@dataclass
class ImageNetThinkConfig(datasets.BuilderConfig):
    """``kind`` is ``single`` (one annotator), ``joint`` (all ``annotators`` per row), ``verified``
    (a row per verified trace of any of ``annotators``) or ``rejected``."""

    kind: str = "single"
    annotators: tuple[str, ...] = ANNOTATORS
    record_dirs: tuple[str, ...] = ()
    manifest: str | None = None
    image_root: str | None = None
    validation_fraction: float = DEFAULT_FRACTIONS["validation"]
    test_fraction: float = DEFAULT_FRACTIONS["test"]
    split_seed: int = DEFAULT_SEED
    rows_per_batch: int = 100
    allow_other_manifest: bool = False  # combine runs made from other manifests (image hashes still checked)
    forced_answers: str = "keep"  # records whose answer was forced: keep them, or reject them (forced_answer)


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
            columns.update(
                {joint_column(annotator, f): datasets.Value("string") for f in JOINT_RECORD_FIELDS}
            )
            columns.update({joint_column(annotator, f): value for f, value in VERDICT_COLUMNS.items()})
    else:
        columns.update(RECORD_COLUMNS)
    if config.kind in ("single", "verified"):
        columns.update(VERDICT_COLUMNS)
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


class RecordStore:
    """Every committed record of the runs in one memory-mapped Arrow file: bounded memory, random
    access by row, and the run folder and file each row came from."""

    def __init__(self, record_files: list[tuple[Path, Path]]):
        self._workdir = tempfile.TemporaryDirectory(prefix="imagenet-think-")
        self.table, self._origin = _memory_mapped_records(
            record_files, Path(self._workdir.name) / "records.arrow"
        )
        self._batches = self.table.to_batches()
        self._batch_starts = np.cumsum([0] + [batch.num_rows for batch in self._batches])

    def origin(self, row: int) -> tuple[Path, Path]:
        """(run folder, records file) of ``row``."""
        starts = [start for start, _, _ in self._origin]
        _, folder, path = self._origin[int(np.searchsorted(starts, row, "right")) - 1]
        return folder, path

    def take(self, rows: list[int], columns: list[str] | None = None) -> pa.Table:
        """Records at ``rows``, in that order, taken batch by batch (only ``columns``, when given).

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
            source = self._batches[batch] if columns is None else self._batches[batch].select(columns)
            pieces.append(source.take(pa.array(wanted)))
        schema = (
            self.table.schema if columns is None else pa.schema([self.table.schema.field(c) for c in columns])
        )
        gathered = pa.Table.from_batches(pieces, schema=schema)
        return gathered if ascending else gathered.combine_chunks().take(pa.array(np.argsort(order)))


def _files_in(root: Path, folders: set[str]) -> set[str]:
    """The regular files (and links to them) in ``folders`` under ``root``, as relative paths: one
    listing per folder instead of one stat per image."""
    found = set()
    for folder in folders:
        try:
            with os.scandir(root / folder) as entries:
                found.update(posixpath.join(folder, e.name) for e in entries if e.is_file())
        except OSError:  # a missing or unreadable folder: its images are missing
            continue
    return found


class ImageFiles:
    """The manifest's image files as ``datasets.Image`` cells. The sampler decoded every image
    fully, so here only their presence is checked; plain RGB files are stored as they are, the
    others re-encoded as upright RGB."""

    def __init__(self, manifest: pa.Table, root: Path):
        self.root = root
        self.paths = manifest["image_path"].to_pylist()
        self.plain_rgb = manifest["plain_rgb"].to_pylist()
        present = _files_in(root, {posixpath.dirname(relative) for relative in self.paths})
        self.problems = {  # image_id -> why it cannot be read
            image_id: f"no file {root / relative}"
            for image_id, relative in zip(manifest["image_id"].to_pylist(), self.paths, strict=True)
            if relative not in present
        }

    def cell(self, manifest_row: int) -> dict:
        relative = self.paths[manifest_row]
        path = self.root / relative
        try:
            data = path.read_bytes() if self.plain_rgb[manifest_row] else _rgb_bytes(path)
            return {"bytes": data, "path": relative}
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise RefusedError(
                f"image {path} became unreadable during the build: {error}; restore it (or pass "
                "--image-root) and rebuild"
            ) from error


def judge_records(
    records: RecordStore,
    image_sha256: dict[str, str],
    image_problems: dict[str, str],
    generation_rejects: list[dict],
    reject_forced: bool = False,
) -> tuple[dict[tuple[str, str], int], list[RejectedRecord]]:
    """The quality verdict of every record (``generation.verdicts.quality.record_verdict``: as generation
    judged it under the current rules, else judged now; ``reject_forced``: forced answers are rejected
    too): (image_id, annotator) -> row of each good record, and the rejected ones with their reason.
    A record whose image hash is not the manifest's is refused."""
    good: dict[tuple[str, str], int] = {}
    rejected: list[RejectedRecord] = []
    row = 0
    judge = functools.partial(_judge_batch, reject_forced=reject_forced)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # zlib (when judging) frees the GIL
        for keys, hashes, quality in pool.map(judge, records.table.to_batches()):
            for (image_id, annotator), found, verdict in zip(keys, hashes, quality, strict=True):
                reason, detail = verdict or (None, "")
                expected = image_sha256.get(image_id)
                if expected is not None and found != expected:
                    folder, path = records.origin(row)
                    raise RefusedError(
                        f"{folder} holds text generated for another picture than the manifest's: record "
                        f"{image_id} in {path.name} was made from an image with sha256 {found[:12]}..., the "
                        f"manifest has {expected[:12]}... for it. Build with the manifest the run was "
                        "generated from, or regenerate the run from this manifest."
                    )
                key = (image_id, annotator)
                if reason is None and key in good:
                    reason, detail = "duplicate_record", REJECT_REASONS["duplicate_record"]
                if reason is None and expected is None:
                    reason, detail = "image_not_in_manifest", REJECT_REASONS["image_not_in_manifest"]
                if reason is None and image_id in image_problems:
                    reason, detail = "unreadable_image", image_problems[image_id]
                if reason is None:
                    good[key] = row
                else:
                    rejected.append(RejectedRecord(image_id, annotator, reason, detail, row))
                row += 1
    for reject in generation_rejects:
        rejected.append(
            RejectedRecord(reject["image_id"], reject["annotator"], reject["reason"], reject["detail"], None)
        )
    return good, rejected


class Sources:
    """The inputs of a release, checked and indexed once: the run folders (verified), their
    records (:class:`RecordStore`), the manifest and its images (:class:`ImageFiles`), each
    record's quality verdict (:func:`judge_records`) and each image's split (:func:`assign_splits`).

    Checking refuses, before anything is written, a ``record_dirs`` entry that holds no
    generation run, a committed chunk whose files were replaced or damaged since, a run made
    from another manifest (unless ``allow_other_manifest``), and any record whose image hash
    differs from the manifest's: that text was generated for another picture.
    """

    def __init__(self, config: ImageNetThinkConfig):
        self.config = config
        self._index(config)
        self.verdicts = LabelVerdicts(
            self.records, self.good, dict(zip(self.image_ids, self.wnids, strict=True))
        )

    def _index(self, config: ImageNetThinkConfig) -> None:
        if config.forced_answers not in FORCED_ANSWERS:
            raise UsageError(
                f"forced_answers {config.forced_answers!r} is not one of {', '.join(FORCED_ANSWERS)}: keep "
                "records whose answer was forced in the configs, or reject them"
            )
        manifest_path, run_dirs = _resolve_inputs(config)
        manifest, root = read_manifest(manifest_path)
        self.manifest_path = manifest_path
        self.manifest_sha256 = manifest_fingerprint(manifest)
        self.runs = _checked_runs(run_dirs, manifest_path, self.manifest_sha256, config.allow_other_manifest)
        self.annotators = tuple(dict.fromkeys(run.run["config"]["annotator"] for run in self.runs.values()))
        self.classes = imagenet21k_classes()
        self.records = RecordStore(
            [(folder, path) for folder, run in self.runs.items() for path in run.record_files]
        )
        self.images = ImageFiles(manifest, Path(config.image_root) if config.image_root else root)
        self.image_ids = manifest["image_id"].to_pylist()
        self.wnids = manifest["wnid"].to_pylist()
        self.manifest_row = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.splits = assign_splits(
            zip(self.image_ids, self.wnids, strict=True),
            validation=config.validation_fraction,
            test=config.test_fraction,
            seed=config.split_seed,
        )
        generation_rejects = [
            row for run in self.runs.values() for row in _read_rows(run.reject_files, REJECT_SCHEMA.names)
        ]
        image_sha256 = dict(zip(self.image_ids, manifest["sha256"].to_pylist(), strict=True))
        self.good, self.rejected = judge_records(
            self.records,
            image_sha256,
            self.images.problems,
            generation_rejects,
            reject_forced=config.forced_answers == "reject",
        )

    def image_batches(self, split: str, size: int) -> Iterator[list[int]]:
        """Manifest rows of the images in ``split``, in manifest order, ``size`` at a time."""
        rows = [row for row, image_id in enumerate(self.image_ids) if self.splits[image_id] == split]
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    def provenance(self) -> dict:
        """What the release is built from: the manifest's and every run's fingerprints, and gaps."""
        return {
            "manifest": {"path": str(self.manifest_path), "sha256": self.manifest_sha256},
            "allow_other_manifest": self.config.allow_other_manifest,
            "forced_answers": self.config.forced_answers,
            "runs": [
                {
                    "path": str(folder),
                    "annotator": run.run["config"]["annotator"],
                    "model_id": run.run["config"]["model"],
                    "model_revision": run.run["config"].get("revision") or "",
                    "config_sha256": _json_sha256(run.run["config"]),
                    "manifest_sha256": run.run.get("manifest_sha256", ""),
                    "images_expected": run.images_expected,
                    "images_done": run.images_done,
                    "images_missing": run.images_expected - run.images_done,
                }
                for folder, run in self.runs.items()
            ],
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


def _judge_batch(
    batch: pa.RecordBatch, reject_forced: bool = False
) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str] | None]]:
    """(image_id, annotator), the image hash and the quality verdict (reason, detail) of each record
    of a batch (:func:`generation.verdicts.policy.current_quality_verdicts`)."""
    columns = batch.select(["image_id", "annotator", "image_sha256"]).to_pydict()
    keys = list(zip(columns["image_id"], columns["annotator"], strict=True))
    return keys, columns["image_sha256"], current_quality_verdicts(batch, reject_forced)


def _json_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def find_runs(paths: tuple[Path, ...]) -> list[Path]:
    """The generation run folders named by ``paths``: each is a run folder (it holds ``run.json``)
    or a folder of run folders. A path that does not exist or holds no run is an error."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            siblings = [p.name for p in path.parent.iterdir() if p.is_dir()] if path.parent.is_dir() else []
            close = difflib.get_close_matches(path.name, siblings, n=1)
            hint = f" (did you mean {path.parent / close[0]}?)" if close else ""
            raise MissingInputError(f"run folder {path} does not exist{hint}")
        found = [path] if (path / RUN_FILE).is_file() else sorted(p.parent for p in path.rglob(RUN_FILE))
        if not found:
            raise MissingInputError(
                f"{path} holds no generation run (no {RUN_FILE}): pass the --out folders of "
                "`imagenet-think generate`"
            )
        runs.extend(p for p in found if p not in runs)
    return runs


def _checked_runs(
    run_dirs: list[Path], manifest: Path, manifest_sha256: str, allow_other_manifest: bool
) -> dict[Path, RunCheck]:
    """Each run folder checked: its committed chunks verify, and it was made from ``manifest``."""
    runs = {}
    for folder in run_dirs:
        run = check_run(folder)
        # A records file without a commit (run.uncommitted) is a chunk not done (in flight, or killed
        # before its commit): not part of the run, and its images count as missing. A committed file
        # that fails its commit is refused.
        if run.bad:
            path, problem = next(iter(run.bad.items()))
            raise RefusedError(
                f"{path} fails its commit check ({problem}); {len(run.bad)} file(s) of {folder} do. "
                f"Rerun `imagenet-think generate` on {folder} with the same arguments: it redoes those chunks"
            )
        if run.run.get("manifest_sha256") != manifest_sha256 and not allow_other_manifest:
            raise RefusedError(
                f"{folder} was generated from another manifest ({run.run.get('manifest', '?')}, "
                f"fingerprint {str(run.run.get('manifest_sha256'))[:12]}...) than {manifest} "
                f"({manifest_sha256[:12]}...). Build with the manifest the runs were made from; to combine "
                "runs of different manifests on purpose, pass --allow-other-manifest (each record's image "
                "hash is still checked, and the card records it)"
            )
        runs[folder] = run
    return runs


def _read_rows(paths: list[Path], columns: list[str]) -> Iterator[dict]:
    for path in paths:
        try:
            yield from pq.read_table(path, columns=columns).to_pylist()
        except (pa.ArrowException, OSError) as error:
            raise InputError(
                f"{path} cannot be read ({error}); rerun `imagenet-think generate` on its folder"
            ) from error


def _resolve_inputs(config: ImageNetThinkConfig) -> tuple[Path, list[Path]]:
    data_dir = Path(config.data_dir) if config.data_dir else None
    manifest = Path(config.manifest) if config.manifest else (data_dir / MANIFEST_FILE if data_dir else None)
    record_dirs = tuple(Path(d) for d in config.record_dirs) or ((data_dir,) if data_dir else ())
    if manifest is None or not record_dirs:
        raise UsageError(
            "ImageNetThink needs data_dir= (manifest.parquet + run folders) or manifest= and record_dirs="
        )
    if not manifest.is_file():
        raise MissingInputError(
            f"image manifest not found: {manifest} (write it with `imagenet-think sample`)"
        )
    return manifest, find_runs(record_dirs)


def _memory_mapped_records(
    record_files: list[tuple[Path, Path]], arrow_path: Path
) -> tuple[pa.Table, list[tuple[int, Path, Path]]]:
    """All record shards, in order, as one memory-mapped Arrow table (bounded memory, random access
    by row), and where each file's rows start: (first row, run folder, file)."""
    origin, row = [], 0
    with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_file(sink, RECORD_SCHEMA) as writer:
        for folder, path in record_files:
            origin.append((row, folder, path))
            try:
                names = pq.read_schema(path).names
                # One chunk's file at a time (decoded in Arrow's threads); records written before
                # columns were added get their value (complete_record_columns).
                table = pq.read_table(path, columns=[name for name in RECORD_SCHEMA.names if name in names])
                for piece in complete_record_columns(table).to_batches(max_chunksize=1000):
                    writer.write_batch(pa.RecordBatch.from_arrays(piece.columns, schema=RECORD_SCHEMA))
                row += table.num_rows
            except (pa.ArrowException, OSError, ValueError) as error:
                raise InputError(
                    f"records file {path} cannot be read ({error}); rerun `imagenet-think generate` on "
                    f"{folder} to redo its chunk"
                ) from error
    return pa.ipc.open_file(pa.memory_map(str(arrow_path))).read_all(), origin


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
            name=JOINT_CONFIG, kind="joint", description="both annotators' think and answer per image"
        ),
        ImageNetThinkConfig(
            name=VERIFIED_CONFIG,
            kind="verified",
            description="one row per trace whose answer names the image's class or a kind of it",
        ),
        ImageNetThinkConfig(
            name=REJECTED_CONFIG, kind="rejected", description="records kept out, with their reason"
        ),
    ]
    DEFAULT_CONFIG_NAME = JOINT_CONFIG

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
            citation=CITATION,
        )

    @cached_property
    def sources(self) -> Sources:
        return Sources(self.config)

    def _split_generators(self, dl_manager):
        names = ("train",) if self.config.kind == "rejected" else SPLITS
        return [datasets.SplitGenerator(name=name, gen_kwargs={"split": name}) for name in names]

    def _generate_tables(self, split: str) -> Iterator[tuple[str, pa.Table]]:
        if self.config.kind == "rejected":
            for index, table in enumerate(rejected_tables(self.config, self.sources)):
                yield f"{split}-{index}", table
            return
        for index, rows in enumerate(self.sources.image_batches(split, self.config.rows_per_batch)):
            table = rows_table(self.config, self.sources, rows, self.sources.images.cell)
            if table is not None:
                yield f"{split}-{index}", table


# The rows of a config, as Arrow tables: the builder and `imagenet-think build` both write these.
def rows_table(
    config: ImageNetThinkConfig, sources: Sources, rows: list[int], image_cell: Callable[[int], dict]
) -> pa.Table | None:
    """``config``'s rows for the images at manifest ``rows`` (None when it has none of them).

    ``image_cell`` reads an image's cell: the release build passes one cached per batch, so
    that every config reads each image once.
    """
    if config.kind == "verified":
        return _verified_table(config, sources, rows, image_cell)
    ids, good = sources.image_ids, sources.good
    kept, records = [], []
    for row in rows:
        found = [good.get((ids[row], annotator)) for annotator in config.annotators]
        if None not in found:
            kept.append(row)
            records.append(found)
    if not kept:
        return None
    columns = _image_columns(sources, kept, [image_cell(row) for row in kept])
    for position, (annotator, record_rows) in enumerate(
        zip(config.annotators, zip(*records, strict=True), strict=True)
    ):
        fields = RECORD_COLUMNS if config.kind == "single" else JOINT_RECORD_FIELDS
        taken = sources.records.take(list(record_rows), ["question", *fields])
        if position == 0:
            columns["question"] = taken["question"]
        verdicts = _verdict_columns(sources, list(record_rows))
        if config.kind == "single":
            columns.update({name: taken[name] for name in RECORD_COLUMNS})
            columns.update(verdicts)
        else:
            columns.update({joint_column(annotator, f): taken[f] for f in JOINT_RECORD_FIELDS})
            columns.update({joint_column(annotator, f): values for f, values in verdicts.items()})
    return pa.table(columns)


def _verdict_columns(sources: Sources, record_rows: list[int]) -> dict[str, pa.Array]:
    kinds, scores = sources.verdicts.of(record_rows)
    return {
        "label_verdict": pa.array([KINDS[k] for k in kinds], pa.string()),
        "label_score": pa.array(scores, pa.float32()),
    }


def _verified_table(
    config: ImageNetThinkConfig, sources: Sources, rows: list[int], image_cell: Callable[[int], dict]
) -> pa.Table | None:
    """A row per (image, annotator) whose good record's answer is verified (``exact``/``hyponym``)."""
    candidates = [
        (row, record)
        for row in rows
        for annotator in config.annotators
        if (record := sources.good.get((sources.image_ids[row], annotator))) is not None
    ]
    kinds, _ = sources.verdicts.of([record for _, record in candidates])
    correct = {KINDS.index(kind) for kind in CORRECT_KINDS}
    verified = [pair for pair, kind in zip(candidates, kinds, strict=True) if kind in correct]
    if not verified:
        return None
    kept, record_rows = (list(column) for column in zip(*verified, strict=True))
    columns = _image_columns(sources, kept, [image_cell(row) for row in kept])
    taken = sources.records.take(record_rows, ["question", *RECORD_COLUMNS])
    columns["question"] = taken["question"]
    columns.update({name: taken[name] for name in RECORD_COLUMNS})
    columns.update(_verdict_columns(sources, record_rows))
    return pa.table(columns)


def rejected_tables(config: ImageNetThinkConfig, sources: Sources) -> Iterator[pa.Table]:
    """The ``rejected`` rows of ``config``'s annotators, ``config.rows_per_batch`` at a time."""
    wanted, rejects = set(config.annotators), []
    for reject in sources.rejected:
        if reject.annotator in wanted:
            row = sources.manifest_row.get(reject.image_id)
            usable = row is not None and reject.image_id not in sources.images.problems
            rejects.append((row, usable, reject))
    for start in range(0, len(rejects), config.rows_per_batch):
        yield _rejected_table(sources, rejects[start : start + config.rows_per_batch])


def _image_columns(sources: Sources, rows: list[int | None], cells: list[dict | None]) -> dict[str, pa.Array]:
    """Image and class columns; ``None`` rows (records of images outside the manifest) get empty cells."""
    classes = sources.classes
    wnids = [sources.wnids[r] if r is not None else "" for r in rows]
    return {
        "image": pa.array(cells, type=IMAGE_STRUCT),
        "image_id": pa.array([sources.image_ids[r] if r is not None else "" for r in rows], pa.string()),
        "wnid": pa.array(wnids, pa.string()),
        "label": pa.array([classes.index(w) if w in classes else -1 for w in wnids], pa.int64()),
        "class_name": pa.array([classes.name(w) if w in classes else w for w in wnids], pa.string()),
    }


def _rejected_table(sources: Sources, batch) -> pa.Table:
    rows, usable, rejects = zip(*batch, strict=True)
    cells = [sources.images.cell(row) if ok else None for row, ok in zip(rows, usable, strict=True)]
    record_rows = [r.record_row for r in rejects]
    known = [r for r in record_rows if r is not None]
    found = sources.records.take(known).to_pylist() if known else []
    by_row = dict(zip(known, found, strict=True))
    fields = list(RECORD_COLUMNS) + ["question", "output"]
    values: dict[str, list] = defaultdict(list)
    for reject in rejects:
        record = by_row.get(reject.record_row, {})
        for name in fields:
            values[name].append(record.get(name, _EMPTY[RECORD_SCHEMA.field(name).type]))
        values["annotator"][-1] = reject.annotator
        values["split"].append(sources.splits.get(reject.image_id, ""))
        values["reject_reason"].append(reject.reason)
        values["reject_detail"].append(reject.detail)
    columns = _image_columns(sources, list(rows), list(cells))
    columns["image_id"] = pa.array([r.image_id for r in rejects], pa.string())
    columns.update(values)
    return pa.table(columns)
