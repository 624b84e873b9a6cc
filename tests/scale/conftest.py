"""Fixtures for the scale-out tests: a real redis-server, real worker processes and the real bot
(``open_app`` with ``engine.backend = "arq"``), talking to each other over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.app import App, open_app
from bot.config import load_config
from bot.render.arq_link import live_workers
from tests.helpers import RecordingGateway
from tests.scale_harness import REDIS_SERVER, RedisServer, WorkerProcess, wait_until


@pytest.fixture
def redis_server(tmp_path: Path):
    if REDIS_SERVER is None:
        pytest.skip("needs redis-server (apt-get install redis-server); bash .ci/run installs it")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(tmp_path: Path):
    """``start_worker(name, config_path)``: a ``python -m bot worker`` process, stopped after the test."""
    started: list[WorkerProcess] = []

    def _start(name: str, config_path: Path, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(name, config_path, tmp_path, env=env).start()
        started.append(worker)
        return worker

    yield _start
    for worker in started:
        worker.stop()


@dataclass
class RunningBot:
    app: App
    gateway: RecordingGateway
    claimed: list[int] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def start_worker_loop(self) -> None:
        self.task = asyncio.create_task(self.app.worker.run(self.stop))

    async def wait_for_workers(self, count: int, timeout: float = 30.0) -> None:
        port = self.app.port
        await wait_until(lambda: _at_least(live_workers(port.redis, port.settings), count), timeout,
                         f"{count} live render workers")

    async def job(self, job_id: int):
        return await self.app.store.get_job(job_id)

    async def wait_for_status(self, job_ids, status: str, timeout: float = 60.0) -> None:
        async def all_there() -> bool:
            statuses = [(await self.job(j)).status for j in job_ids]
            return all(s == status for s in statuses)

        await wait_until(all_there, timeout, f"jobs {list(job_ids)} to be {status}")

    async def wait_for_frame(self, job_id: int, frame: int, timeout: float = 30.0) -> None:
        """Until the chat has been told frame ``frame`` of the job is being drawn."""
        await wait_until(lambda: any((u.frame or 0) >= frame for u in self.updates(job_id, "rendering")), timeout,
                         f"job {job_id} to reach frame {frame}")

    def updates(self, job_id: int, stage: str | None = None) -> list:
        return [u for u in self.gateway.updates if u.job_id == job_id and (stage is None or u.stage == stage)]


async def _at_least(counting, count: int) -> bool:
    return await counting >= count


@contextlib.asynccontextmanager
async def running_bot(config_path: Path, env: dict[str, str] | None = None) -> AsyncIterator[RunningBot]:
    """The bot with the arq backend, a recording chat, and its claims recorded in order. Its worker
    loop starts when the test says (``start_worker_loop``), so a test can queue jobs first."""
    config = load_config(config_path, env or {})
    async with open_app(config) as app:
        gateway = RecordingGateway()
        app.router.register("test", gateway)
        bot = RunningBot(app, gateway)
        claim = app.store.claim

        async def recording_claim(*args, **kwargs):
            job = await claim(*args, **kwargs)
            if job is not None:
                bot.claimed.append(job.id)
            return job

        app.store.claim = recording_claim
        try:
            yield bot
        finally:
            bot.stop.set()
            app.worker.request_shutdown()
            if bot.task is not None:
                await asyncio.wait_for(bot.task, timeout=30)
