"""An object kept in a second Python process and fed Arrow tables, so that its work overlaps the caller's.

The release build writes Parquet on one core; the trace report (:mod:`release.think_words`) is numpy
work of its own that would otherwise take turns with it. :class:`Background` starts ``python -c``
(not ``multiprocessing``, which would import the caller's ``__main__`` again) on the same checkout,
builds the object there and forwards calls over a socket: :meth:`Background.call` returns at once,
:meth:`Background.ask` waits for the answer. A table among the arguments travels as an Arrow IPC file
in a folder of shared memory (``/dev/shm`` where there is one), written in one go and mapped by the
second process, which deletes it once read (and the folder when the caller is gone, even killed).
At most :data:`BACKLOG_BYTES` of tables wait there: past that a call waits, so that memory stays
bounded when the second process is the slower. A failure in the second process is raised, with its
traceback, by the next :meth:`Background.ask`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
import weakref
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path

import pyarrow as pa

BACKLOG_BYTES = 64 << 20
_SHARED_MEMORY = Path("/dev/shm")
_BOOT = "import sys; from release.background import serve; serve(int(sys.argv[1]), sys.argv[2])"
_ROOT = Path(__file__).resolve().parent.parent  # the checkout the second process imports from
_DONE = "done"  # the second process ran a call
# glibc's malloc keeps what the second process frees instead of unmapping it: numpy's temporaries of
# a table (megabytes each) would otherwise be mapped and faulted in anew every time (a sixth of its CPU).
_KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 28), "MALLOC_TRIM_THRESHOLD_": str(1 << 28)}


class BackgroundError(RuntimeError):
    """The object in the second process failed (the message holds its traceback) or the process ended."""


class _Table:
    """A table among a call's arguments: the Arrow IPC file that holds it."""

    def __init__(self, path: str) -> None:
        self.path = path


class Background:
    """``factory(*args)`` in a second process; see the module docstring."""

    def __init__(self, factory, *args) -> None:
        shared = _SHARED_MEMORY if _SHARED_MEMORY.is_dir() and os.access(_SHARED_MEMORY, os.W_OK) else None
        self._folder = Path(tempfile.mkdtemp(prefix="imagenet-think-", dir=shared))
        here, there = socket.socketpair()
        path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(there.fileno()), str(self._folder)],
            pass_fds=[there.fileno()],
            env={**os.environ, "PYTHONPATH": path, **_KEEP_FREED_MEMORY},
            stdin=subprocess.DEVNULL,
        )
        there.close()
        self._connection = Connection(here.detach())
        self._finalizer = weakref.finalize(self, _stop, self._process, self._connection, self._folder)
        self._waiting: deque[int] = deque()  # the bytes of each call's tables not run yet
        self._files = 0
        self._send("call", factory, args)

    def call(self, method: str, *args) -> None:
        """``object.method(*args)`` in the second process, without waiting for it."""
        self._send("call", method, args)

    def ask(self, method: str, *args):
        """``object.method(*args)`` in the second process, once every earlier call has run: its result."""
        self._send("ask", method, args)
        while True:
            status, value = self._receive()
            if status != _DONE:
                break
        if status == "error":
            raise BackgroundError(value)
        return value

    def close(self) -> None:
        """End the second process and delete its folder (also when this object is collected)."""
        self._finalizer()

    def _send(self, kind: str, name, args: tuple) -> None:
        size = sum(arg.nbytes for arg in args if isinstance(arg, pa.Table))
        while self._connection.poll():  # the calls run since
            self._receive()
        while self._waiting and sum(self._waiting) + size > BACKLOG_BYTES:
            self._receive()
        args = tuple(self._staged(arg) if isinstance(arg, pa.Table) else arg for arg in args)
        try:
            self._connection.send((kind, name, args))
        except OSError as error:
            raise BackgroundError(f"the second process ended (exit status {self._process.poll()})") from error
        if kind == "call":
            self._waiting.append(size)

    def _staged(self, table: pa.Table) -> _Table:
        path = self._folder / f"{self._files:08d}.arrow"
        self._files += 1
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return _Table(str(path))

    def _receive(self) -> tuple[str, object]:
        try:
            status, value = self._connection.recv()
        except (EOFError, OSError) as error:
            raise BackgroundError(f"the second process ended (exit status {self._process.poll()})") from error
        if status == _DONE:
            self._waiting.popleft()
        return status, value


def _stop(process: subprocess.Popen, connection: Connection, folder: Path) -> None:
    connection.close()  # the second process reads the end and returns
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def serve(descriptor: int, folder: str) -> None:
    """The second process: run the calls that come until the caller closes the socket (or ends); the
    first one builds the object. The tables' ``folder`` goes with the caller."""
    with contextlib.suppress(EOFError, OSError):  # the caller closed the socket, or ended
        _serve(Connection(descriptor))
    shutil.rmtree(folder, ignore_errors=True)


def _serve(connection: Connection) -> None:
    target, failure = None, None
    while True:
        kind, name, args = connection.recv()
        args = tuple(_read(arg.path) if isinstance(arg, _Table) else arg for arg in args)
        try:
            if failure is None:
                if target is None:
                    target = name(*args)
                elif kind == "call":
                    getattr(target, name)(*args)
                else:
                    connection.send(("ok", getattr(target, name)(*args)))
                    continue
        except Exception:
            failure = traceback.format_exc()
        connection.send((_DONE, None) if kind == "call" else ("error", failure))


def _read(path: str) -> pa.Table:
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    os.unlink(path)  # the mapping stays readable
    return table
