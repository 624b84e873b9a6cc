"""Counts the SQLite write transactions a block of work opens (for the intake benches).

``counting(store_cls)`` wraps ``Store._write`` for the duration; a write is counted for the
command being handled when ``handling`` is set in that task (contextvars follow awaits).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

handling: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("handling", default=None)


@contextlib.contextmanager
def counting(store_cls):
    original = store_cls._write

    @functools.wraps(original)
    def counted(self):
        tally = handling.get()
        if tally is not None:
            tally[0] += 1
        return original(self)

    store_cls._write = counted
    try:
        yield
    finally:
        store_cls._write = original


@contextlib.contextmanager
def command():
    """Inside: the write transactions of this command are counted; yields the one-item tally."""
    tally = [0]
    token = handling.set(tally)
    try:
        yield tally
    finally:
        handling.reset(token)
