"""Fixtures of the Telegram tests: the local fake Bot API and a bot config pointed at it."""

from __future__ import annotations

import pytest

from bot.config import AppConfig, Secrets
from tests.fakes.telegram_server import FakeTelegram

MOD = 1003  # a moderator in every config made here


@pytest.fixture
async def fake():
    server = await FakeTelegram(max_poll_s=0.2).start()
    yield server
    await server.stop()


@pytest.fixture
def tg_config(make_config, fake):
    def _make(**sections) -> AppConfig:
        config = make_config(
            telegram={"base_url": fake.base_url, "base_file_url": fake.base_file_url, "edit_interval_s": 0.05,
                      "poll_timeout_s": 1, "rate_limit_retries": 2},
            roles={"moderators": [f"telegram:{MOD}"]},
            **sections,
        )
        return config.model_copy(update={"secrets": Secrets(telegram_token="123:TEST")})

    return _make
