"""Secrets: the real ``python -m bot run`` with all three secrets set to recognisable values,
Telegram and Discord pointed at local fakes and the LLM at a fake OpenAI, driven through
errors that put the secrets in front of the logger; no output line may contain one. Then the
error paths one at a time: a chat that refuses to start, a planner that falls back, an uncaught
exception; the CLI's own messages and Python's tracebacks are masked like the log."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import pytest

from bot.ops.logs import MASK, configure_logging, log_uncaught
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.test_cli import REPO, write_config

TELEGRAM_TOKEN = "918273645:AAE-telegram-canary-0123456789abcdef"
DISCORD_TOKEN = "MTIzNDU2Nzg5MDEy.discord-canary.Zyxwvutsrqponm"
OPENAI_KEY = "sk-openai-canary-a1b2c3d4e5f6a7b8"
SECRETS = (TELEGRAM_TOKEN, DISCORD_TOKEN, OPENAI_KEY)
CHAT, USER = 4242, 77
STORY = "/story Aldar Kose tricks a greedy merchant at the bazaar. He rides away across the steppe at sunset."


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_reaches_any_output_line(tmp_path: Path, figures, log_format: str) -> None:
    openai = FakeOpenAI().start()
    # OpenAI's real 401 names the key it was given; this one names it whole
    openai.script = [Reply(status=401, error=f"Incorrect API key provided: {OPENAI_KEY}.")] * 8
    async with FakeTelegram() as telegram:
        discord = FakeDiscord(token=DISCORD_TOKEN, heartbeat_interval_ms=500)
        await discord.start()
        try:
            # a failing delivery whose error echoes the request URL, token and all
            telegram.fail_next("sendPhoto", status=500, retry_after=None, times=2,
                               description=f"Internal Server Error at https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendPhoto")
            telegram.send_message(STORY, chat_id=CHAT, user_id=USER)
            env = {**{k: v for k, v in os.environ.items()}, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                   "TELEGRAM_TOKEN": TELEGRAM_TOKEN, "DISCORD_TOKEN": DISCORD_TOKEN, "OPENAI_API_KEY": OPENAI_KEY,
                   "TELEGRAM_BASE_URL": telegram.base_url, "TELEGRAM_BASE_FILE_URL": telegram.base_file_url,
                   "DISCORD_API_BASE": discord.api_base, "DISCORD_GATEWAY_URL": discord.gateway_url,
                   "OPENAI_BASE_URL": openai.base_url, "ALDAR__LOGGING__FORMAT": log_format,
                   "ALDAR__QUEUE__DELIVERY_RETRY_S": "0.2"}
            config = write_config(tmp_path, planner={"backend": "openai", "max_retries": 0})
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(config), "--log-level", "DEBUG", "run",
                cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            # drain both pipes while the bot runs: at DEBUG it writes more than a pipe holds, and a
            # full pipe would block its event loop on a log write
            readers = [asyncio.create_task(stream.read()) for stream in (process.stdout, process.stderr)]
            try:
                await telegram.wait_for(lambda fake: fake.calls_to("sendPhoto") and any(
                    c.status == 200 for c in fake.calls_to("sendPhoto")), timeout=90)
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=60)
                stdout, stderr = await asyncio.wait_for(asyncio.gather(*readers), timeout=10)
        finally:
            await discord.stop()
            openai.stop()
    output = stdout.decode("utf-8", "replace") + stderr.decode("utf-8", "replace")
    lines = output.splitlines()
    leaks = [(secret[:12], line) for line in lines for secret in SECRETS if secret in line]
    figures(f"secrets ({log_format} logs)", f"{len(lines)} output lines at DEBUG, {len(leaks)} with a secret")
    assert leaks == []
    # the errors that carried the secrets really happened, and were logged masked
    assert len(openai.requests) >= 1 and "***" in output
    assert "delivery failed" in output
    assert sum(1 for c in telegram.calls_to("sendPhoto") if c.status == 500) == 2


# -- error paths: a chat that refuses to start, a planner that falls back, an uncaught exception --

async def run_until_exit(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """``python -m bot ARGS`` to its end; its exit code and everything it wrote, stdout and stderr."""
    config = write_config(tmp_path)
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "DISCORD_TOKEN", "TELEGRAM_TOKEN")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "--log-level", "DEBUG", *args, cwd=REPO,
        env={**base, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **env}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, stdout.decode("utf-8", "replace") + stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("answer", [401, 404])
async def test_a_rejected_telegram_token_is_reported_without_it(tmp_path: Path, answer: int) -> None:
    """python-telegram-bot names the token whole in its InvalidToken ("The token `…` was rejected by
    the server"), on a 401 and also on a 404 from a wrong TELEGRAM_BASE_URL with a good token."""
    async with FakeTelegram() as telegram:
        if answer == 401:
            telegram.fail_next("getMe", status=401, description="Unauthorized", retry_after=None)
            base_url = telegram.base_url
        else:
            base_url = f"{telegram.base}/no-such-api/bot"  # the fake answers 404 there, like a wrong host path
        code, output = await run_until_exit(tmp_path, {"TELEGRAM_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_BASE_URL": base_url},
                                            "run")
        if answer == 401:
            assert [c.status for c in telegram.calls_to("getMe")] == [401]
    assert code == 2
    assert "error: telegram: could not start: InvalidToken: The token `***` was rejected" in output
    assert "Check TELEGRAM_TOKEN, and TELEGRAM_BASE_URL or [telegram] base_url if set" in output
    assert TELEGRAM_TOKEN not in output


async def test_a_refused_discord_login_is_reported_without_the_token(tmp_path: Path) -> None:
    """discord.py's LoginFailure does not echo the token today; this keeps it so, error path and all."""
    discord = FakeDiscord(token="MTExMTExMTExMTEx.the-token-discord-knows.abcdefghij")
    await discord.start()
    try:
        code, output = await run_until_exit(tmp_path, {
            "DISCORD_TOKEN": DISCORD_TOKEN, "DISCORD_API_BASE": discord.api_base,
            "DISCORD_GATEWAY_URL": discord.gateway_url}, "run")
        assert [c.status for c in discord.calls_to("GET", r"/users/@me")] == [401]
    finally:
        await discord.stop()
    assert code == 2
    assert "error: discord: could not start: LoginFailure" in output
    assert DISCORD_TOKEN not in output


async def test_a_planner_fallback_note_is_printed_without_the_key(tmp_path: Path) -> None:
    """``plan`` prints why it planned offline: the OpenAI error, whose 401 text names the key."""
    openai = FakeOpenAI().start()
    openai.script = [Reply(status=401, error=f"Incorrect API key provided: {OPENAI_KEY}.")] * 8
    try:
        code, output = await run_until_exit(
            tmp_path, {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai.base_url},
            "plan", "Aldar Kose tricks a greedy merchant at the bazaar.", "--planner", "openai")
    finally:
        openai.stop()
    assert code == 0 and len(openai.requests) >= 1
    assert "note: planned offline because the openai planner failed" in output and MASK in output
    assert OPENAI_KEY not in output


async def test_a_secret_in_the_wrong_variable_is_masked_in_the_config_error(tmp_path: Path) -> None:
    """A config error echoes the refused value; when that is a token pasted into the wrong
    variable, the error is still printed masked, before any config (and its mask) exists."""
    code, output = await run_until_exit(tmp_path, {"TELEGRAM_TOKEN": TELEGRAM_TOKEN,
                                                   "ALDAR__ENGINE__STEPS": TELEGRAM_TOKEN}, "plan", "Aldar Kose rides")
    assert code == 2 and f"engine.steps = '{MASK}'" in output
    assert TELEGRAM_TOKEN not in output


@pytest.fixture
def process_hooks(monkeypatch):
    """Undo what ``log_uncaught`` and ``configure_logging`` change in this (pytest's) process."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    yield
    logging.captureWarnings(False)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_uncaught_exceptions_and_warnings_are_logged_masked(process_hooks) -> None:
    """What Python would print itself (a traceback in the main thread or another, a warning) goes
    through the log's mask instead."""
    stream = io.StringIO()
    configure_logging("INFO", "text", SECRETS, stream=stream)
    log_uncaught()
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe failed")
    except ConnectionError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    thread = threading.Thread(target=_fail_with, args=(DISCORD_TOKEN,), name="leaky")
    thread.start()
    thread.join()
    warnings.warn(f"key {OPENAI_KEY} looks old", UserWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "uncaught ConnectionError" in lines[0] and "uncaught RuntimeError in thread leaky" in lines[1]
    assert "looks old" in lines[2] and all(line.count(MASK) >= 1 for line in lines)
    assert not [line for line in lines for secret in SECRETS if secret in line]


def _fail_with(secret: str) -> None:
    raise RuntimeError(f"token {secret} refused")
