"""What a job's chat is told while the job is in hand: progress notes, "the engine is away", and
where the job's status message is.

The status message is the adapter's acknowledgement, shared in memory (``StatusRefs``); after a
restart it is read off the job's row.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.chat_port import ChatGateway, JobUpdate
from bot.jobs.status_refs import StatusRefs
from bot.messages import text
from bot.render.port import Availability
from bot.store.records import Job
from bot.store.store import Store
from engine.storyboard import ProgressEvent

log = logging.getLogger(__name__)

_PROGRESS_KEYS = {
    "planning": "progress_planning",
    "rendering": "progress_frame",
    "step": "progress_step",
    "validating": "progress_validating",
    "composing": "progress_composing",
}


def progress_text(job: Job, event: ProgressEvent) -> str:
    """The chat line for one engine progress event, in the job's language."""
    key = _PROGRESS_KEYS[event.stage]
    if event.stage == "rendering" and event.last_frame not in (None, event.frame):
        key = "progress_frames"
    last = event.last_frame if event.last_frame is not None else event.frame
    return text(key, job.language, job=job.id, frame=event.frame, last=last, total=event.total,
                step=event.step, steps=event.steps)


class Progress:
    """Notes to a job's chat, edited into its status message where the platform can."""

    def __init__(self, *, gateway: ChatGateway, store: Store, status_refs: StatusRefs) -> None:
        self.gateway = gateway
        self.store = store
        self.status_refs = status_refs  # the service's: the adapters put them there

    async def forward(self, job: Job, events: asyncio.Queue[ProgressEvent | None]) -> None:
        """Pass the engine's events on, in order, until the ``None`` that ends the job."""
        while (event := await events.get()) is not None:
            if event.stage == "done":
                continue  # the delivery itself says "done"
            await self.notify(job, event.stage, progress_text(job, event), frame=event.frame, total=event.total)

    async def notify(self, job: Job, stage: str, message: str, *, frame: int | None = None,
                     total: int | None = None) -> None:
        update = JobUpdate(
            job_id=job.id, platform=job.platform, chat_id=job.chat_id, lang=job.language,
            stage=stage, text=message, frame=frame, total=total, status_ref=self.status_ref(job),
        )
        try:
            await self.gateway.notify(update)
        except Exception:  # a chat that cannot take a progress note must not fail the job
            log.warning("job %d: progress note not sent", job.id, exc_info=True)

    def status_ref(self, job: Job) -> str | None:
        """Where the job's progress is shown: in memory, or on the row from before a restart."""
        return self.status_refs.get(job.id) or job.status_ref

    async def forget(self, job_id: int) -> None:
        """The job's last message is out: nothing will edit its status message again."""
        await self.store.clear_status_ref(job_id)
        self.status_refs.forget(job_id)


class Outage:
    """The engine going away and coming back: logged once each way, and each waiting job's chat
    told once per outage."""

    def __init__(self, *, progress: Progress, store: Store) -> None:
        self.progress = progress
        self.store = store
        self._down_since: float | None = None
        self._told: set[int] = set()

    async def track(self, availability: Availability) -> None:
        if availability.up:
            if self._down_since is not None:
                log.info("the engine is available again after %.1fs", time.monotonic() - self._down_since)
                self._down_since = None
                self._told.clear()
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("the engine is unavailable: %s; jobs stay queued", availability.reason)
        for job in await self.store.active_jobs():
            if job.status == "queued" and job.id not in self._told:
                await self.tell_waiting(job)

    async def tell_waiting(self, job: Job) -> None:
        self._told.add(job.id)
        await self.progress.notify(job, "waiting", text("engine_unavailable", job.language, job=job.id))
