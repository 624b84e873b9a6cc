"""Shared fixtures: configs in a temp dir, a real SQLite store, the sample stories.

Nothing here reaches the network: the hub is switched off, and every test builds what
it needs locally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bot.config import AppConfig  # noqa: E402
from bot.store import Store  # noqa: E402


def stories_dir() -> Path:
    """The shared sample stories: ../shared/stories beside the repo (CI and dev), or $STORIES_DIR."""
    if os.environ.get("STORIES_DIR"):
        return Path(os.environ["STORIES_DIR"])
    return REPO.parent / "shared" / "stories"


@pytest.fixture
def stories() -> dict[str, str]:
    folder = stories_dir()
    found = {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}
    assert found, f"no sample stories in {folder}"
    return found


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., AppConfig]:
    """An AppConfig writing into tmp_path, with small frames; sections overridable by dict."""

    def _make(**sections: dict) -> AppConfig:
        data: dict = {
            "storage": {"database": tmp_path / "bot.sqlite3", "outputs": tmp_path / "outputs"},
            "engine": {"width": 128, "height": 128},
            "queue": {"poll_interval_s": 0.05},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return AppConfig.model_validate(data)

    return _make


@pytest.fixture
def config(make_config) -> AppConfig:
    return make_config()


@pytest.fixture
async def store(tmp_path: Path):
    opened = await Store.open(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()
