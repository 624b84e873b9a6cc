"""Boards to export: drawn by the preview renderer (fast, no models) into a temp folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.build import build_engine
from engine.settings import EngineSettings, RenderSettings
from engine.storyboard import BoardRequest

# A story with a quoted line, a Kazakh and a Russian sentence: what the exports must carry as text.
STORY = ('Aldar Kose meets a greedy bai at the bazaar. The bai shouts: "Give me back my horse!" '
         "Алдар Көсе күліп, атқа мінеді. Бай кричит ему вслед. Aldar Kose rides across the steppe at sunset. "
         "The bai sits alone by the cold pot.")

BoardMaker = Callable[..., Path]


@pytest.fixture(scope="module")
def make_board(tmp_path_factory) -> BoardMaker:
    """``make_board(frames=6, width=256, height=256, story=STORY, seed=0)``: a finished board folder."""
    made: dict[tuple, Path] = {}

    def make(frames: int = 6, width: int = 256, height: int = 256, story: str = STORY, seed: int = 0) -> Path:
        key = (frames, width, height, story, seed)
        if key not in made:
            folder = tmp_path_factory.mktemp("board")
            engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview", width=width, height=height)))
            engine.run(BoardRequest(story, frames=frames, seed=seed), folder)
            made[key] = folder
        return made[key]

    return make
