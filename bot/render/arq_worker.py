"""``python -m bot worker``: an arq worker on a GPU host. It draws boards; it owns no users or jobs.

* The models load once, in arq's ``on_startup``, through the same ``engine.build`` /
  ``engine/models.py`` as the bot's local engine; every board after that reuses them.
* ``max_jobs = 1``: one board at a time on the GPU, on one dedicated engine thread.
* The job takes a ``bot.render.wire`` request and returns the board's files (or a failure).
  Progress goes out on a Redis channel per job, which the bot forwards to the chat.
* ``/cancel`` aborts the arq job (``allow_abort_jobs``): the engine stops at its next step.
* While a board is drawn the worker renews a short lease on arq's in-progress key, so a
  worker that dies (kill -9, lost host) has its board retried elsewhere after
  ``[arq] worker_lease_s`` instead of after the whole job timeout.
* Redis going away does not stop the worker: it waits and carries on when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from arq import Worker, func
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from bot.config import AppConfig, ArqSettings, redacted_url
from bot.ops.logs import job_context
from bot.render import wire
from bot.render.arq_link import REDIS_DOWN, connect, health_key, progress_channel
from engine.build import build_engine
from engine.errors import Cancelled
from engine.moderation import TermFilter
from engine.storyboard import ProgressEvent, StoryEngine

log = logging.getLogger(__name__)

def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _RedisTolerantWorker(Worker):
    """arq's worker, except that a Redis outage between polls is waited out instead of ending the
    process (arq 0.28 lets the exception out of its poll loop). arq has no public hook there, so
    this overrides its private ``_poll_iteration``; tests/scale's outage test guards the override."""

    _outage_since: float | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning("Redis is unreachable (%s: %s); waiting for it to come back", type(exc).__name__, exc)
            await asyncio.sleep(1.0)
            return
        if self._outage_since is not None:
            log.info("Redis is back after %.1fs", time.monotonic() - self._outage_since)
            self._outage_since = None


SCRATCH_PREFIX = "aldar-worker-"  # then the worker's pid: a folder whose worker is gone can be told apart
_SCRATCH = re.compile(re.escape(SCRATCH_PREFIX) + r"(?P<pid>\d+)-")


