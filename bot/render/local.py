"""``engine.backend = "local"``: the engine in this process, on its one dedicated thread."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.render.port import Availability, ProgressSink, StopSignals
from engine.board_files import Storyboard
from engine.limits import MODES
from engine.rendering.base import ModeOff
from engine.storyboard import BoardRequest, PictureUse, StoryEngine


class LocalEngine:
    """The engine port over ``StoryEngine``: one job at a time, on the thread of ``executor``."""

    name = "local"

    def __init__(self, engine: StoryEngine, executor: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.executor = executor

    def describe(self) -> str:
        reasons = self.engine.reasons
        line = (f"planner={self.engine.planner.name} ({reasons.get('planner', '')}); "
                f"renderer={self.engine.renderer.name} ({reasons.get('renderer', '')})")
        if "ref_guided" in reasons:
            line += f"; ref-guided={reasons['ref_guided']}"
        if "gpu" in reasons:
            line += f"; gpu={reasons['gpu']}"
        return line

    async def availability(self) -> Availability:
        return Availability(slots=1)

    def modes_off(self) -> dict[str, ModeOff]:
        return {mode: off for mode in MODES if (off := self.engine.mode_off(mode)) is not None}

    def picture_use(self, mode: str) -> PictureUse:
        return self.engine.picture_use(mode)

    async def render(
        self, job_key: str, request: BoardRequest, out_dir: Path, *, on_progress: ProgressSink, stop: StopSignals
    ) -> Storyboard:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the engine thread's log lines carry the job id too
        return await loop.run_in_executor(
            self.executor, context.run, self._run, request, out_dir, on_progress, stop.any
        )

    def _run(self, request: BoardRequest, out_dir: Path, on_progress: ProgressSink,
             should_cancel: Callable[[], bool]) -> Storyboard:
        return self.engine.run(request, out_dir, on_progress=on_progress, should_cancel=should_cancel)

    async def close(self) -> None:
        return None
