"""Prompt budget: how much of each shot reaches SDXL's two 77-token text encoders.

Over the sample stories (../shared/stories) at every shot count from 6 to 10, with the offline
planner, and over any plans given with ``--plans`` (JSON as ``python -m bot plan`` prints it,
e.g. plans an LLM made on a machine with a key: this box has no LLM to ask), prints:

* the share of shots whose prompt 1 and prompt 2 fit without a cut;
* the mean tokens left per encoder after fitting (77 minus what the fitted text takes);
* which parts were cut, most often first.

Tokens are counted with OpenAI's CLIP tokenizer, built offline from the BPE file clip-anytorch
ships (SDXL's second encoder, OpenCLIP bigG, uses the same vocabulary). Prompts are built with
the default ``[prompt]`` settings, as ``StoryEngine`` builds them (``build_prompt`` then
``fit_prompt``).

    python bench/prompt_budget.py [--plans plan1.json plan2.json ...] [--counts 6 7 8 9 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.planning.offline.planner import OfflinePlanner  # noqa: E402
from engine.rendering.prompts import CLIP_TOKEN_BUDGET, build_prompt, fit_prompt  # noqa: E402
from engine.settings import PlannerSettings, PromptSettings  # noqa: E402
from engine.shots import ShotList, with_hero_look  # noqa: E402
from tests.tiny_models import real_clip_tokenizer  # noqa: E402

STORIES = REPO.parent / "shared" / "stories"


def offline_plans(counts: list[int]) -> list[ShotList]:
    planner = OfflinePlanner(PlannerSettings())
    return [planner.plan(path.read_text(encoding="utf-8"), shots=count)
            for path in sorted(STORIES.glob("*.txt")) for count in counts]


def given_plans(paths: list[Path]) -> list[ShotList]:
    return [ShotList.model_validate(json.loads(path.read_text(encoding="utf-8"))) for path in paths]


def measure(plans: list[ShotList], count_tokens) -> dict:
    settings = PromptSettings()
    fits_1 = fits_2 = shots = 0
    left_1: list[int] = []
    left_2: list[int] = []
    cut: Counter[str] = Counter()
    for plan in plans:
        plan = with_hero_look(plan, settings.character)
        for shot in plan.shots:
            fitted = fit_prompt(build_prompt(shot, settings, plan), count_tokens, count_tokens)
            shots += 1
            fits_1 += not any(d.prompt == 1 for d in fitted.dropped)
            fits_2 += not any(d.prompt == 2 for d in fitted.dropped)
            left_1.append(CLIP_TOKEN_BUDGET - count_tokens(fitted.positive))
            left_2.append(CLIP_TOKEN_BUDGET - count_tokens(fitted.positive_2))
            cut.update(f"prompt {d.prompt}: {d.part.split(':')[0]}" for d in fitted.dropped)
    return {"plans": len(plans), "shots": shots, "fits_1": fits_1 / shots, "fits_2": fits_2 / shots,
            "left_1": statistics.mean(left_1), "left_2": statistics.mean(left_2), "cut": cut}


def report(name: str, figures: dict) -> None:
    print(f"{name}: {figures['plans']} plans, {figures['shots']} shots")
    print(f"  prompt 1 (CLIP ViT-L) fits uncut: {figures['fits_1']:6.1%}   mean tokens left {figures['left_1']:5.1f}")
    print(f"  prompt 2 (OpenCLIP bigG) fits uncut: {figures['fits_2']:6.1%}   mean tokens left {figures['left_2']:5.1f}")
    cut = ", ".join(f"{part} {n}" for part, n in figures["cut"].most_common()) or "nothing"
    print(f"  cut most often: {cut}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", nargs="*", type=Path, default=[], help="plan JSON files (python -m bot plan)")
    parser.add_argument("--counts", nargs="*", type=int, default=[6, 7, 8, 9, 10], help="offline shot counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = real_clip_tokenizer(Path(folder))

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    offline = measure(offline_plans(args.counts), count_tokens)
    report(f"offline planner, sample stories x {args.counts} shots", offline)
    if args.plans:
        report("given plans", measure(given_plans(args.plans), count_tokens))
    else:
        print("given plans: none (--plans takes plans an LLM made; this machine has no LLM to ask)")
    print(f"RESULT prompt_budget: offline plans fit uncut: prompt 1 {offline['fits_1']:.1%}, "
          f"prompt 2 {offline['fits_2']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
