"""Pick the planner and renderer for this machine, and say why.

``auto`` means: the best backend this machine can run. The reasons end up in the start-up
log line and in every report.json, so nobody has to guess what drew a board.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from engine.plan import OfflinePlanner
from engine.render import PreviewRenderer
from engine.settings import EngineSettings, PlannerSettings, RenderSettings
from engine.storyboard import StoryEngine
from engine.validate import NullValidator


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_planner(settings: PlannerSettings, *, openai_key_set: bool) -> Choice:
    if settings.backend == "offline":
        return Choice("offline", "configured: planner.backend = offline")
    if openai_key_set:
        return Choice("offline", "auto: OPENAI_API_KEY is set, but this build ships only the offline planner")
    return Choice("offline", "auto: OPENAI_API_KEY is not set")


def choose_renderer(settings: RenderSettings) -> Choice:
    if settings.renderer == "preview":
        return Choice("preview", "configured: engine.renderer = preview")
    if importlib.util.find_spec("torch") is None:
        return Choice("preview", "auto: torch is not installed, so no GPU renderer can run")
    return Choice("preview", "auto: this build ships only the preview renderer")


def build_engine(settings: EngineSettings, *, openai_key_set: bool) -> StoryEngine:
    """Choose and construct every engine component once; models load here, never at import."""
    planner_choice = choose_planner(settings.planner, openai_key_set=openai_key_set)
    renderer_choice = choose_renderer(settings.render)
    return StoryEngine(
        planner=OfflinePlanner(settings.planner),
        renderer=PreviewRenderer(delay_s=settings.render.preview_delay_s),
        validator=NullValidator(),
        settings=settings,
        reasons={"planner": planner_choice.reason, "renderer": renderer_choice.reason},
    )
