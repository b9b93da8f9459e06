"""An object kept in a second Python process and fed Arrow tables, so that its work overlaps the caller's.

The release build writes Parquet on one core; the trace report (:mod:`release.think_words`) is numpy
work of its own that would otherwise take turns with it. :class:`Background` starts ``python -c``
(not ``multiprocessing``, which would import the caller's ``__main__`` again) on the same checkout,
builds the object there, and forwards calls: :meth:`Background.call` queues one and returns at once (a
thread sends it, tables as Arrow IPC streams over a socket), :meth:`Background.ask` waits for the
answer of one. At most :data:`BACKLOG_BYTES` of tables wait to be sent: past that the caller waits, so
that memory stays bounded when the second process is slower. A failure in the second process is
raised, with its traceback, by the next :meth:`Background.ask`.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import traceback
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import pyarrow as pa

BACKLOG_BYTES = 64 << 20
_BOOT = "import sys; from release.background import serve; serve(int(sys.argv[1]))"
_ROOT = Path(__file__).resolve().parent.parent  # the checkout the second process imports from


class BackgroundError(RuntimeError):
    """The object in the second process failed (the message holds its traceback) or the process ended."""


class _Table:
    """Where a table travels among a call's arguments: the n-th IPC stream after the call."""

    def __init__(self, index: int) -> None:
        self.index = index


class Background:
    """``factory(*args)`` in a second process; see the module docstring."""

    def __init__(self, factory, *args) -> None:
        here, there = socket.socketpair()
        path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(there.fileno())],
            pass_fds=[there.fileno()],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
        )
        there.close()
        self._channel = _Channel(Connection(here.detach()))
        threading.Thread(target=self._channel.send, name="background-sender", daemon=True).start()
        self._finalizer = weakref.finalize(self, _stop, self._process, self._channel)
        self._channel.put(("new", factory, args), 0)

    def call(self, method: str, *args) -> None:
        """``object.method(*args)`` in the second process, without waiting for it."""
        self._channel.put(("call", method, args), sum(a.nbytes for a in args if isinstance(a, pa.Table)))

    def ask(self, method: str, *args):
        """``object.method(*args)`` in the second process, once every earlier call has run: its result."""
        channel = self._channel
        channel.put(("ask", method, args), 0)
        channel.queue.join()
        if channel.failure is not None:
            raise BackgroundError(f"the second process could not be reached: {channel.failure}")
        try:
            status, value = channel.connection.recv()
        except (EOFError, OSError) as error:
            raise BackgroundError(f"the second process ended (exit status {self._process.poll()})") from error
        if status == "error":
            raise BackgroundError(value)
        return value

    def close(self) -> None:
        """End the second process (also when this object is collected)."""
        self._finalizer()


class _Channel:
    """The messages on their way to the second process, and the thread's loop that sends them."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.queue: queue.Queue = queue.Queue()
        self.failure: BaseException | None = None
        self._backlog, self._room = 0, threading.Condition()

    def put(self, message: tuple | None, size: int) -> None:
        with self._room:
            while self._backlog and self._backlog + size > BACKLOG_BYTES:
                self._room.wait()
            self._backlog += size
        self.queue.put((message, size))

    def send(self) -> None:
        while True:
            message, size = self.queue.get()
            try:
                if message is None:
                    return
                if self.failure is None:
                    self._send(*message)
            except BaseException as error:  # raised to the caller by Background.ask
                self.failure = error
            finally:
                with self._room:
                    self._backlog -= size
                    self._room.notify_all()
                self.queue.task_done()

    def _send(self, kind: str, name, args: tuple) -> None:
        tables = [arg for arg in args if isinstance(arg, pa.Table)]
        if tables:
            count = iter(range(len(tables)))
            args = tuple(_Table(next(count)) if isinstance(arg, pa.Table) else arg for arg in args)
        self.connection.send((kind, name, args, len(tables)))
        for table in tables:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            self.connection.send_bytes(sink.getvalue())


def _stop(process: subprocess.Popen, channel: _Channel) -> None:
    channel.put(None, 0)
    channel.connection.close()  # the second process reads the end and returns
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(descriptor: int) -> None:
    """The second process: build the object, then run what comes until the caller closes the socket."""
    connection = Connection(descriptor)
    target, failure = None, None
    while True:
        try:
            kind, name, args, tables = connection.recv()
            streams = [connection.recv_bytes() for _ in range(tables)]
        except (EOFError, OSError):
            return
        if tables:
            read = [pa.ipc.open_stream(pa.py_buffer(stream)).read_all() for stream in streams]
            args = tuple(read[arg.index] if isinstance(arg, _Table) else arg for arg in args)
        if failure is not None:
            if kind == "ask":
                connection.send(("error", failure))
            continue
        try:
            if kind == "new":
                target = name(*args)
            elif kind == "call":
                getattr(target, name)(*args)
            else:
                connection.send(("ok", getattr(target, name)(*args)))
        except Exception:
            failure = traceback.format_exc()
            if kind == "ask":
                connection.send(("error", failure))
