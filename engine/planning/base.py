"""What every planner takes and promises: the ``Planner`` protocol, its ``PlanResult`` and ``PlanError``.

Two planners implement it: ``engine.planning.llm.OpenAIPlanner`` (an OpenAI-compatible model, with
the offline planner as its fallback) and ``engine.planning.offline.planner.OfflinePlanner``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.shots import ShotList


class PlanError(ValueError):
    """The story cannot be planned as asked (the user's fault: say why)."""


@dataclass(frozen=True)
class PlanResult:
    """A plan and how it came to be: which planner made it, why a fallback happened, and
    what was repaired (clamped counts, unknown poses...). report.json records all three."""

    plan: ShotList
    planner: str
    fallback_reason: str | None = None
    repairs: tuple[str, ...] = ()


@runtime_checkable
class Planner(Protocol):
    """Turns a story into a shot list."""

    name: str

    def make_plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> PlanResult:
        """Plan ``shots`` shots (or a natural count when None) for ``story``."""
        ...
