"""Checking a run folder against its commit files: which chunks are done, which a resume redoes, the summary.

A chunk counts once its commit file (written by :func:`generation.runs.commit_chunk`) exists and its
records and rejects files match it; :func:`check_run` says so for every chunk of a folder, and the
release build and the scorer read only the chunks it verifies. The protocol is stated in
docs/generate.md, "The run protocol".
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from generation.records import file_sha256
from generation.runs import CHUNK_FILE, Chunk, chunk_files, image_ids_sha256, read_run_file

logger = logging.getLogger(__name__)

FORCED_FINISH_REASONS = ("stop", "length", "abort")  # second_pass_finish_reason of a forced answer


# ----------------------------------------------------------------------------------------------
# Checking chunks


@dataclass(frozen=True)
class RunCheck:
    """What :func:`check_run` found in a run folder."""

    run: dict  # run.json
    done: dict[int, dict]  # chunk index -> its commit, for the chunks whose files match it
    bad: dict[Path, str]  # records/rejects file of a committed chunk -> why it fails its commit
    uncommitted: dict[Path, str]  # records file without a commit -> why it is not counted
    record_files: list[Path]  # of the done chunks, in chunk order
    reject_files: list[Path]
    images_expected: int  # run.json's images
    images_done: int  # images of the done chunks

    @property
    def images_missing(self) -> int:
        return max(self.images_expected - self.images_done, 0)

    @property
    def not_counted(self) -> dict[Path, str]:
        """Every file of the folder that is not part of the run, with why: ``bad`` and ``uncommitted``."""
        return {**self.bad, **self.uncommitted}


def _file_problem(path: Path, entry: dict, verify: bool) -> str | None:
    """Why ``path`` does not match its commit ``entry`` (None when it does)."""
    if entry.get("file") != path.name:
        return f"its commit names {entry.get('file')!r}, not {path.name}"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"missing (committed with {entry.get('rows')} rows, {entry.get('bytes')} bytes)"
    if size != entry.get("bytes"):
        return f"size {size} != committed {entry.get('bytes')} (replaced or damaged)"
    if verify:
        digest = file_sha256(path)
        if digest != entry.get("sha256"):
            return (
                f"sha256 {digest[:12]}… != committed {str(entry.get('sha256'))[:12]}… (replaced or damaged)"
            )
    return None


def _read_commit(path: Path, index: int) -> dict:
    commit = json.loads(path.read_text())
    if not isinstance(commit, dict) or commit.get("chunk") != index:
        raise ValueError(f"it is not the commit of chunk {index}")
    for key in ("records", "rejects"):
        if not isinstance(commit.get(key), dict):
            raise ValueError(f"it has no {key} entry")
    if not isinstance(commit.get("images"), int):
        raise ValueError("it has no images count")
    return commit


def scan_chunks(
    run_dir: Path, verify: bool = True
) -> tuple[dict[int, dict], dict[Path, str], dict[Path, str]]:
    """(done, bad, uncommitted) of :func:`check_run`, without reading ``run.json``."""
    run_dir = Path(run_dir)
    done: dict[int, dict] = {}
    bad: dict[Path, str] = {}
    uncommitted: dict[Path, str] = {}
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return done, bad, uncommitted
    commits = sorted(
        int(m[2]) for name in names if (m := CHUNK_FILE.match(name)) and m[1] == "commit" and m[3] == "json"
    )
    for index in commits:
        records_path, rejects_path, commit_path = chunk_files(run_dir, index)
        try:
            commit = _read_commit(commit_path, index)
        except FileNotFoundError:  # removed meanwhile (a resume redoing it)
            continue
        except (ValueError, UnicodeDecodeError) as error:
            bad[records_path] = f"its commit file {commit_path.name} is unreadable ({error})"
            continue
        problems = {
            path: problem
            for key, path in (("records", records_path), ("rejects", rejects_path))
            if (problem := _file_problem(path, commit[key], verify))
        }
        if problems:
            bad.update(problems)
        else:
            done[index] = commit
    committed = set(commits)
    for name in names:
        m = CHUNK_FILE.match(name)
        if not (name.startswith("records-") and name.endswith(".parquet")) or (m and int(m[2]) in committed):
            continue
        uncommitted[run_dir / name] = (
            "no commit file (a chunk interrupted before its commit, or a file the run did not write)"
        )
    return done, bad, uncommitted


def check_run(run_dir: Path, verify: bool = True) -> RunCheck:
    """Check a run folder against its commit files.

    A chunk is done when its commit file exists and its records and rejects files have the
    committed size and (``verify``) sha256. Every records or rejects file that fails its commit
    is in ``bad``, and every records file without one in ``uncommitted``, with the reason. Raises
    :class:`MissingInputError` for a folder without ``run.json`` and :class:`InputError` for an
    unreadable ``run.json``.
    """
    run_dir = Path(run_dir)
    run = read_run_file(run_dir)
    done, bad, uncommitted = scan_chunks(run_dir, verify)
    indices = sorted(done)
    return RunCheck(
        run=run,
        done={index: done[index] for index in indices},
        bad=bad,
        uncommitted=uncommitted,
        record_files=[chunk_files(run_dir, index)[0] for index in indices],
        reject_files=[chunk_files(run_dir, index)[1] for index in indices],
        images_expected=int(run["images"]),
        images_done=sum(int(done[index]["images"]) for index in indices),
    )


def completed_chunks(run_dir: Path, verify: bool = False) -> set[int]:
    """Indices of the committed chunks whose files match their commit (size; sha256 with ``verify``)."""
    return set(scan_chunks(run_dir, verify)[0])


def prepare_resume(run_dir: Path, chunks: list[Chunk], state: RunCheck) -> list[Chunk]:
    """The chunks of ``chunks`` still to do, given ``state``; logs each chunk that is redone because
    a file failed its commit (or the commit is of other images), and removes that chunk's commit
    file so that the chunk reads as not done until it is committed again."""
    pending = []
    not_counted = state.not_counted
    for chunk in chunks:
        records_path, rejects_path, commit_path = chunk_files(run_dir, chunk.index)
        commit = state.done.get(chunk.index)
        if commit is not None and commit.get("image_ids_sha256") == image_ids_sha256(chunk.image_ids):
            continue
        if commit is not None:
            logger.warning(
                "chunk %d: %s is of other images than the plan's; redoing the chunk",
                chunk.index,
                commit_path.name,
            )
        for path in (records_path, rejects_path):
            if path in not_counted:
                logger.warning(
                    "chunk %d: %s: %s; redoing the chunk", chunk.index, path.name, not_counted[path]
                )
        commit_path.unlink(missing_ok=True)
        pending.append(chunk)
    return pending


# ----------------------------------------------------------------------------------------------
# The summary


@dataclass
class RunSummary:
    images: int
    records: int
    rejects: int
    truncated: int
    unclosed: int
    seconds: float
    session_images: int
    session_output_tokens: int
    rejects_by_reason: dict[str, int]
    images_missing: int = 0  # images of the run that no done chunk covers
    bad_files: dict[str, str] = field(default_factory=dict)  # file name -> why it is not counted
    forced: int = 0  # records whose answer was forced (on_truncation: force_answer)
    forced_cut: int = 0  # of those, second passes that hit force_answer_max_tokens too
    not_forced: dict[str, int] = field(default_factory=dict)  # open thinks no second pass followed: why

    def lines(self) -> list[str]:
        rate = lambda n: f"{n / self.records:.1%}" if self.records else "n/a"  # noqa: E731
        lines = [
            f"done: {self.records:,} records, {self.rejects:,} rejects, of {self.images:,} images",
            f"truncated (finish_reason=length): {self.truncated:,} ({rate(self.truncated)}); "
            f"think not closed: {self.unclosed:,} ({rate(self.unclosed)})",
        ]
        if self.forced or self.not_forced:
            lines.append(
                f"answers forced (on_truncation: force_answer): {self.forced:,} ({rate(self.forced)}), "
                f"{self.forced_cut:,} of them cut at force_answer_max_tokens"
                + "".join(f"; not forced, {why}: {n:,}" for why, n in sorted(self.not_forced.items()))
            )
        lines += [
            "rejects: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.rejects_by_reason.items())) or "none"),
        ]
        if self.images_missing:
            lines.append(
                f"missing: {self.images_missing:,} of {self.images:,} images are in no committed chunk "
                "(other workers' chunks still running, or rerun the same command to finish them)"
            )
        if self.bad_files:
            shown = "; ".join(f"{name}: {why}" for name, why in sorted(self.bad_files.items())[:5])
            more = f" (and {len(self.bad_files) - 5} more)" if len(self.bad_files) > 5 else ""
            lines.append(f"not counted, failing their commit: {shown}{more}")
        lines.append(
            f"this session: {self.session_images:,} images in {self.seconds:,.1f} s "
            f"({self.session_images / max(self.seconds, 1e-9):,.2f} images/s, "
            f"{self.session_output_tokens / max(self.seconds, 1e-9):,.1f} output tokens/s)"
        )
        return lines


def summarize(
    run_dir: Path, seconds: float = 0.0, session_images: int = 0, session_tokens: int = 0
) -> RunSummary:
    """The summary of a run folder's verified chunks (:func:`check_run`)."""
    state = check_run(run_dir)
    finish, closed, reasons, second = Counter(), Counter(), Counter(), Counter()
    for path in state.record_files:
        columns = ["finish_reason", "think_closed", "second_pass_finish_reason"]
        present = set(pq.read_schema(path).names)  # runs written before answer forcing lack the last
        table = pq.read_table(path, columns=[c for c in columns if c in present])
        finish.update(table["finish_reason"].to_pylist())
        closed.update(table["think_closed"].to_pylist())
        if "second_pass_finish_reason" in present:
            second.update(table["second_pass_finish_reason"].to_pylist())
    for path in state.reject_files:
        reasons.update(pq.read_table(path, columns=["reason"])["reason"].to_pylist())
    return RunSummary(
        images=state.images_expected,
        records=sum(finish.values()),
        rejects=sum(reasons.values()),
        truncated=finish["length"],
        unclosed=closed[False],
        seconds=seconds,
        session_images=session_images,
        session_output_tokens=session_tokens,
        rejects_by_reason=dict(reasons),
        images_missing=state.images_missing,
        bad_files={path.name: why for path, why in state.not_counted.items()},
        forced=sum(n for why, n in second.items() if why in FORCED_FINISH_REASONS),
        forced_cut=second["length"],
        not_forced={why: n for why, n in second.items() if why and why not in FORCED_FINISH_REASONS},
    )
