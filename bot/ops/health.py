"""The operator's HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for the orchestrator.

``/healthz`` answers 200 only when all four hold, else 503, with a JSON body saying which:

- **loop**: the event loop is turning: a watch task ticks every second, and the longest lag
  between ticks in the last window stays under ``loop_lag_limit_s``;
- **database**: SQLite answers a read within ``db_timeout_s``, and the bot's last write went
  through. The check itself only reads: anyone who can reach the port may call it, and a
  write per call would queue behind, and hold back, the bot's own writes;
- **worker**: the worker claimed a job, polled an empty queue, or renewed a running job's
  lease within ``worker_stale_s``;
- **disk**: the outputs disk has ``[storage] min_free_mb`` free (below it no job is claimed).

It listens on ``[observability] host:port``, loopback by default: expose it deliberately.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from typing import Protocol

from aiohttp import web

from bot.config import ObservabilitySettings
from bot.ops.metrics import CONTENT_TYPE, Metrics
from bot.ops.storage import DiskSpace
from bot.store.store import Store

log = logging.getLogger(__name__)

TICK_S = 1.0


class Pulse(Protocol):
    def pulse_age(self) -> float:
        """Seconds since the worker last claimed, idled or renewed a lease."""
        ...


class LoopWatch:
    """Ticks on the loop and remembers the worst lag seen in the last window."""

    def __init__(self, window: int = 30) -> None:
        self.lags: list[float] = []
        self.window = window
        self.last_tick = time.monotonic()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="loop-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_S)
            self.last_tick = time.monotonic()
            self.lags = [*self.lags[-(self.window - 1):], self.last_tick - before - TICK_S]

    def worst_lag(self) -> float:
        silent = time.monotonic() - self.last_tick - TICK_S  # a blocked loop never records its own lag
        return max([silent, *self.lags], default=0.0)


class HealthServer:
    def __init__(self, settings: ObservabilitySettings, *, store: Store, worker: Pulse, metrics: Metrics,
                 disk: DiskSpace) -> None:
        self.settings, self.store, self.worker, self.metrics, self.disk = settings, store, worker, metrics, disk
        self.watch = LoopWatch()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.watch.start()
        log.info("health: http://%s:%d/healthz and /metrics", self.settings.host, self.port)

    async def stop(self) -> None:
        await self.watch.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def checks(self) -> dict[str, dict]:
        s = self.settings
        lag = self.watch.worst_lag()
        loop = {"ok": lag < s.loop_lag_limit_s, "worst_lag_s": round(max(lag, 0.0), 4)}
        age = self.worker.pulse_age()
        worker = {"ok": age < s.worker_stale_s, "last_seen_s": round(age, 2)}
        return {"loop": loop, "database": await self._database(), "worker": worker, "disk": self._disk()}

    async def _database(self) -> dict:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.store.check_readable(), timeout=self.settings.db_timeout_s)
        except (TimeoutError, sqlite3.Error) as exc:  # unreadable or stuck: unhealthy, said why
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        read_s = round(time.monotonic() - started, 4)
        if self.store.write_error is not None:  # locked, read-only, disk full: seen by the bot's own writes
            return {"ok": False, "read_s": read_s, "error": f"the last write failed: {self.store.write_error}"}
        return {"ok": True, "read_s": read_s}

    def _disk(self) -> dict:
        free = self.disk.free_mb()
        shortfall = self.disk.shortfall(free)
        return {"ok": shortfall is None, "free_mb": free, **({"error": shortfall} if shortfall else {})}

    async def healthz(self, request: web.Request) -> web.Response:
        checks = await self.checks()
        healthy = all(check["ok"] for check in checks.values())
        if not healthy:
            log.warning("health check failing: %s", json.dumps(checks))
        body = {"status": "ok" if healthy else "unhealthy", **checks}
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.set_queue(await self.store.count_by_status())
        self.metrics.set_engine(self.worker.in_flight, self.worker.engine_slots)
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
