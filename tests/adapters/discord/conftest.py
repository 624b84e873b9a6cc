"""Fixtures of the Discord tests: the local fake Discord (REST API + gateway) and a bot config
pointed at it."""

from __future__ import annotations

import logging

import pytest

from bot.config import AppConfig, Secrets
from tests.adapters.discord.rig import TOKEN
from tests.fakes.discord_server import GUILD_ID, MOD_ROLE_ID, FakeDiscord


@pytest.fixture
async def fake():
    server = FakeDiscord(heartbeat_interval_ms=200)
    await server.start()
    server.point_discord_here()  # remembers discord.py's own endpoints, restored below
    yield server
    server.restore()
    await server.stop()


@pytest.fixture
def dc_config(make_config, fake):
    def _make(**sections) -> AppConfig:
        discord_section = {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "guild_ids": [str(GUILD_ID)],
                           "edit_interval_s": 0.05, "guild_ready_timeout_s": 0.05,
                           **sections.pop("discord", {})}
        config = make_config(discord=discord_section, roles={"moderator_roles": [f"discord:{MOD_ROLE_ID}"]},
                             **sections)
        return config.model_copy(update={"secrets": Secrets(discord_token=TOKEN)})

    return _make


@pytest.fixture
def errors(caplog):
    """Every ERROR logged while the bot ran: a test that expects none asserts it is empty."""
    caplog.set_level(logging.ERROR)
    return lambda: [r for r in caplog.records if r.levelno >= logging.ERROR]
