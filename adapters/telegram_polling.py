"""Long polling that tells Telegram an update is handled only once it is.

python-telegram-bot's ``Updater`` confirms a batch (its next ``getUpdates`` carries the offset)
as soon as the batch is queued, before any handler has run, and drops what is still queued
when it stops. Telegram never hands out a confirmed update again, so a ``/story`` caught in
that window by a crash or a restart was lost.

Here each batch is handled to the end and only then confirmed. A crash before that gets the
batch again on the next start; the service knows a redelivered ``/story`` by the message it
came from (``source_ref``), so the story becomes one job, never none and never two.
"""

from __future__ import annotations

import asyncio
import logging

from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application

log = logging.getLogger(__name__)

BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # between failed polls: Telegram or the network is down


class ConfirmAfterHandling:
    """Poll ``getUpdates``; hand every update of a batch to the application; then confirm the batch."""

    def __init__(self, app: Application, *, timeout_s: int, allowed_updates: list[str]) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.allowed_updates = allowed_updates
        self._offset = 0  # the first update not yet handled; Telegram forgets the ones below it
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.app.bot.delete_webhook()  # getUpdates is refused while a webhook is set
        self._task = asyncio.create_task(self._run(), name="telegram-polling")

    async def stop(self) -> None:
        """Finish the batch in hand, confirm it, and stop."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                updates = await self._next_batch()
            except InvalidToken:
                log.critical("telegram: the token was refused while polling; no more updates will be read")
                return
            except RetryAfter as exc:
                log.warning("telegram: getUpdates is rate-limited; polling again in %s", exc.retry_after)
                await self._pause(_seconds(exc.retry_after))
                continue
            except TimedOut:
                continue  # the long poll outlived the HTTP timeout: poll again
            except (NetworkError, TelegramError) as exc:  # Conflict, 5xx, connection refused...
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning("telegram: getUpdates failed (%s: %s); polling again in %.0f s",
                            type(exc).__name__, exc, delay)
                await self._pause(delay)
                continue
            failures = 0
            if updates:
                await self._handle(updates)
                self._offset = updates[-1].update_id + 1
        await self._confirm()

    async def _next_batch(self) -> list:
        """The next updates, or none when asked to stop: the long poll is not waited out."""
        poll = asyncio.create_task(self.app.bot.get_updates(
            offset=self._offset, timeout=self.timeout_s, allowed_updates=self.allowed_updates))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not poll.done():
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
            return []
        return poll.result()

    async def _handle(self, updates: list) -> None:
        """Every update of the batch, at most ``concurrent_updates`` at once; a handler's error goes
        to the application's error handler (``Application.process_update``), never out of here."""
        processor = self.app.update_processor
        await asyncio.gather(*(processor.process_update(u, self.app.process_update(u)) for u in updates))

    async def _confirm(self) -> None:
        """Tell Telegram the last batch is handled (a getUpdates that does not wait)."""
        if not self._offset:
            return
        try:
            await self.app.bot.get_updates(offset=self._offset, timeout=0, allowed_updates=self.allowed_updates)
        except TelegramError as exc:  # the batch comes again on the next start and is recognised there
            log.warning("telegram: could not confirm the last updates (%s); they will be handed out again",
                        exc)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass


def _seconds(retry_after) -> float:
    return retry_after.total_seconds() if hasattr(retry_after, "total_seconds") else float(retry_after)
