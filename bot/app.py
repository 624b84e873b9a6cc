"""The composition root of the bot: config -> store -> engine -> service -> worker -> adapters.

This module (with ``bot/__main__.py``, which builds the one-shot CLI commands, and
``bot/render/arq_worker.py``, the GPU worker's process) is where the parts are put together.
Everything is built here once, at start-up: models load now, never at import and never per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from adapters.console import ConsoleAdapter, OneShotGateway
from adapters.discord_bot import DiscordAdapter
from adapters.telegram_bot import TelegramAdapter
from bot.chat_port import BoardDelivery, ChatGateway, JobUpdate
from bot.config import AppConfig
from bot.errors import StoryError
from bot.messages import text
from bot.jobs.runner import JobRunner, supervise
from bot.ops.health import HealthServer
from bot.ops.metrics import Metrics
from bot.ops.storage import DiskSpace
from bot.pictures import Upload
from bot.render.local import LocalEngine
from bot.render.port import EnginePort
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from bot.store.store import Store
from engine.build import build_engine
from engine.moderation import TermFilter
from engine.storyboard import StoryEngine

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0


class ChatRouter:
    """A ``ChatGateway`` that hands each update to the adapter of its platform."""

    def __init__(self) -> None:
        self._routes: dict[str, ChatGateway] = {}

    def register(self, platform: str, gateway: ChatGateway) -> None:
        self._routes[platform] = gateway

    def _route(self, platform: str) -> ChatGateway:
        try:
            return self._routes[platform]
        except KeyError:
            raise LookupError(f"no adapter is running for platform {platform!r}") from None

    async def notify(self, update: JobUpdate) -> None:
        await self._route(update.platform).notify(update)

    async def deliver(self, delivery: BoardDelivery) -> None:
        await self._route(delivery.platform).deliver(delivery)


@dataclass
class App:
    config: AppConfig
    store: Store
    engine: StoryEngine | None  # None with engine.backend = "arq": the GPU workers hold it
    port: EnginePort
    service: StoryService
    worker: JobRunner
    router: ChatRouter
    executor: ThreadPoolExecutor
    metrics: Metrics
    adapters: list[str] = field(default_factory=list)
    health: HealthServer | None = None


@contextlib.asynccontextmanager
async def open_app(config: AppConfig) -> AsyncIterator[App]:
    """Build every long-lived part once, and close them in reverse order."""
    store = await Store.open(config.storage.database)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    port: EnginePort | None = None
    try:
        engine, port = await _build_port(config, executor)
        router = ChatRouter()
        service = StoryService(store, config, modes_off=port.modes_off(), picture_use=port.picture_use)
        metrics = Metrics()
        metrics.started(engine.models.loads if engine is not None and engine.models else 0)
        worker = JobRunner(store=store, port=port, gateway=router, config=config, status_refs=service.status_refs,
                           metrics=metrics)
        yield App(config, store, engine, port, service, worker, router, executor, metrics)
    finally:
        if port is not None:
            await port.close()
        executor.shutdown(wait=True, cancel_futures=True)
        await store.close()


async def _build_port(config: AppConfig, executor: ThreadPoolExecutor) -> tuple[StoryEngine | None, EnginePort]:
    """``engine.backend``: the engine in this process (models load now), or GPU workers through Redis.

    The engine is built on its own thread, the one that renders: a compiled UNet's warm-up records
    its CUDA graphs there (they are per thread), and the event loop is not held while models load."""
    if config.engine.backend == "arq":
        from bot.render.arq_client import ArqEngine

        return None, ArqEngine(config.arq, config.redis_url(), config.engine_settings())
    build = functools.partial(build_engine, config.engine_settings(), openai_api_key=config.secrets.openai_key(),
                              banned=TermFilter(config.story.banned_terms))  # the LLM's plan meets the story's rule
    engine = await asyncio.get_running_loop().run_in_executor(executor, build)
    return engine, LocalEngine(engine, executor)


def startup_line(app: App, adapter_reason: str) -> str:
    return (
        f"start-up: {app.port.describe()}; "
        f"adapters={','.join(app.adapters)} ({adapter_reason}); database={app.config.storage.database}"
    )


def choose_adapters(config: AppConfig) -> tuple[list[str], str]:
    """Every chat adapter whose token is set; the console when there is none."""
    tokens = (("discord", config.secrets.discord_token), ("telegram", config.secrets.telegram_token))
    chosen = [name for name, token in tokens if token]
    reasons = [f"{name.upper()}_TOKEN set" for name in chosen]
    if chosen:
        return chosen, "; ".join(reasons)
    return ["console"], "; ".join(reasons) or "no DISCORD_TOKEN or TELEGRAM_TOKEN set"


async def run_bot(config: AppConfig, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                  stop: asyncio.Event | None = None) -> None:
    """``python -m bot run``: every adapter whose token is set, else the console. Runs until
    SIGINT/SIGTERM, the console's end of input, or ``stop`` (for embedding and tests)."""
    async with open_app(config) as app:
        app.adapters, reason = choose_adapters(config)
        stop = stop or asyncio.Event()
        _install_signal_handlers(stop)
        chats = _build_chats(app, config, stdin=stdin, stdout=stdout)
        for chat in chats:
            app.router.register(chat.platform, chat)
        log.info(startup_line(app, reason))
        started: list = []
        try:
            app.health = await _start_health(app)
            for chat in chats:
                if hasattr(chat, "start"):
                    await _start(chat)
                    started.append(chat)
            await app.worker.start_up()
            worker_task = supervise(asyncio.create_task(app.worker.run(stop)), "worker")
            worker_task.add_done_callback(lambda _: stop.set())
            console_task = None
            if "console" in app.adapters:
                console_task = supervise(asyncio.create_task(chats[0].run()), "console")
                console_task.add_done_callback(lambda _: stop.set())
            await stop.wait()
            await _shut_down(app, worker_task, console_task)
        finally:
            for chat in reversed(started):
                await chat.stop()
            if app.health is not None:
                await app.health.stop()


