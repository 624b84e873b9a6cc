"""/metrics and /healthz scraped over HTTP while a real job runs; one-line, masked, job-tagged logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sqlite3

import aiohttp
import pytest

from bot.app import AdapterStartError, _start_health, open_app
from bot.ops.logs import MASK, configure_logging, job_context
from bot.service import StoryOptions, StoryRequest
from tests.helpers import ALICE, WORKER_STORY, RecordingGateway


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            got = ",".join(sorted(part for part in (match.group(2) or "").split(",") if part))
            if got == want:
                return float(match.group(3))
    return None


async def scrape(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_metrics_and_health_while_a_job_runs(make_config, captured_logs) -> None:
    configure_logging("INFO", "text", [], stream=captured_logs)
    config = make_config(engine={"width": 96, "height": 96, "preview_delay_s": 0.25}, validation={"max_retries": 0})
    async with open_app(config) as app:
        gateway = RecordingGateway()
        app.router.register("test", gateway)
        server = await _start_health(app)
        stop = asyncio.Event()
        try:
            await app.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=4, seed=1)))
            worker = asyncio.create_task(app.worker.run(stop))

            async def running() -> bool:
                _, text = await scrape(server.port, "/metrics")
                return sample(text, "aldar_queue_jobs", status="running") == 1.0

            await wait_for(running)
            status, body = await scrape(server.port, "/healthz")
            health = json.loads(body)
            assert status == 200 and health["status"] == "ok", health
            assert health["worker"]["ok"] and health["database"]["ok"] and health["loop"]["ok"]
            await wait_for(lambda: asyncio.sleep(0, bool(gateway.deliveries)))
            _, text = await scrape(server.port, "/metrics")
        finally:
            stop.set()
            await worker
            await server.stop()
    assert sample(text, "aldar_queue_jobs", status="done") == 1.0
    assert sample(text, "aldar_queue_jobs", status="running") == 0.0
    assert sample(text, "aldar_jobs_total", platform="test", outcome="done") == 1.0
    assert sample(text, "aldar_stage_seconds_count", stage="render") == 4.0  # one per frame drawn
    assert sample(text, "aldar_stage_seconds_count", stage="plan") == 1.0
    assert sample(text, "aldar_stage_seconds_count", stage="deliver") == 1.0
    assert sample(text, "aldar_stage_seconds_sum", stage="render") >= 4 * 0.25  # the preview's per-frame delay
    assert sample(text, "aldar_frame_retries_count") == 4.0
    assert sample(text, "aldar_model_loads_total") == 0.0  # the preview renderer loads nothing
    logs = captured_logs.getvalue()
    assert "engine.storyboard [job=1]: board done" in logs  # logged on the engine thread, tagged with the job


async def test_a_failed_job_counts_its_error_type(make_config, monkeypatch) -> None:
    config = make_config(engine={"width": 96, "height": 96})
    async with open_app(config) as app:
        app.router.register("test", RecordingGateway())

        def broken(*args, **kwargs):
            raise MemoryError("out of memory while drawing")

        monkeypatch.setattr(app.engine, "run", broken)
        await app.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=2, seed=1)))
        await app.worker.run(burst=True)
        text = app.metrics.exposition().decode()
    assert sample(text, "aldar_jobs_total", platform="test", outcome="failed") == 1.0
    assert sample(text, "aldar_engine_errors_total", type="MemoryError") == 1.0


async def test_health_fails_when_the_worker_is_silent(make_config) -> None:
    config = make_config(observability={"port": 0, "worker_stale_s": 1.0})
    async with open_app(config) as app:
        server = await _start_health(app)
        try:
            await asyncio.sleep(1.1)  # nobody runs the worker
            status, body = await scrape(server.port, "/healthz")
        finally:
            await server.stop()
    health = json.loads(body)
    assert status == 503 and health["status"] == "unhealthy"
    assert health["worker"]["ok"] is False and health["worker"]["last_seen_s"] >= 1.0
    assert health["database"]["ok"] and health["loop"]["ok"]


async def test_health_only_reads_and_reports_the_bots_own_failed_write(make_config) -> None:
    """Anyone who can reach the port may call /healthz: it must not take SQLite's write lock. A
    write lock held elsewhere shows up where it hurts, in the bot's own writes, and from there
    in /healthz until a write goes through again."""
    config = make_config(observability={"port": 0, "db_timeout_s": 0.2})
    async with open_app(config) as app:
        server = await _start_health(app)
        blocker = sqlite3.connect(config.storage.database, timeout=0)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            _, while_held = await scrape(server.port, "/healthz")  # a read: not held back
            await app.store._run("PRAGMA busy_timeout=50")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await app.store.touch_user("test", "alice", "Alice", None)
            status, body = await scrape(server.port, "/healthz")
            blocker.rollback()
            await app.store.touch_user("test", "alice", "Alice", None)
            _, after = await scrape(server.port, "/healthz")
        finally:
            blocker.close()
            await server.stop()
    health = json.loads(body)
    assert json.loads(while_held)["database"]["ok"] is True
    assert health["database"] == {**health["database"], "ok": False,
                                  "error": "the last write failed: OperationalError: database is locked"}
    assert status == 503
    assert json.loads(after)["database"]["ok"] is True  # a write went through: healthy again


async def test_a_taken_port_is_one_clear_start_up_error(make_config) -> None:
    config = make_config()
    async with open_app(config) as app:
        first = await _start_health(app)
        taken = config.model_copy(update={"observability": config.observability.model_copy(update={"port": first.port})})
        app.config = taken
        try:
            with pytest.raises(AdapterStartError, match=rf"observability: cannot listen on 127.0.0.1:{first.port}: "):
                await _start_health(app)
        finally:
            await first.stop()


async def test_observability_can_be_switched_off(make_config) -> None:
    config = make_config(observability={"enabled": False})
    async with open_app(config) as app:
        assert await _start_health(app) is None


# -- logs -------------------------------------------------------------------------------------------
@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


TOKEN = "7359124680:AAH-secret-telegram-token-value"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_everywhere_in_a_line(captured_logs, fmt) -> None:
    configure_logging("INFO", fmt, [TOKEN, "sk-openai-key-123456"], stream=captured_logs)
    log = logging.getLogger("adapters.telegram_bot")
    log.info("calling %s", f"https://api.telegram.org/bot{TOKEN}/getMe")
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{TOKEN}/sendPhoto failed, key sk-openai-key-123456")
    except ConnectionError:
        log.exception("delivery failed")
    out = captured_logs.getvalue()
    assert TOKEN not in out and "sk-openai-key-123456" not in out
    assert out.count(MASK) >= 3
    assert len(out.strip().splitlines()) == 2  # one line per event, the traceback folded in


def test_json_lines_carry_the_job_id(captured_logs) -> None:
    configure_logging("INFO", "json", [], stream=captured_logs)
    with job_context(42):
        logging.getLogger("bot.jobs.runner").info("job %d claimed", 42)
    logging.getLogger("bot.jobs.runner").info("idle")
    first, second = (json.loads(line) for line in captured_logs.getvalue().splitlines())
    assert first["job_id"] == 42 and first["msg"] == "job 42 claimed" and first["level"] == "INFO"
    assert second["job_id"] is None


def test_text_lines_carry_the_job_id_and_quiet_httpx(captured_logs) -> None:
    configure_logging("INFO", "text", [], stream=captured_logs)
    with job_context(7):
        logging.getLogger("engine.storyboard").info("board done")
    logging.getLogger("httpx").info("HTTP Request: POST https://example/bot123/getMe")
    out = captured_logs.getvalue()
    assert "engine.storyboard [job=7]: board done" in out
    assert "HTTP Request" not in out
