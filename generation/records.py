"""The record schema: the contract between generation, the dataset builder, training and eval.

Three kinds of row, each a pyarrow schema and a dataclass: :class:`ManifestEntry` (one sampled
image), :class:`GenerationRecord` (one image × annotator model) and :class:`Reject` (an image or a
generation kept out, with its reason). A record names the picture its text was generated for:
``image_sha256`` is the manifest's ``sha256`` of the image file and ``manifest_sha256`` the
:func:`manifest_fingerprint` of the whole manifest. Every file is written atomically
(:func:`write_parquet_atomic`, :func:`write_bytes_atomic`) with the usual permissions
(``0o666 & ~umask``); what a run folder holds is :mod:`generation.runs`'.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from generation.verdicts.quality import REJECT_REASONS
from imagenet_think_errors import InputError, MissingInputError

RECORD_GLOB = "records-*.parquet"
REJECT_GLOB = "rejects-*.parquet"
STALE_TEMPORARY_SECONDS = 24 * 3600
MANIFEST_ROOT_KEY = b"imagenet_think.image_root"


@dataclass(frozen=True)
class ManifestEntry:
    image_id: str  # file stem, e.g. n01530575_10086
    wnid: str
    image_path: str  # relative to the image root, with forward slashes
    width: int
    height: int
    sha256: str  # of the file's bytes
    plain_rgb: bool  # an RGB JPEG/PNG/WebP without EXIF rotation (generation.images.is_plain_rgb)
    # 16 hex characters (generation.near_duplicates.phash of the upright picture); "" where not computed
    # (manifests written before it, or by hand): the stages that need it hash the image file then.
    phash: str = ""


@dataclass(frozen=True)
class GenerationRecord:
    image_id: str
    wnid: str
    image_path: str
    image_sha256: str  # the manifest's sha256 of the image file the text was generated for
    manifest_sha256: str  # manifest_fingerprint() of the manifest the run was made from
    annotator: str  # dataset config name: glm, kimi, ...
    model_id: str  # hub id or local path
    model_revision: str
    parse_style: str  # a style of generation.reasoning.STYLES
    question: str
    output: str  # raw generated text
    think: str
    answer: str
    think_closed: bool
    finish_reason: str  # the (first) generation's: stop / length / abort
    num_prompt_tokens: int
    num_output_tokens: int  # tokens generated, both passes together where an answer was forced
    sampling: str  # the sampling parameters, as JSON
    created_at: str  # ISO 8601, UTC
    # Answer forcing (VLMConfig.on_truncation = force_answer, generation.annotator): a generation that
    # hit its token limit with the think open was continued after the style's closing delimiter
    # (reasoning.ThinkFormat.force), which ``output`` holds between the two passes' texts.
    forced_answer: bool = False
    num_first_pass_tokens: int | None = None  # default: num_output_tokens - num_second_pass_tokens
    num_second_pass_tokens: int = 0  # 0 without a second pass
    # "" without a second pass; else its finish reason (stop / length / abort), or why there was none
    # though the think was open: context_full (no room left in max_model_len), engine_error.
    second_pass_finish_reason: str = ""
    # Verdicts judged when the record's chunk was committed (:func:`generation.verdicts.policy.with_verdicts`), each with the
    # fingerprint of the rules that judged it ("" where none did). The release takes a verdict as it
    # is only under the current fingerprint and judges the others itself:
    # - quality (``generation.verdicts.quality.record_verdict``, without ``reject_forced``): the reject reason
    #   and its detail, "" for a good record;
    quality_reason: str = ""
    quality_detail: str = ""
    quality_checker: str = ""
    # - the answer's label verdict against ``wnid`` (``generation.verdicts.labels``): kind and score; the
    #   release also requires ``wnid`` to be the manifest's class of the image.
    label_verdict: str = ""
    label_score: float = 0.0
    label_verifier: str = ""

    def __post_init__(self):
        if self.num_first_pass_tokens is None:
            first = self.num_output_tokens - self.num_second_pass_tokens
            object.__setattr__(self, "num_first_pass_tokens", first)


@dataclass(frozen=True)
class Reject:
    image_id: str
    image_path: str
    stage: str  # sample / generate / build
    annotator: str  # empty where no model was involved
    reason: str  # a code of generation.verdicts.quality.REJECT_REASONS, e.g. too_small, truncated, prompt_too_long
    detail: str  # a human-readable explanation

    def __post_init__(self):
        if self.reason not in REJECT_REASONS:
            raise ValueError(
                f"reject reason {self.reason!r} is not one of generation.verdicts.quality.REJECT_REASONS: add it there"
            )


# The one schema of each kind of row is its dataclass: each field's Python type gives its Arrow type
# (and through it the release's ``datasets`` features, release.schema), each default the value of
# a column records gained after runs were written without it.
ARROW_TYPES = {
    "str": pa.string(),
    "bool": pa.bool_(),
    "int": pa.int32(),
    "int | None": pa.int32(),
    "float": pa.float32(),
}


def _schema(cls) -> pa.Schema:
    return pa.schema([pa.field(f.name, ARROW_TYPES[f.type], nullable=False) for f in fields(cls)])


MANIFEST_SCHEMA = _schema(ManifestEntry)
RECORD_SCHEMA = _schema(GenerationRecord)
REJECT_SCHEMA = _schema(Reject)
# Columns records gained after runs were written without them, with the value such a record has
# (quality_checker "": not judged, the release judges these records itself).
RECORD_COLUMN_DEFAULTS = {
    f.name: f.default for f in fields(GenerationRecord) if f.default is not MISSING and f.default is not None
}


def complete_record_columns(table: pa.Table) -> pa.Table:
    """Records read from a run, with every :data:`RECORD_SCHEMA` column in its order: a column the
    records gained after the run was written gets the value such a record has
    (:data:`RECORD_COLUMN_DEFAULTS`; ``num_first_pass_tokens`` is ``num_output_tokens``)."""
    missing = [name for name in RECORD_SCHEMA.names if name not in table.column_names]
    for name in missing:
        field = RECORD_SCHEMA.field(name)
        if name == "num_first_pass_tokens":
            column = table["num_output_tokens"].cast(field.type)
        else:
            column = pa.array([RECORD_COLUMN_DEFAULTS[name]] * table.num_rows, field.type)
        table = table.append_column(field, column)
    return table.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA) if missing else table


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sampling_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def to_table(rows: Iterable, schema: pa.Schema) -> pa.Table:
    """A table of dataclass rows (or dicts) in ``schema``'s column order."""
    dicts = [row if isinstance(row, dict) else asdict(row) for row in rows]
    return pa.Table.from_pylist(dicts, schema=schema)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file.

    The file is written under a temporary name in the same folder, flushed to
    disk, then renamed; a run killed mid-way leaves only a ``.tmp-*`` file that
    readers ignore and :func:`remove_temporary_files` removes.
    """
    path = Path(path)
    fd, tmp = open_temporary(path.parent, suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of a Parquet file (zstd), as :func:`write_parquet_atomic` writes it."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename), like :func:`write_parquet_atomic`."""
    path = Path(path)
    fd, tmp = open_temporary(path.parent, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def open_temporary(folder: str | os.PathLike, suffix: str = "") -> tuple[int, Path]:
    """Create a new temporary file in ``folder`` for writing, named by :func:`temporary_prefix`.

    Unlike ``tempfile.mkstemp`` (mode 0600) it gets the usual permissions, ``0o666 & ~umask``
    (the kernel applies the umask), so that the file it is renamed to is readable like any other.
    """
    folder = Path(folder)
    while True:
        tmp = folder / f"{temporary_prefix()}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def temporary_prefix() -> str:
    """``.tmp-<pid>@<host>@``: temporary files name their writer, so that workers sharing a
    folder remove only torn ones."""
    return f".tmp-{os.getpid()}@{socket.gethostname()}@"


def remove_temporary_files(folder: str | os.PathLike) -> int:
    """Remove the torn temporary files in ``folder``: those of this host's processes that are
    gone, and any older than a day (a live writer renames its file within seconds)."""
    removed, host = 0, socket.gethostname()
    for tmp in Path(folder).glob(".tmp-*"):
        pid, _, rest = tmp.name.removeprefix(".tmp-").partition("@")
        writer_gone = pid.isdigit() and rest.startswith(f"{host}@") and not process_alive(int(pid))
        try:
            stale = time.time() - tmp.stat().st_mtime > STALE_TEMPORARY_SECONDS
        except FileNotFoundError:  # its writer renamed it meanwhile
            continue
        if writer_gone or stale:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def iter_rows(paths: Iterable[str | os.PathLike], columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of Parquet files as dicts, one row group at a time (bounded memory)."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group, columns=columns).to_pylist()


def write_manifest(
    entries: Iterable[ManifestEntry], path: str | os.PathLike, image_root: str | os.PathLike
) -> Path:
    table = to_table(entries, MANIFEST_SCHEMA)
    metadata = {MANIFEST_ROOT_KEY: str(Path(image_root).resolve()).encode()}
    return write_parquet_atomic(table.replace_schema_metadata(metadata), path)


def read_manifest(path: str | os.PathLike) -> tuple[pa.Table, Path]:
    """The manifest table and the image root its ``image_path`` values are relative to."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"manifest {path} not found"
            + (" (it is a folder)" if path.is_dir() else "")
            + "; write one with `imagenet-think sample --source TREE --out manifest.parquet`"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(
            f"manifest {path} is not a readable Parquet file ({error}); "
            "rewrite it with `imagenet-think sample`"
        ) from error
    if "phash" not in table.column_names:  # a manifest written before the column: no hash known
        table = table.append_column(
            MANIFEST_SCHEMA.field("phash"), pa.array([""] * table.num_rows, pa.string())
        )
    missing = set(MANIFEST_SCHEMA.names) - set(table.column_names)
    if missing:
        raise InputError(
            f"{path} is not an image manifest: columns {sorted(missing)} are missing; "
            "write manifests with `imagenet-think sample` (generation.records.write_manifest)"
        )
    root = (table.schema.metadata or {}).get(MANIFEST_ROOT_KEY)
    if root is None:
        raise InputError(
            f"{path} does not name its image root; write it with generation.records.write_manifest"
        )
    return table.select(MANIFEST_SCHEMA.names), Path(root.decode())


def manifest_fingerprint(table: pa.Table) -> str:
    """The sha256 naming a manifest's content: every row's ``image_id``, ``wnid``, ``image_path`` and
    ``sha256``, in manifest order (the order chunks are cut in).

    Two manifests with the same image ids but other pictures (or another order) differ; the width,
    height, ``plain_rgb`` and ``phash`` columns follow from the pictures and are left out. A run's records
    carry it as ``manifest_sha256`` (whatever its ``--limit``), so a release can tell which
    manifest each record came from. Each row is hashed as one JSON line
    ``["image_id", "wnid", "image_path", "sha256"]\\n``.
    """
    digest = hashlib.sha256()
    columns = [table[name].to_pylist() for name in ("image_id", "wnid", "image_path", "sha256")]
    for row in zip(*columns, strict=True):
        digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
