"""The release's row engine: generation runs + image manifest + images -> each config's rows.

:class:`Sources` finds and checks the inputs once (run discovery, :func:`find_runs`; the run
protocol's checks; the manifest), holds every committed record memory-mapped
(:class:`RecordStore`), the manifest's image files (:class:`ImageFiles`), each record's quality
and label verdicts (:mod:`generation.verdicts.policy`) and each image's split
(:mod:`release.splits`). :func:`rows_table` and :func:`rejected_tables` turn them into a config's
Arrow tables (:mod:`release.schema`): the ``datasets`` builder (``imagenet_think.py``) and
``imagenet-think build`` (:mod:`release.build`) both write these.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from common.classes import imagenet21k_classes
from generation.records import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    complete_record_columns,
    manifest_fingerprint,
)
from generation.row_checks import annotator_problem, read_checked_manifest
from generation.run_check import RunCheck, check_run
from generation.runs import RUN_FILE
from generation.verdicts.labels import CORRECT_KINDS, KINDS
from generation.verdicts.policy import LabelVerdicts, current_quality_verdicts
from generation.verdicts.quality import REJECT_REASONS
from imagenet_think_errors import (
    NO_ROOM,
    InputError,
    MissingInputError,
    RefusedError,
    UsageError,
    no_room_reported,
)
from release.leakage import apply_leakage_rules
from release.schema import (
    FORCED_ANSWERS,
    IMAGE_STRUCT,
    JOINT_RECORD_FIELDS,
    RECORD_COLUMNS,
    SINGLE,
    VERIFIED,
    ImageNetThinkConfig,
    joint_column,
)
from release.splits import assign_splits

MANIFEST_FILE = "manifest.parquet"

logger = logging.getLogger(__name__)


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
        manifest, root = read_checked_manifest(manifest_path)
        self.manifest_path = manifest_path
        self.manifest_sha256 = manifest_fingerprint(manifest)
        self.runs = _checked_runs(run_dirs, manifest_path, self.manifest_sha256, config.allow_other_manifest)
        for folder, run in self.runs.items():
            if problem := annotator_problem(run.run["config"].get("annotator")):
                raise InputError(
                    f"{folder / RUN_FILE}: {problem}; it was not written by `imagenet-think generate` as it "
                    "is: regenerate the run"
                )
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
        self.leakage = apply_leakage_rules(
            manifest,
            self.images.root,
            self.splits,
            config.near_duplicate_threshold,
            config.split_seed,
            config.reference,
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
        for key in [key for key in self.good if key[0] in self.leakage.overlaps]:
            detail = self.leakage.overlaps[key[0]]
            self.rejected.append(RejectedRecord(*key, "reference_overlap", detail, self.good.pop(key)))

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
                    "images_missing": run.images_missing,
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
        # One run, one identity: a folder named twice (relative and absolute, through a link) counts once.
        seen = {run.resolve() for run in runs}
        runs.extend(p for p in found if p.resolve() not in seen)
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
    return _one_folder_per_run(runs)


def _one_folder_per_run(runs: dict[Path, RunCheck]) -> dict[Path, RunCheck]:
    """``runs`` with one folder per run: folders holding the same run (the same ``run_id`` in
    ``run.json``: a copied folder) count once, the one with the most images done (the first given on
    a tie), with a warning naming which wins."""
    by_id: dict[str, list[Path]] = {}
    for folder, run in runs.items():
        by_id.setdefault(run.run.get("run_id") or str(folder), []).append(folder)
    kept = {}
    for run_id, folders in by_id.items():
        winner = max(folders, key=lambda folder: (runs[folder].images_done, -folders.index(folder)))
        for other in folders:
            if other != winner:
                logger.warning(
                    "%s and %s hold the same run (run_id %s in %s; a copied folder?): using %s (%d images "
                    "done), ignoring %s (%d)",
                    winner,
                    other,
                    run_id[:12],
                    RUN_FILE,
                    winner,
                    runs[winner].images_done,
                    other,
                    runs[other].images_done,
                )
        kept[winner] = runs[winner]
    return {folder: run for folder, run in runs.items() if folder in kept}


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
    cache = f"the build's record cache {arrow_path}"
    with (
        no_room_reported(cache, "free space there, or set TMPDIR to a folder with room, then build again"),
        pa.OSFile(str(arrow_path), "wb") as sink,
        pa.ipc.new_file(sink, RECORD_SCHEMA) as writer,
    ):
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
                if isinstance(error, OSError) and error.errno in NO_ROOM:  # writing the cache failed
                    raise
                raise InputError(
                    f"records file {path} cannot be read ({error}); rerun `imagenet-think generate` on "
                    f"{folder} to redo its chunk"
                ) from error
    return pa.ipc.open_file(pa.memory_map(str(arrow_path))).read_all(), origin


def rows_table(
    config: ImageNetThinkConfig, sources: Sources, rows: list[int], image_cell: Callable[[int], dict]
) -> pa.Table | None:
    """``config``'s rows for the images at manifest ``rows`` (None when it has none of them).

    ``image_cell`` reads an image's cell: the release build passes one cached per batch, so
    that every config reads each image once.
    """
    if config.kind == VERIFIED:
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
        fields = RECORD_COLUMNS if config.kind == SINGLE else JOINT_RECORD_FIELDS
        taken = sources.records.take(list(record_rows), ["question", *fields])
        if position == 0:
            columns["question"] = taken["question"]
        verdicts = _verdict_columns(sources, list(record_rows))
        if config.kind == SINGLE:
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
