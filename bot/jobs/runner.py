"""The claim loop: claims jobs fairly, hands each to the engine port, and records how it ended.

The event loop never runs engine code. The port draws the board either on this process's
single engine thread (``LocalEngine``, one job at a time) or on GPU workers through Redis
(``bot.render.arq_client.ArqEngine``, as many jobs at once as the port has slots). Progress events hop
back onto the loop with ``call_soon_threadsafe`` and are forwarded, in order, by one
notifier task per job (``bot.jobs.progress``). While a job runs, a heartbeat task renews its
lease and picks up cancel requests. A finished board goes to the outbox (``bot.jobs.delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from bot.chat_port import ChatGateway
from bot.config import AppConfig
from bot.jobs.delivery import Outbox
from bot.jobs.progress import Outage, Progress
from bot.jobs.requests import board_request
from bot.jobs.status_refs import StatusRefs
from bot.messages import text
from bot.ops.logs import job_context
from bot.ops.metrics import Metrics
from bot.ops.storage import DiskSpace, Retention, job_folder
from bot.render.port import Availability, EnginePort, EngineUnavailable, ResultTooLarge, StopSignals
from bot.render.wire import BadResult
from bot.store.records import FrameRow, Job
from bot.store.store import Store
from engine.board_files import Storyboard
from engine.errors import Cancelled, InvalidRequest
from engine.planning.base import PlanError
from engine.storyboard import ProgressEvent

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0  # retention works in days: an hourly look is plenty

# Errors whose message is safe and useful to show to the user as it is.
_USER_FACING_ERRORS = (InvalidRequest, PlanError, ResultTooLarge, BadResult)


def error_name(exc: BaseException) -> str:
    """The error's type; for a failure on a GPU worker, the worker's exception type."""
    return getattr(exc, "error_type", None) or type(exc).__name__


def supervise(task: asyncio.Task, what: str) -> asyncio.Task:
    """Log a background task's crash instead of losing it silently."""

    def _done(t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("background task %s crashed", what, exc_info=t.exception())

    task.add_done_callback(_done)
    return task


class JobRunner:
    def __init__(
        self,
        *,
        store: Store,
        gateway: ChatGateway,
        config: AppConfig,
        port: EnginePort,
        status_refs: StatusRefs,
        worker_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self._pulse = time.monotonic()
        self.port = port
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._shutdown = threading.Event()
        self.progress = Progress(gateway=gateway, store=store, status_refs=status_refs)
        self.outage = Outage(progress=self.progress, store=store)
        self.outbox = Outbox(store=store, gateway=gateway, queue=config.queue, metrics=self.metrics,
                             progress=self.progress)
        self.disk = DiskSpace.of(config.storage)
        self._disk_low: str | None = None  # why no job is claimed now, while the disk is short
        self.retention = Retention(store, config.storage)
        self._last_sweep = float("-inf")  # the first idle moment sweeps
        self._in_flight: set[asyncio.Task] = set()
        self._stops: dict[int, StopSignals] = {}
        self._availability = Availability(slots=1)

    def pulse_age(self) -> float:
        """Seconds since this worker last claimed, polled an empty queue or renewed a lease (for /healthz)."""
        return time.monotonic() - self._pulse

    @property
    def in_flight(self) -> int:
        """Jobs being drawn right now (more than one only with the arq backend)."""
        return len(self._in_flight)

    @property
    def engine_slots(self) -> int:
        """How many jobs the engine took at the last claim; 0 while it is unreachable."""
        return self._availability.slots

    def request_shutdown(self) -> None:
        """Stop at the next frame; the jobs in hand go back to the queue with their checkpoints."""
        self._shutdown.set()
        for stop in self._stops.values():
            stop.detach.set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start_up(self) -> None:
        """After a restart: give up on jobs that keep killing workers, post undelivered results."""
        await self._fail_exhausted()
        await self.outbox.post_pending(after_restart=True)

    async def deliver_pending(self) -> None:
        """Post every result still waiting now (the console's one-shot mode, and an idle retry)."""
        await self.outbox.post_pending()

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        """Process jobs until ``stop`` is set (or, in burst mode, until the queue is empty),
        keeping as many in flight as the engine port has slots."""
        stop = stop or asyncio.Event()
        processed = 0

        def count(task: asyncio.Task) -> None:
            nonlocal processed
            self._in_flight.discard(task)
            processed += 1

        while not stop.is_set() and not self._shutdown.is_set():
            job = await self._claim_next()
            if job is not None:
                task = supervise(asyncio.create_task(self._process_claimed(job)), f"job {job.id}")
                self._in_flight.add(task)
                task.add_done_callback(count)
                continue
            if burst and not self._in_flight:
                break
            await self.outbox.retry_now_and_then()
            await self._sweep_now_and_then()
            await self._wait_for_change(stop)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))  # on shutdown they stop at their next step
        return processed

    async def _wait_for_change(self, stop: asyncio.Event) -> None:
        """Sleep a poll interval, or less if ``stop`` is set or a job in flight ends."""
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({stopping, *self._in_flight}, timeout=self.config.queue.poll_interval_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def run_once(self) -> bool:
        """Claim one job and see it through; False when nothing could be claimed."""
        job = await self._claim_next()
        if job is None:
            return False
        await self._process_claimed(job)
        return True

    async def _claim_next(self) -> Job | None:
        self._pulse = time.monotonic()
        await self._fail_exhausted()
        availability = self._availability = await self.port.availability()
        await self.outage.track(availability)
        if len(self._in_flight) >= availability.slots or self._disk_is_short():
            return None
        queue = self.config.queue
        return await self.store.claim(
            self.worker_id,
            lease_seconds=queue.lease_seconds,
            max_running_per_user=queue.max_running_per_user,
            max_attempts=queue.max_attempts,
        )

    async def _process_claimed(self, job: Job) -> None:
        with job_context(job.id):
            log.info("job %d claimed by %s (attempt %d, %s)", job.id, self.worker_id, job.attempts, job.kind)
            await self._process(job)

    # -- one job -------------------------------------------------------------------------------
    async def _process(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        out_dir = self._out_dir(job)
        parent_dir = await self._parent_dir(job)
        stop = StopSignals.new()
        if self._shutdown.is_set():
            stop.detach.set()
        self._stops[job.id] = stop
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        notifier = supervise(asyncio.create_task(self.progress.forward(job, events)), f"progress job {job.id}")
        heartbeat = supervise(asyncio.create_task(self._heartbeat(job, stop)), f"lease job {job.id}")

        def on_progress(event: ProgressEvent) -> None:  # called on the engine thread (or the loop)
            loop.call_soon_threadsafe(events.put_nowait, event)

        board: Storyboard | None = None
        error: Exception | None = None
        try:
            request = await asyncio.to_thread(board_request, job, out_dir, parent_dir)
            board = await self.port.render(f"job-{job.id}", request, out_dir, on_progress=on_progress, stop=stop)
        except Exception as exc:  # any engine failure ends this job, never the worker
            error = exc
        finally:
            heartbeat.cancel()
            self._stops.pop(job.id, None)
            events.put_nowait(None)
            await notifier  # every progress note goes out before the outcome
        await self._conclude(job, board, error, cancelled_by_user=stop.cancel.is_set())

    async def _conclude(
        self, job: Job, board: Storyboard | None, error: Exception | None, *, cancelled_by_user: bool
    ) -> None:
        if board is not None:
            await self._finish(job, board)
        elif isinstance(error, EngineUnavailable):
            released = await self.store.release(job.id, self.worker_id)
            log.warning("job %d: back in the queue (%s): %s", job.id, released, error)
            await self.outage.tell_waiting(job)
        elif isinstance(error, Cancelled) and not cancelled_by_user:
            released = await self.store.release(job.id, self.worker_id)
            log.info("job %d: shutting down, returned to the queue (%s)", job.id, released)
        elif isinstance(error, Cancelled):
            await self._end(job, "cancelled", "Cancelled", "cancelled by request")
        else:
            log.error("job %d failed", job.id, exc_info=error)
            await self._end(job, "failed", error_name(error), str(error), error)

    def _out_dir(self, job: Job) -> Path:
        return job_folder(self.config.storage.outputs, job)

    async def _parent_dir(self, job: Job) -> Path | None:
        if job.parent_id is None:
            return None
        parent = await self.store.get_job(job.parent_id)
        return Path(parent.report_path).parent if parent and parent.report_path else None

    async def _finish(self, job: Job, board: Storyboard) -> None:
        rows = [
            FrameRow(
                idx=f.index, path=str(board.out_dir / f.file_name), seed=f.seed, prompt=f.prompt.positive,
                attempts=len(f.attempts), identity=f.attempts[f.chosen].scores.get("identity"), accepted=f.accepted,
            )
            for f in board.frames
        ]
        finished = await self.store.finish(
            job.id, self.worker_id, title=board.plan.title, grid_path=str(board.grid_path),
            report_path=str(board.report_path), frames=rows,
        )
        if finished is None:
            log.warning("job %d: lease lost before finishing; another worker owns it now", job.id)
            return
        log.info("job %d done: %s", job.id, board.grid_path)
        self.metrics.board_done(board.report)
        self.metrics.job_ended(job.platform, "done")
        await self.outbox.post_finished(finished.delivery, job, board, owner_id=finished.owner_id)

    async def _end(
        self,
        job: Job,
        status: str,
        error_type: str,
        message: str,
        exc: BaseException | None = None,
    ) -> None:
        recorded = await self.store.fail(job.id, self.worker_id, status=status, error_type=error_type,
                                         error_message=message)
        if not recorded:
            log.warning("job %d: lease lost before recording %s", job.id, status)
            return
        self.metrics.job_ended(job.platform, status, error_type)
        shown = message if isinstance(exc, _USER_FACING_ERRORS) else error_type
        key = "job_cancelled" if status == "cancelled" else "job_failed"
        await self.progress.notify(job, status, text(key, job.language, job=job.id, error=shown))
        await self.progress.forget(job.id)  # its last message is out

    async def _fail_exhausted(self) -> None:
        for job in await self.store.fail_exhausted(max_attempts=self.config.queue.max_attempts):
            log.error("job %d: giving up after %d attempts", job.id, job.attempts)
            self.metrics.job_ended(job.platform, "failed", job.error_type or "GaveUp")
            failed = text("job_failed", job.language, job=job.id, error=job.error_type)
            await self.progress.notify(job, "failed", failed)
            await self.progress.forget(job.id)

    # -- leases ----------------------------------------------------------------------------------
    async def _heartbeat(self, job: Job, stop: StopSignals) -> None:
        """Renew the lease and pick up /cancel, often enough for both."""
        queue = self.config.queue
        interval = min(queue.lease_seconds / 3, queue.cancel_poll_s)
        while True:
            await asyncio.sleep(interval)
            current = await self.store.renew_lease(job.id, self.worker_id, self.config.queue.lease_seconds,
                                                   status_ref=self.progress.status_refs.get(job.id))
            self._pulse = time.monotonic()
            if current is None:
                log.warning("job %d: lease lost; stopping at the next frame", job.id)
                stop.detach.set()
                return
            if current.cancel_requested:
                stop.cancel.set()

    # -- disk space and retention -----------------------------------------------------------------
    def _disk_is_short(self) -> bool:
        """Below [storage] min_free_mb no job starts: a full disk would fail it half-way. Logged once
        each time the disk runs short and once when there is room again; /status and /healthz say so."""
        shortfall = self.disk.shortfall()
        if (shortfall is None) != (self._disk_low is None):
            if shortfall is None:
                log.info("the outputs disk has room again; claiming jobs")
            else:
                log.warning("not claiming jobs: %s", shortfall)
        self._disk_low = shortfall
        return shortfall is not None

    async def _sweep_now_and_then(self) -> None:
        """While idle, at most every SWEEP_EVERY_S: delete boards past [storage] keep_days."""
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        await self.retention.sweep()