class AdapterStartError(RuntimeError):
    """A chat adapter could not connect at start-up (bad token, unreachable server)."""


async def _start_health(app: App) -> HealthServer | None:
    settings = app.config.observability
    if not settings.enabled:
        return None
    server = HealthServer(settings, store=app.store, worker=app.worker, metrics=app.metrics,
                          disk=DiskSpace.of(app.config.storage))
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise AdapterStartError(f"observability: cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
                                "set [observability] port, or enabled = false") from exc
    return server


async def _start(chat) -> None:
    try:
        await chat.start()
    except Exception as exc:  # reported once, with the platform, instead of a library traceback
        log.debug("%s adapter failed to start", chat.platform, exc_info=exc)
        raise AdapterStartError(f"{chat.platform}: could not start: {type(exc).__name__}: {exc}") from exc


def _build_chats(app: App, config: AppConfig, *, stdin: TextIO, stdout: TextIO) -> list:
    if app.adapters == ["console"]:
        return [ConsoleAdapter(app.service, user_id=config.console.user_id, lang=config.console.language,
                               stdin=stdin, stdout=stdout)]
    chats = []
    if "discord" in app.adapters:
        chats.append(DiscordAdapter(app.service, config.discord, config.secrets.discord_token.get_secret_value()))
    if "telegram" in app.adapters:
        token = config.secrets.telegram_token.get_secret_value()
        chats.append(TelegramAdapter(app.service, config.telegram, token))
    return chats


async def _shut_down(app: App, worker_task: asyncio.Task, console_task: asyncio.Task | None) -> None:
    log.info("shutting down")
    app.worker.request_shutdown()
    if console_task is not None:
        console_task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(worker_task), timeout=SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.warning("the job in hand did not stop within %.0fs; its lease will expire and it resumes", SHUTDOWN_GRACE_S)
        worker_task.cancel()
    if console_task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await console_task


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows loops and loops outside the main thread have no signal handlers: Ctrl-C still works there
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_story(
    config: AppConfig, story: str, options: StoryOptions, out_dir: Path | None, *, progress: TextIO = sys.stderr,
    picture: Upload | None = None,
) -> BoardDelivery:
    """``python -m bot story``: one board through the real service, queue and engine."""
    async with open_app(config) as app:
        gateway = OneShotGateway(progress=progress)
        app.router.register(gateway.platform, gateway)
        app.adapters = [gateway.platform]
        log.info(startup_line(app, "one-shot story from the command line"))
        requester = Requester(platform=gateway.platform, user_id=config.console.user_id, chat_id="cli",
                              locale=config.console.language)
        submitted = await app.service.submit(StoryRequest(requester, story, options, out_dir=out_dir,
                                                          picture=picture))
        for key in submitted.notes:  # what the picture will not do here: said where progress is shown
            progress.write(text(key, config.console.language) + "\n")
        while gateway.delivered(submitted.job_id) is None:
            if not await app.worker.run_once():
                job = await app.store.get_job(submitted.job_id)
                if job.status in ("failed", "cancelled"):
                    raise StoryError("job_failed", job=job.id, error=f"{job.error_type}: {job.error_message}")
                if job.status == "done":
                    await app.worker.deliver_pending()
                    continue
                await asyncio.sleep(config.queue.poll_interval_s)
        return gateway.delivered(submitted.job_id)
