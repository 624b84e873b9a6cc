"""The delivery outbox: every finished board is posted once, and a post that failed is tried again.

A finished job's delivery row is written in the same transaction as its result (``Store.finish``).
Marking the row as being sent is the claim, so a job finishing and an idle retry never post one
board twice. A failure clears the mark; after ``[queue] delivery_attempts`` the row is marked
failed with the reason. A process that dies mid-post leaves the mark: the next start counts it,
says so and posts again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bot.chat_port import BoardDelivery, ChatGateway
from bot.config import QueueSettings
from bot.jobs.progress import Progress
from bot.messages import text
from bot.ops.metrics import Metrics
from bot.store.records import Delivery, Job
from bot.store.store import Store
from engine.board_files import Storyboard

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, *, store: Store, gateway: ChatGateway, queue: QueueSettings, metrics: Metrics,
                 progress: Progress) -> None:
        self.store = store
        self.gateway = gateway
        self.queue = queue
        self.metrics = metrics
        self.progress = progress
        self._last_retry = time.monotonic()

    async def post_finished(self, delivery: Delivery, job: Job, board: Storyboard, *, owner_id: str) -> None:
        """Post a board that has just finished here: made from the result in memory, nothing read back."""
        await self._post(delivery, self._board_delivery(
            delivery, job, title=board.plan.title, grid_path=board.grid_path, report_path=board.report_path,
            frame_paths=tuple(board.out_dir / f.file_name for f in board.frames), owner_id=owner_id))

    async def retry_now_and_then(self) -> None:
        """While idle, post results whose delivery failed earlier (a chat was down, a 429...)."""
        now = time.monotonic()
        if now - self._last_retry < self.queue.delivery_retry_s:
            return
        self._last_retry = now
        await self.post_pending()

    async def post_pending(self, *, after_restart: bool = False) -> None:
        """Post the results still waiting. A post marked as being sent is one this process is making
        right now, unless the process has just started: then the last one died during that post."""
        for delivery in await self.store.pending_deliveries():
            if delivery.sending_since is not None:
                if not after_restart:
                    continue  # a job of this process is posting it
                log.warning("job %d: the last delivery was cut off mid-send; posting again (the chat may show it "
                            "twice)", delivery.job_id)
                await self.store.mark_interrupted(delivery.id)
                self.metrics.delivery_interrupted()
            else:
                log.info("job %d: delivering a result left undelivered", delivery.job_id)
            await self._post(delivery)

    async def _post(self, delivery: Delivery, prepared: BoardDelivery | None = None) -> None:
        """Post a result: ``prepared`` when the job has just finished here, else read from the store."""
        if not await self.store.mark_sending(delivery.id):
            log.debug("job %d: its result is already posted or being posted", delivery.job_id)
            return
        started = time.perf_counter()
        try:  # a failure anywhere clears the mark, so the idle retry posts it later
            await self.gateway.deliver(prepared or await self._stored_board_delivery(delivery))
        except Exception as exc:
            log.error("job %d: delivery failed", delivery.job_id, exc_info=exc)
            gave_up = await self.store.record_delivery_error(
                delivery.id, f"{type(exc).__name__}: {exc}", give_up_after=self.queue.delivery_attempts
            )
            if gave_up:
                self.progress.status_refs.forget(delivery.job_id)
            return
        self.metrics.delivered(time.perf_counter() - started)
        await self.store.mark_delivered(delivery.id)
        self.progress.status_refs.forget(delivery.job_id)

    async def _stored_board_delivery(self, delivery: Delivery) -> BoardDelivery:
        """A result left undelivered (a failed post, a restart): everything read back from the store."""
        job = await self.store.get_job(delivery.job_id)
        frames = await self.store.frames(job.id)
        owner = await self.store.user_by_id(job.user_id)
        return self._board_delivery(
            delivery, job, title=job.title or "", grid_path=Path(job.grid_path), report_path=Path(job.report_path),
            frame_paths=tuple(Path(f.path) for f in frames), owner_id=owner.platform_user_id if owner else "")

    def _board_delivery(self, delivery: Delivery, job: Job, *, title: str, grid_path: Path, report_path: Path,
                        frame_paths: tuple[Path, ...], owner_id: str) -> BoardDelivery:
        return BoardDelivery(
            job_id=job.id, platform=delivery.platform, chat_id=delivery.chat_id, lang=job.language,
            title=title, text=text("done", job.language, job=job.id, title=title, frames=len(frame_paths)),
            grid_path=grid_path, report_path=report_path, frame_paths=frame_paths, mode=job.mode, seed=job.seed,
            owner_id=owner_id, status_ref=self.progress.status_ref(job),
        )
