"""``engine.backend = "arq"``: boards are drawn by GPU workers (``python -m bot worker``) through Redis.

The bot host stays the only writer of SQLite. For each claimed job it enqueues one arq job
whose id is derived from the SQLite job id, so a bot that restarts (or takes a released job
back) attaches to the render already in Redis instead of drawing the board twice. Progress
comes back on a Redis channel per job; ``/cancel`` aborts the arq job; the finished board's
files come back in the arq result and are written into the job's output folder here.

The bot takes a result out of Redis (read and deleted at once) before decoding it, and checks
it against the request (``wire.ResultBounds``) before decoding a pixel: a hostile or broken
result fails its job once, and one that crashed the bot mid-decode is not met again.

Redis being unreachable is never a job failure: ``EngineUnavailable`` puts the job back in
the queue, and ``availability()`` keeps the worker from claiming more until Redis returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, Job, JobResult, JobStatus, deserialize_result
from arq.utils import timestamp_ms
from redis.exceptions import WatchError

from bot.config import ArqSettings, redacted_url
from bot.render import wire
from bot.render.arq_link import REDIS_DOWN, connect, live_workers, progress_channel
from bot.render.port import Availability, EngineUnavailable, ProgressSink, ResultTooLarge, StopSignals
from engine.board_files import Storyboard
from engine.errors import Cancelled
from engine.rendering.base import ModeOff
from engine.settings import EngineSettings
from engine.storyboard import BoardRequest

log = logging.getLogger(__name__)

_AVAILABILITY_TTL_S = 1.0  # the live-worker count is read from Redis at most this often
class ArqEngine:
    """The engine port over arq: the same ``render`` contract as ``LocalEngine``."""

    name = "arq"

    def __init__(self, settings: ArqSettings, url: str, engine: EngineSettings) -> None:
        self.settings = settings
        self.url = url
        self.engine = engine  # what a worker's board may measure, so a result can be checked on arrival
        self.redis = connect(settings, url)
        self._availability: tuple[float, Availability] | None = None

    def describe(self) -> str:
        slots = self.settings.max_in_flight or "one per live worker"
        return (f"renderer=arq workers (queue {self.settings.queue_name!r} on {redacted_url(self.url)}, "
                f"max_in_flight={slots})")

    def modes_off(self) -> dict[str, ModeOff]:
        return {}  # the workers know their modes; one that lacks a mode refuses the job with the reason

    def picture_use(self, mode: str) -> None:
        return None  # which worker draws it, with which weights, is known only then

    async def close(self) -> None:
        await self.redis.aclose()

    # -- how many may run --------------------------------------------------------------------------------
    async def availability(self) -> Availability:
        now = time.monotonic()
        if self._availability is not None and now - self._availability[0] < _AVAILABILITY_TTL_S:
            return self._availability[1]
        current = await self._read_availability()
        self._availability = (now, current)
        return current

    async def _read_availability(self) -> Availability:
        try:
            workers = await live_workers(self.redis, self.settings)
        except REDIS_DOWN as exc:
            return Availability(0, f"Redis at {redacted_url(self.url)} is unreachable ({type(exc).__name__})")
        if self.settings.max_in_flight:
            return Availability(self.settings.max_in_flight)
        if workers == 0:
            return Availability(0, "no render worker is running")
        return Availability(workers)

    # -- one board ---------------------------------------------------------------------------------------------
    async def render(
        self, job_key: str, request: BoardRequest, out_dir: Path, *, on_progress: ProgressSink, stop: StopSignals
    ) -> Storyboard:
        arq_id = f"{self.settings.queue_name}:{job_key}"
        payload = await asyncio.to_thread(wire.encode_request, request)
        bounds = wire.ResultBounds.for_request(request, self.engine)
        try:
            pubsub = self.redis.pubsub()
            await pubsub.subscribe(progress_channel(self.settings, arq_id))  # before enqueueing: nothing missed
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc
        forwarder = asyncio.create_task(self._forward_progress(pubsub, on_progress, arq_id))
        try:
            await self._enqueue(arq_id, payload)
            return await self._wait_for_result(arq_id, payload, out_dir, bounds, stop)
        except REDIS_DOWN as exc:
            self._availability = None
            raise self._unavailable(exc) from exc
        finally:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
            try:
                await pubsub.aclose()
            except REDIS_DOWN:
                log.debug("progress channel of %s closed uncleanly", arq_id, exc_info=True)

    def _unavailable(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(f"Redis at {redacted_url(self.url)} is unreachable ({type(exc).__name__}: {exc})")

    async def _enqueue(self, arq_id: str, payload: dict) -> None:
        expires = self.settings.job_timeout_s * self.settings.max_tries + 3600  # not started by then: give up
        job = await self.redis.enqueue_job(wire.RENDER_FUNCTION, payload, _job_id=arq_id, _expires=expires)
        if job is None:
            log.info("render %s is already in Redis (queued, running or finished); waiting for it", arq_id)
        else:
            log.info("render %s enqueued", arq_id)

    async def _wait_for_result(self, arq_id: str, payload: dict, out_dir: Path, bounds: wire.ResultBounds,
                               stop: StopSignals) -> Storyboard:
        request_size = len(wire.dumps(payload))
        abort_sent = False
        job = Job(arq_id, self.redis, _queue_name=self.settings.queue_name)
        while True:
            status = await job.status()
            if status is JobStatus.complete:
                # arq has no public way to size a result before reading it all: its key is measured
                result_size = await self.redis.strlen(result_key_prefix + arq_id)
                return await self._take_result(arq_id, result_size, request_size, out_dir, bounds)
            if status is JobStatus.not_found:
                # gone without a result: Redis restarted without persistence, or the job expired
                log.warning("render %s vanished from Redis; enqueueing it again", arq_id)
                await self._enqueue(arq_id, payload)
            if stop.cancel.is_set() and not abort_sent:
                abort_sent = True
                if await self._abort(arq_id):
                    raise Cancelled("cancelled before a worker started it")
            if stop.detach.is_set() and not stop.cancel.is_set():
                raise Cancelled("stopped waiting; the render goes on in Redis and is picked up again")
            await asyncio.sleep(self.settings.poll_interval_s)

    async def _take_result(self, arq_id: str, size: int, request_size: int, out_dir: Path,
                           bounds: wire.ResultBounds) -> Storyboard:
        bound = int(self.settings.max_result_mb * 2**20)
        envelope_bound = bound + request_size + 4096  # arq repeats the request in its result
        if size > envelope_bound:
            await self.redis.delete(result_key_prefix + arq_id)
            raise ResultTooLarge(f"the worker's result is {wire.size_text(size)}, over the limit of "
                                 f"{wire.size_text(bound)} ([arq] max_result_mb)")
        info = _read_envelope(await self._pop_result(arq_id))
        if not info.success:
            if isinstance(info.result, wire.RemoteCancelled):
                raise Cancelled("the render was aborted")
            raise info.result if isinstance(info.result, Exception) else wire.RemoteError("RemoteError", str(info.result))
        return await asyncio.to_thread(wire.decode_result, info.result, out_dir, bounds)

    async def _pop_result(self, arq_id: str) -> bytes | None:
        """Read the result and delete it in one transaction. Gone from Redis before anything decodes
        it: a result that crashes the bot is not decoded again by the job's next claim. (arq's
        ``Job.result`` reads and decodes, and keeps the key: it cannot give that guarantee.)"""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(result_key_prefix + arq_id)
            pipe.delete(result_key_prefix + arq_id)
            raw, _ = await pipe.execute()
        return raw

    async def _abort(self, arq_id: str) -> bool:
        """Ask arq to abort; True when the job had not started and is now gone from the queue.

        Not arq's ``Job.abort``: that waits for a worker to take the job and report the abort,
        for ever when no worker is live, while a /cancel of a job nobody has started must end at
        once. So the abort is flagged arq's way (its abort set, which a worker running the job
        obeys) and a job still waiting is taken off arq's queue in one WATCH transaction."""
        await self.redis.zadd(abort_jobs_ss, {arq_id: timestamp_ms()})
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(in_progress_key_prefix + arq_id)
            if await pipe.exists(in_progress_key_prefix + arq_id):
                await pipe.reset()
                log.info("render %s: abort sent to its worker", arq_id)
                return False  # a worker has it: it stops at the next step and reports the abort
            pipe.multi()
            pipe.zrem(self.settings.queue_name, arq_id)
            pipe.delete(job_key_prefix + arq_id)
            pipe.zrem(abort_jobs_ss, arq_id)
            try:
                await pipe.execute()
            except WatchError:
                return False  # a worker took it just now
        log.info("render %s: removed from the queue before it started", arq_id)
        return True

    async def _forward_progress(self, pubsub, on_progress: ProgressSink, arq_id: str) -> None:
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except REDIS_DOWN:
                log.debug("render %s: progress channel lost", arq_id, exc_info=True)
                return
            if message is None or message.get("type") != "message":
                continue
            try:
                on_progress(wire.decode_progress(message["data"]))
            except (wire.WireError, TypeError) as exc:
                log.warning("render %s: ignoring a progress message this bot cannot read: %s", arq_id, exc)


def _read_envelope(raw: bytes | None) -> JobResult:
    """arq's result envelope; one this bot cannot read fails the job like any other bad result."""
    try:
        return deserialize_result(raw, deserializer=wire.loads)
    except DeserializationError as exc:
        raise wire.BadResult(f"the worker's result cannot be read: {exc.__cause__}") from exc
