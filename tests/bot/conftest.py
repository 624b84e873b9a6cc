"""Fixtures for the bot's tests: a worker rig on a real store."""

from __future__ import annotations

import pytest

from bot.store.store import Store
from engine.build import build_engine
from tests.helpers import RecordingGateway, Rig


@pytest.fixture
async def rig_factory(make_config):
    """Rigs on real stores; each is closed after the test (an open store's thread would keep the
    test process from exiting)."""
    made = []

    async def _make(gateway=None, story_engine=None, **sections):
        config = make_config(**sections)
        store = await Store.open(config.storage.database)
        story_engine = story_engine or build_engine(config.engine_settings())
        rig = Rig(config, store, story_engine, gateway or RecordingGateway())
        made.append(rig)
        return rig

    yield _make
    for rig in made:
        rig.executor.shutdown(wait=True)
        await rig.store.close()
