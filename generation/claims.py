"""Chunk claims: which worker is annotating which chunk of a run folder, so that workers sharing
one ``--out`` (two ``generate`` processes, SLURM tasks without ``--num-shards``) split its chunks.

The claim rule (who takes a chunk, how long a claim lives, when it is taken over) is stated in
docs/generate.md, "The run protocol". Here: a claim file is created exclusively (``O_EXCL``) and
holds its worker's host, pid and a token; :data:`CLAIM_REFRESH_SECONDS` and
:data:`CLAIM_STALE_SECONDS` set its refresh and staleness. Claims only save work: where two workers
both do a chunk (a takeover race), the commit protocol (:mod:`generation.runs`) still leaves one
correct commit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from generation.records import process_alive, write_bytes_atomic
from generation.runs import chunk_files

logger = logging.getLogger(__name__)

CLAIM_STALE_SECONDS = 15 * 60  # a claim not refreshed for this long is stale, whoever holds it
CLAIM_REFRESH_SECONDS = 60  # how often a worker refreshes (touches) the claims it holds


def claim_file(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"claim-c{index:07d}.json"


class ChunkClaims:
    """The claims of this worker (process) on a run folder's chunks; a context manager that refreshes
    them while it is open and releases those still held when it closes."""

    def __init__(self, run_dir: Path, stale_after: float = CLAIM_STALE_SECONDS):
        self.run_dir, self.stale_after = Path(run_dir), stale_after
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._held: dict[int, str] = {}  # chunk -> token
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="refresh-claims", daemon=True)

    def __enter__(self) -> ChunkClaims:
        self._refresher.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._refresher.join()
        for index in list(self._held):
            self.release(index)

    def take(self, index: int) -> bool:
        """Claim chunk ``index``; False when another live worker holds it or has committed it since."""
        path = claim_file(self.run_dir, index)
        token = uuid.uuid4().hex
        body = json.dumps({"host": self.host, "pid": self.pid, "token": token}).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = self._stale_holder(path)
            if holder is None:
                return False
            logger.warning("chunk %d: taking over the stale claim of %s", index, holder)
            write_bytes_atomic(body, path)
            if self._token(path) != token:  # another worker took it over at the same moment
                return False
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
        with self._lock:
            self._held[index] = token
        if chunk_files(self.run_dir, index)[2].exists():  # committed by another worker since the plan
            self.release(index)
            return False
        return True

    def release(self, index: int) -> None:
        """Give up the claim on chunk ``index`` (after its commit), if it is still this worker's."""
        with self._lock:
            token = self._held.pop(index, None)
        path = claim_file(self.run_dir, index)
        if token is not None and self._token(path) == token:
            path.unlink(missing_ok=True)

    @staticmethod
    def _token(path: Path) -> str | None:
        try:
            return json.loads(path.read_bytes()).get("token")
        except (OSError, ValueError, AttributeError):
            return None

    def _stale_holder(self, path: Path) -> str | None:
        """Who held the claim at ``path`` when it is stale (None when it is not)."""
        try:
            age = time.time() - path.stat().st_mtime
            holder = json.loads(path.read_bytes())
            host, pid = str(holder["host"]), int(holder["pid"])
        except FileNotFoundError:  # released meanwhile: stale, nobody holds it
            return "a worker that has finished"
        except (OSError, ValueError, TypeError, KeyError):  # torn: its writer was killed while writing it
            return "an unreadable claim" if age > CLAIM_REFRESH_SECONDS else None
        if host == self.host and not process_alive(pid):
            return f"process {pid} on {host}, which is gone"
        if age > self.stale_after:
            return f"process {pid} on {host}, not refreshed for {age:,.0f} s"
        return None

    def _refresh(self) -> None:
        while not self._stop.wait(CLAIM_REFRESH_SECONDS):
            with self._lock:
                held = list(self._held)
            for index in held:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(claim_file(self.run_dir, index))
