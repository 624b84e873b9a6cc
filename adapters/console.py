"""Console chat: ``/story …`` lines on stdin, replies on stdout. For local use and tests.

Like every adapter it only translates: a line becomes a service call, a result or a
``StoryError`` becomes a line of text. At the end of input it waits until this console's
jobs are drawn and delivered, then returns, so ``echo '/story …' | python -m bot run`` works.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bot.chat_port import BoardDelivery, JobUpdate
from bot.commands import parse_job_id, parse_regen_args, parse_story_args
from bot.errors import BadRequest, StoryError
from bot.messages import text
from bot.pictures import Upload
from bot.service import Requester, StoryRequest, StoryService

log = logging.getLogger(__name__)


class ConsoleAdapter:
    platform = "console"

    def __init__(
        self,
        service: StoryService,
        *,
        user_id: str = "local",
        lang: str = "en",
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
        drain_poll_s: float = 0.1,
    ) -> None:
        self.service = service
        self.requester = Requester(platform=self.platform, user_id=user_id, chat_id="console", locale=lang)
        self.lang = lang
        self.stdin = stdin
        self.stdout = stdout
        self.drain_poll_s = drain_poll_s

    # -- input ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Answer lines until end of input, then wait for this console's outstanding jobs."""
        if _is_terminal(self.stdin):
            self._write(text("help", self.lang))
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=_read_lines, args=(self.stdin, loop, lines), name="console-stdin", daemon=True).start()
        while (line := await lines.get()) is not None:
            reply = await self.handle_line(line)
            if reply:
                self._write(reply)
        while await self.service.outstanding(self.platform):
            await asyncio.sleep(self.drain_poll_s)

    async def handle_line(self, line: str) -> str | None:
        """One input line -> one reply (None for a blank line)."""
        line = line.strip()
        if not line:
            return None
        command, _, args = line.partition(" ")
        handler = self._handlers().get(command.lower())
        try:
            if handler is None:
                raise BadRequest("err_unknown_command")
            return await handler(args.strip())
        except StoryError as exc:
            return exc.message(self.lang)
        except Exception:
            log.exception("console command failed: %s", command)
            return text("err_internal", self.lang)

    def _handlers(self):
        return {
            "/story": self._story,
            "/status": self._status,
            "/cancel": self._cancel,
            "/regen": self._regen,
            "/mystats": self._mystats,
            "/ban": self._ban,
            "/unban": self._unban,
            "/purge": self._purge,
            "/help": self._help,
            "/start": self._help,
        }

    async def _story(self, args: str) -> str:
        """``/story … [--character-image PATH]``: the console is the operator's own machine, so it
        alone may name a file; the chats send the picture itself."""
        path, args = _take_option(args, "--character-image")
        picture = Upload.of_bytes(await asyncio.to_thread(_read_file, path)) if path is not None else None
        story, options = parse_story_args(args)
        return (await self.service.submit(StoryRequest(self.requester, story, options, picture=picture))).text

    async def _status(self, args: str) -> str:
        job_id = parse_job_id(args) if args else None
        return (await self.service.status(self.requester, job_id)).text

    async def _cancel(self, args: str) -> str:
        return await self.service.cancel(self.requester, parse_job_id(args))

    async def _regen(self, args: str) -> str:
        job_id, frame = parse_regen_args(args)
        return (await self.service.regenerate(self.requester, job_id, frame)).text

    async def _purge(self, args: str) -> str:
        return await self.service.purge(self.requester, parse_job_id(args))

    async def _mystats(self, args: str) -> str:
        return (await self.service.mystats(self.requester)).text

    async def _ban(self, args: str) -> str:
        target, _, reason = args.partition(" ")
        platform, user_id = _split_user(target)
        return await self.service.ban(self.requester, platform, user_id, reason.strip())

    async def _unban(self, args: str) -> str:
        platform, user_id = _split_user(args.strip())
        return await self.service.unban(self.requester, platform, user_id)

    async def _help(self, args: str) -> str:
        return text("help", self.lang)

    # -- output (ChatGateway) --------------------------------------------------------------------
    async def notify(self, update: JobUpdate) -> None:
        if update.stage not in ("validating", "step"):  # one line per batch is enough on a console
            self._write(update.text)

    async def deliver(self, delivery: BoardDelivery) -> None:
        self._write(f"{delivery.text}\n   grid: {delivery.grid_path}\n   report: {delivery.report_path}")

    def _write(self, message: str) -> None:
        self.stdout.write(message + "\n")
        self.stdout.flush()


class OneShotGateway:
    """The chat of ``python -m bot story``: a progress bar on a terminal, results kept in memory."""

    platform = "cli"

    def __init__(self, progress: TextIO = sys.stderr) -> None:
        self._progress = progress
        self._bar: tqdm | None = None
        self._delivered: dict[int, BoardDelivery] = {}

    def delivered(self, job_id: int) -> BoardDelivery | None:
        return self._delivered.get(job_id)

    async def notify(self, update: JobUpdate) -> None:
        if update.stage in ("rendering", "step") and update.total:
            if self._bar is None:
                self._bar = tqdm(total=update.total, desc=f"job {update.job_id}", unit="frame",
                                 file=self._progress, disable=None)
            self._bar.n = update.frame - 1
            self._bar.refresh()
        elif update.stage == "composing" and self._bar is not None:
            self._bar.n = self._bar.total
            self._bar.close()
            self._bar = None

    async def deliver(self, delivery: BoardDelivery) -> None:
        self._delivered[delivery.job_id] = delivery


def _split_user(target: str) -> tuple[str, str]:
    platform, sep, user_id = target.partition(":")
    if not sep or not platform or not user_id:
        raise BadRequest("err_unknown_user", user=target or "?")
    return platform, user_id


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _read_lines(stdin: TextIO, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue) -> None:
    """Runs on a daemon thread: blocking reads never touch the event loop."""
    try:
        for line in stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(lines.put_nowait, None)


def _take_option(args: str, name: str) -> tuple[str | None, str]:
    """The value of ``name VALUE`` (or ``name=VALUE``) and the arguments without it."""
    words = args.split()
    for i, word in enumerate(words):
        if word == name or word.startswith(name + "="):
            value = word.partition("=")[2] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            if not value:
                raise BadRequest("err_picture_file", path="")
            rest = words[:i] + words[i + (1 if "=" in word else 2):]
            return value, " ".join(rest)
    return None, args


def _read_file(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError:
        raise BadRequest("err_picture_file", path=path) from None
