"""Helpers of the Discord tests: the bot running against the fake, and what it posted."""

from __future__ import annotations

from bot.config import AppConfig
from tests.fakes.discord_server import CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.helpers import bot_running

TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.GfAkEx.fake-bot-token-for-tests"


def running(config: AppConfig, fake: FakeDiscord):
    """The bot, once its commands are synced to the fake guild and its gateway is connected."""
    return bot_running(config, ready=lambda: fake.wait_for(lambda f: f.commands(GUILD_ID) and f.connected, timeout=15))


def boards(fake):
    """Messages that carry a storyboard image."""
    return [m for m in fake.messages(CHANNEL_ID) if any(name.startswith("grid.") for name in m.files)]
