"""Waiting for a fake server to reach a state, shared by the fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def poll_until(predicate: Callable[[], Any], *, timeout: float, describe: Callable[[], str],
                     every: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; else fail with ``describe()``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s; recent calls:\n{describe()}")
        await asyncio.sleep(every)
