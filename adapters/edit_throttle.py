"""How every chat adapter edits a status message: at most one edit per lane every ``interval``
seconds, and a newer edit of a message replaces an older one still waiting, so the last state
always gets through (dropping updates instead would leave "drawing frame 5 of 8" on screen while
frame 8 is drawn). A lane is what the platform rate-limits: a Telegram chat, a Discord
interaction (one per job)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Edit = Callable[[], Awaitable[None]]
MAX_REMEMBERED_LANES = 256


class EditThrottle:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval, self._clock = interval, clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, dict[int, Edit]] = {}
        self._flushers: dict[str, asyncio.Task] = {}

    def submit(self, lane: str, message_id: int, edit: Edit) -> None:
        """Queue ``edit`` of that message; it replaces an edit of the same message still waiting."""
        self._pending.setdefault(lane, {})[message_id] = edit
        if lane not in self._flushers:
            task = asyncio.create_task(self._flush(lane), name=f"status-edits-{lane}")
            task.add_done_callback(lambda t, name=lane: self._flush_done(name, t))
            self._flushers[lane] = task

    async def drain(self) -> None:
        """Wait until every queued edit has been made (at shutdown)."""
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)

    async def _flush(self, lane: str) -> None:
        while True:
            if not self._pending.get(lane):
                # Deregistered in the same step that found nothing left, with no await between: an
                # edit submitted after this starts a new flusher instead of waiting on a finished one.
                self._pending.pop(lane, None)
                self._flushers.pop(lane, None)
                self._forget_quiet_lanes()
                return
            wait = self._last.get(lane, float("-inf")) + self._interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            message_id, edit = self._pending[lane].popitem()
            self._last[lane] = self._clock()
            try:
                await edit()
            except Exception:  # one failed edit (a deleted message, an expired token) must not stop the rest
                log.warning("status edit of message %s (%s) failed", message_id, lane, exc_info=True)

    def _forget_quiet_lanes(self) -> None:
        """Lanes come and go (a Discord lane is one job): forget those quiet for longer than the interval."""
        if len(self._last) > MAX_REMEMBERED_LANES:
            now = self._clock()
            self._last = {lane: at for lane, at in self._last.items() if now - at < self._interval}

    def _flush_done(self, lane: str, task: asyncio.Task) -> None:
        if self._flushers.get(lane) is task:  # cancelled or failed before it could deregister
            self._flushers.pop(lane, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("status edits for %s failed", lane, exc_info=task.exception())
