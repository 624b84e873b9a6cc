"""Secrets: the real ``python -m bot run`` with all three secrets set to recognisable values,
Telegram and Discord pointed at local fakes and the LLM at a fake OpenAI, driven through
errors that put the secrets in front of the logger; no output line may contain one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

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