def remove_dead_scratch(folder: Path) -> list[Path]:
    """Remove the scratch folders of workers that are no longer running (a SIGKILL or a crash
    leaves one behind, with the half-drawn board in it); the removed folders, for the log."""
    removed = []
    for path in folder.glob(f"{SCRATCH_PREFIX}*"):
        match = _SCRATCH.match(path.name)
        if match is None or not path.is_dir() or _running(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d scratch folder(s) of workers no longer running", len(removed))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RenderWorker:
    """Everything one GPU worker process holds: its config, its engine (loaded once) and its thread."""

    def __init__(self, config: AppConfig, *, name: str | None = None) -> None:
        self.config = config
        self.settings: ArqSettings = config.arq
        self.name = name or worker_name()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine: StoryEngine | None = None
        remove_dead_scratch(Path(tempfile.gettempdir()))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))

    # -- arq hooks -------------------------------------------------------------------------------------
    async def on_startup(self, ctx: dict) -> None:
        if self.engine is None:  # a reconnect after an outage reuses the models
            loop = asyncio.get_running_loop()
            settings = self.config.engine_settings()
            banned = TermFilter(self.config.story.banned_terms)  # the LLM's plan meets the bot's rule here too
            self.engine = await loop.run_in_executor(
                self.executor,
                lambda: build_engine(settings, openai_api_key=self.config.secrets.openai_key(), banned=banned))
        log.info("worker %s ready: planner=%s, renderer=%s (%s)", self.name, self.engine.planner.name,
                 self.engine.renderer.name, self.engine.reasons.get("renderer", ""))

    async def render_board(self, ctx: dict, request: Any) -> dict:
        """arq's job function: one board, start to finish, on this worker's GPU."""
        job_id: str = ctx["job_id"]
        redis: ArqRedis = ctx["redis"]
        with job_context(job_id), tempfile.TemporaryDirectory(dir=self.scratch) as folder:
            log.info("render %s: try %d on %s", job_id, ctx.get("job_try", 1), self.name)
            started = time.perf_counter()
            lease = asyncio.create_task(self._keep_lease(redis, job_id))
            progress: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
            publisher = asyncio.create_task(self._publish_progress(redis, job_id, progress))
            try:
                result = await self._draw(request, Path(folder), progress, ctx.get("job_try", 1))
            finally:
                progress.put_nowait(None)
                await publisher
                lease.cancel()
                await asyncio.gather(lease, return_exceptions=True)
            log.info("render %s: %s in %.2fs", job_id, "done" if result["ok"] else result["error_type"],
                     time.perf_counter() - started)
            return result

    async def _draw(self, request: Any, folder: Path, progress: asyncio.Queue, job_try: int) -> dict:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def on_progress(event: ProgressEvent) -> None:  # on the engine thread
            loop.call_soon_threadsafe(progress.put_nowait, event)

        def draw() -> dict:
            board_request = replace(wire.decode_request(request, folder),
                                    report_extra={"worker": {"name": self.name, "try": job_try}})
            board = self.engine.run(board_request, folder, on_progress=on_progress, should_cancel=cancel.is_set)
            return wire.encode_board(board, max_bytes=int(self.settings.max_result_mb * 2**20))

        context = contextvars.copy_context()  # the engine thread's log lines carry the job too
        future = loop.run_in_executor(self.executor, context.run, draw)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # aborted (/cancel) or shutting down: stop at the next step
            cancel.set()
            with contextlib.suppress(Cancelled):
                await future
            raise
        except Exception as exc:  # the board failed; the bot tells the user, the worker goes on
            log.error("render failed", exc_info=exc)
            return wire.encode_failure(exc)

    async def _keep_lease(self, redis: ArqRedis, job_id: str) -> None:
        """Shorten arq's in-progress key to the lease and renew it while this worker lives. (arq keeps
        that key for the whole job timeout and has no API to renew it: a dead worker's job would
        wait out the timeout before anyone could take it again.)"""
        lease_ms = int(self.settings.worker_lease_s * 1000)
        while True:
            try:
                await redis.pexpire(in_progress_key_prefix + job_id, lease_ms)
            except REDIS_DOWN:
                log.warning("render %s: could not renew the lease", job_id, exc_info=True)
            await asyncio.sleep(self.settings.worker_lease_s / 3)

    async def _publish_progress(self, redis: ArqRedis, job_id: str, events: asyncio.Queue) -> None:
        channel = progress_channel(self.settings, job_id)
        while (event := await events.get()) is not None:
            try:
                await redis.publish(channel, wire.encode_progress(event))
            except REDIS_DOWN:
                log.debug("render %s: progress not published", job_id, exc_info=True)

    # -- running ---------------------------------------------------------------------------------------------
    def arq_worker(self, redis: ArqRedis) -> Worker:
        settings = self.settings
        grace = int(round(settings.shutdown_grace_s))
        return _RedisTolerantWorker(
            functions=[func(self.render_board, name=wire.RENDER_FUNCTION)],
            queue_name=settings.queue_name,
            redis_pool=redis,
            on_startup=self.on_startup,
            max_jobs=1,
            job_timeout=settings.job_timeout_s,
            keep_result=settings.keep_result_s,
            poll_delay=settings.poll_interval_s,
            max_tries=settings.max_tries,
            health_check_interval=settings.health_check_interval_s,
            health_check_key=health_key(settings, self.name),
            allow_abort_jobs=True,
            job_serializer=wire.dumps,
            job_deserializer=wire.loads,
            job_completion_wait=grace,
            log_results=False,  # a result is a board's bytes; the job function logs its outcome
        )

    async def run(self) -> None:
        """Wait for Redis, load the models, then draw boards until SIGINT/SIGTERM."""
        redis = connect(self.settings, self.config.redis_url())
        await self._wait_for_redis(redis)
        worker = self.arq_worker(redis)
        try:
            await worker.async_run()
        except asyncio.CancelledError:  # arq's signal handler cancels its main task
            log.info("worker %s stopping", self.name)
        finally:
            await worker.close()
            self.executor.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(self.scratch, ignore_errors=True)

    async def _wait_for_redis(self, redis: ArqRedis) -> None:
        url = redacted_url(self.config.redis_url())
        waited = 0
        while True:
            try:
                await redis.ping()
                log.info("worker %s: connected to Redis at %s, queue %r", self.name, url, self.settings.queue_name)
                return
            except REDIS_DOWN as exc:
                if waited % 30 == 0:
                    log.warning("waiting for Redis at %s (%s)", url, type(exc).__name__)
            await asyncio.sleep(1.0)
            waited += 1


async def check_health(config: AppConfig, name: str | None = None) -> tuple[bool, str]:
    """``python -m bot worker --check``: is a worker of this host (or the one named) live in Redis?
    For container health checks; reads the worker's arq health-check key, nothing else."""
    settings = config.arq
    pattern = health_key(settings, name) if name else health_key(settings, f"{socket.gethostname()}:*")
    redis = connect(settings, config.redis_url())
    try:
        keys = [key async for key in redis.scan_iter(match=pattern)]
        info = await redis.get(keys[0]) if keys else None
    except REDIS_DOWN as exc:
        return False, f"Redis at {redacted_url(config.redis_url())} is unreachable ({type(exc).__name__})"
    finally:
        await redis.aclose()
    if not keys:
        return False, f"no live worker matches {pattern!r}"
    return True, f"{keys[0].decode()}: {(info or b'').decode()}"
