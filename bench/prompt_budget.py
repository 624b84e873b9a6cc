"""Prompt budget: how much of each shot reaches SDXL's two 77-token text encoders.

Over the sample stories (../shared/stories) at every shot count from 6 to 10, with both
planners, and over any plans given with ``--plans`` (JSON as ``python -m bot plan`` prints it,
e.g. plans an LLM made on a machine with a key), prints, per row:

* the share of shots whose prompt 1 and prompt 2 fit without a cut;
* the mean tokens left per encoder after fitting (77 minus what the fitted text takes);
* which parts were cut, most often first.

Tokens are counted with OpenAI's CLIP tokenizer, built offline from the BPE file clip-anytorch
ships (SDXL's second encoder, OpenCLIP bigG, uses the same vocabulary). Prompts are built with
the default ``[prompt]`` settings, as ``StoryEngine`` builds them (``build_prompt`` then
``fit_prompt``).

The rows:

* ``offline planner``: what ``OfflinePlanner`` plans for each story and shot count.
* ``llm (worst case after repair, fake server)``: the LLM planner's worst case, not its typical
  output. This machine has no LLM to ask, so instead of guessing what GPT-4 would write, the
  row runs the real LLM planner code path (``OpenAIPlanner``: the openai SDK, structured
  output, ``repair_plan``) against the local fake OpenAI-compatible server
  (``tests/fakes/openai_server.py``), scripted, for each story and shot count, with the largest
  plan the schema and the repair let through: ``MAX_CAST`` cast members (Aldar Kose included)
  and ``MAX_PLACES`` places, every free text (title, names, looks, description, caption,
  action, emotion, ``MAX_EXTRAS`` characters and props, the dialogue line) written longer
  than its limit so that the repair clamps it to exactly that limit, and every shot naming the
  whole cast: the odd shots have Aldar Kose with everyone else present (prompt 2's worst
  case), the even ones are about the others without him (the subject of prompt 1 is then the
  first one's look, never cut). The enum fields (pose, framing, angle, time of day) take the
  value whose prompt text is the longest in tokens. All limits are read from the engine's
  constants, and the repaired plans are checked to be at those limits before they are
  measured. The texts are plain English look phrases of the kind the planner's prompt asks for
  (the phrases of its example looks and of ``[prompt] character``), so a look of ``WRITTEN_LOOK_CHARS``
  characters is as many tokens as such words make; text built to be token-dense (short words,
  punctuation) would be worse. Real LLM plans can still be measured with ``--plans``.
* ``given plans``: the ``--plans`` files, when there are any.

    python bench/prompt_budget.py [--plans plan1.json plan2.json ...] [--counts 6 7 8 9 10]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.limits import MAX_FRAMES, MIN_FRAMES  # noqa: E402
from engine.planning import llm  # noqa: E402
from engine.planning.offline.planner import OfflinePlanner  # noqa: E402
from engine.rendering.prompts import CLIP_TOKEN_BUDGET, KEPT, Part, build_prompt, fit_prompt  # noqa: E402
from engine.settings import PlannerSettings, PromptSettings  # noqa: E402
from engine.shots import (  # noqa: E402
    CAMERA_ANGLES,
    DIALOGUE_CHARS,
    FRAMINGS,
    HERO_ID,
    WRITTEN_LOOK_CHARS,
    NAME_CHARS,
    POSES,
    SETTINGS,
    TIMES_OF_DAY,
    Shot,
    ShotList,
    with_hero_look,
)
from tests.tiny_models import real_clip_tokenizer  # noqa: E402

STORIES = REPO.parent / "shared" / "stories"
LLM_ROW = "llm (worst case after repair, fake server)"
OVERSHOOT = 12  # characters past each limit the scripted reply writes, for the repair to clamp
# what the worst-case texts are made of: the phrases of the planner's own example looks and of the hero's look
LOOK_PHRASES = [phrase.strip() for text in (llm.CAST_LOOK_EXAMPLE, llm.PLACE_LOOK_EXAMPLE, PromptSettings().character)
                for phrase in text.split(",")]


def offline_plans(counts: list[int]) -> list[ShotList]:
    planner = OfflinePlanner(PlannerSettings())
    return [planner.plan(path.read_text(encoding="utf-8"), shots=count)
            for path in sorted(STORIES.glob("*.txt")) for count in counts]


# -- the LLM planner's worst case ---------------------------------------------------------------


def filler(limit: int, start: int) -> str:
    """Look phrases, comma-separated, ``OVERSHOOT`` characters longer than ``limit``, for the
    repair to clamp; ``start`` picks the order (a rotation of the phrases, reversed every other
    round)."""
    rotation = start % len(LOOK_PHRASES)
    order = LOOK_PHRASES[rotation:] + LOOK_PHRASES[:rotation]
    if start // len(LOOK_PHRASES) % 2:
        order.reverse()
    text, i = order[0], 1
    while len(text) < limit + OVERSHOOT:
        text, i = f"{text}, {order[i % len(order)]}", i + 1
    return _not_cut_at_a_space(text, limit)


def distinct_fillers(limit: int, count: int) -> list[str]:
    """``count`` fillers that still differ once clamped to ``limit``, so the repair merges none."""
    texts: list[str] = []
    seen: set[str] = set()
    start = 0
    while len(texts) < count:
        text = filler(limit, start)
        if (key := " ".join(text[: limit - 1].split()).casefold()) not in seen:
            seen.add(key)
            texts.append(text)
        start += 1
    return texts


def _padded(text: str, limit: int) -> str:
    """``text`` repeated until it is ``OVERSHOOT`` characters longer than ``limit``."""
    padded = text
    while len(padded) < limit + OVERSHOOT:
        padded += " " + text
    return _not_cut_at_a_space(padded, limit)


def _not_cut_at_a_space(text: str, limit: int) -> str:
    """``text`` with no space where the repair's clamp cuts it (it keeps ``limit - 1`` characters,
    right-stripped, then "…"), so the clamped text is exactly ``limit`` long."""
    return text[: limit - 2] + "s" + text[limit - 2:] if text[limit - 2].isspace() else text


def longest_enums(count_tokens) -> dict[str, str]:
    """For each enum field, the value whose prompt text is the longest in tokens (greedily, framing
    before the angle, since face bias turns some angles into "front" outside wide shots)."""
    settings = PromptSettings()
    shot = Shot(index=1, description="x", caption="x", action="x", setting=SETTINGS[0], framing=FRAMINGS[0],
                camera_angle=CAMERA_ANGLES[0], pose=POSES[0], emotion="x", time_of_day=TIMES_OF_DAY[0])
    for field, values in (("pose", POSES), ("framing", FRAMINGS), ("camera_angle", CAMERA_ANGLES),
                          ("time_of_day", TIMES_OF_DAY), ("setting", SETTINGS)):
        def tokens(value: str, shot: Shot = shot, field: str = field) -> int:
            prompt = build_prompt(shot.model_copy(update={field: value}), settings)
            return count_tokens(prompt.positive) + count_tokens(prompt.positive_2)

        shot = shot.model_copy(update={field: max(values, key=tokens)})
    return {field: getattr(shot, field) for field in ("pose", "framing", "camera_angle", "time_of_day", "setting")}


def worst_case_reply(story: str, count: int, enums: dict[str, str]) -> dict:
    """The largest plan of ``count`` shots the schema allows, every text over its limit."""
    others = list(range(HERO_ID + 1, HERO_ID + llm.MAX_CAST))
    cast_ids = [HERO_ID, *others]
    cast = [{"id": i, "name": name, "look": look} for i, name, look in
            zip(cast_ids, distinct_fillers(NAME_CHARS, len(cast_ids)), distinct_fillers(WRITTEN_LOOK_CHARS, len(cast_ids)))]
    places = [{"id": i, "name": name, "look": look} for i, name, look in
              zip(range(llm.MAX_PLACES), distinct_fillers(NAME_CHARS, llm.MAX_PLACES),
                  distinct_fillers(WRITTEN_LOOK_CHARS, llm.MAX_PLACES))]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", story) if s.strip()]
    shots = []
    for i in range(1, count + 1):
        with_hero = i % 2 == 1  # shot 1 always has him: frame 1 is the board's identity reference
        present = cast_ids if with_hero else others
        shots.append({
            "index": i,
            "description": filler(llm.MAX_DESCRIPTION, i),
            "caption": _padded(" ".join(sentences[i % len(sentences):] + sentences[:i % len(sentences)]),
                               llm.MAX_CAPTION),
            "action": filler(llm.MAX_ACTION, i + 1),
            **enums,
            "emotion": filler(llm.MAX_WORD, i + 2),
            "characters": [filler(llm.MAX_WORD, i + k) for k in range(llm.MAX_EXTRAS + 1)],
            "props": [filler(llm.MAX_WORD, i + 2 * k + 1) for k in range(llm.MAX_EXTRAS + 1)],
            "cast_ids": present,
            "place_id": places[(i - 1) % len(places)]["id"],
            "dialogue": {"speaker": present[0], "text": _padded(sentences[i % len(sentences)], DIALOGUE_CHARS)},
        })
    return {"title": filler(llm.MAX_TITLE, 0), "language": "en", "shot_count": count,
            "cast": cast, "places": places, "shots": shots}


def check_at_limits(plan: ShotList, count: int) -> None:
    """The repaired plan is the worst case: every text at its limit, the bible and the casts full."""
    def at(value: str, limit: int, where: str) -> None:
        if len(value) != limit:
            raise SystemExit(f"{LLM_ROW}: {where} is {len(value)} characters after repair, not {limit}")

    if (len(plan.shots), len(plan.cast), len(plan.places)) != (count, llm.MAX_CAST, llm.MAX_PLACES):
        raise SystemExit(f"{LLM_ROW}: the repaired plan has {len(plan.shots)} shots, {len(plan.cast)} cast "
                         f"members and {len(plan.places)} places, not {count}, {llm.MAX_CAST}, {llm.MAX_PLACES}")
    at(plan.title, llm.MAX_TITLE, "the title")
    for entry in (*plan.cast, *plan.places):
        at(entry.name, NAME_CHARS, f"id {entry.id}'s name")
        at(entry.look, WRITTEN_LOOK_CHARS, f"id {entry.id}'s look")
    for shot in plan.shots:
        where = f"shot {shot.index}"
        for field, limit in (("description", llm.MAX_DESCRIPTION), ("caption", llm.MAX_CAPTION),
                             ("action", llm.MAX_ACTION), ("emotion", llm.MAX_WORD)):
            at(getattr(shot, field), limit, f"{where} {field}")
        for field in ("characters", "props"):
            words = getattr(shot, field)
            if len(words) != llm.MAX_EXTRAS:
                raise SystemExit(f"{LLM_ROW}: {where} has {len(words)} {field}, not {llm.MAX_EXTRAS}")
            for word in words:
                at(word, llm.MAX_WORD, f"{where} {field}")
        expected = llm.MAX_CAST - (shot.index % 2 == 0)  # the even shots leave Aldar Kose out
        if len(shot.cast_ids) != expected or shot.place_id is None or shot.dialogue is None:
            raise SystemExit(f"{LLM_ROW}: {where} lost cast ids, its place or its line in the repair")
        at(shot.dialogue.text, DIALOGUE_CHARS, f"{where} dialogue")


def llm_worst_case_plans(counts: list[int], count_tokens) -> list[ShotList]:
    """Each sample story at each shot count, planned by ``OpenAIPlanner`` from a scripted worst-case
    reply of the fake server, and repaired by the planner as any reply is."""
    from tests.fakes.openai_server import FakeOpenAI, Reply, loopback_client

    enums = longest_enums(count_tokens)
    server = FakeOpenAI().start()
    try:
        # no second request after unusable output: it would get the fake's honest plan instead
        settings = PlannerSettings(backend="openai", base_url=server.base_url, output_retries=0, max_retries=0)
        planner = llm.OpenAIPlanner(settings, PromptSettings(), api_key="fake-key",
                                    fallback=OfflinePlanner(settings), client_factory=loopback_client)
        plans = []
        for path in sorted(STORIES.glob("*.txt")):
            story = path.read_text(encoding="utf-8")
            for count in counts:
                server.script = [Reply(content=json.dumps(worst_case_reply(story, count, enums)))]
                asked = len(server.requests)
                result = planner.make_plan(story, shots=count)
                if result.planner != "openai" or result.fallback_reason or len(server.requests) != asked + 1:
                    raise SystemExit(f"{LLM_ROW}: {path.name} at {count} shots did not come from the scripted "
                                     f"reply: {result.fallback_reason or result.planner}")
                check_at_limits(result.plan, count)
                plans.append(result.plan)
        return plans
    finally:
        server.stop()


def given_plans(paths: list[Path]) -> list[ShotList]:
    return [ShotList.model_validate(json.loads(path.read_text(encoding="utf-8"))) for path in paths]


def measure(plans: list[ShotList], count_tokens) -> dict:
    settings = PromptSettings()
    fits_1 = fits_2 = shots = 0
    left_1: list[int] = []
    left_2: list[int] = []
    cut: Counter[str] = Counter()
    over = 0  # shots whose never-cut parts alone are over 77 tokens: the encoder would cut them
    for plan in plans:
        plan = with_hero_look(plan, settings.character)
        for shot in plan.shots:
            fitted = fit_prompt(build_prompt(shot, settings, plan), count_tokens, count_tokens)
            shots += 1
            fits_1 += not any(d.prompt == 1 for d in fitted.dropped)
            fits_2 += not any(d.prompt == 2 for d in fitted.dropped)
            left_1.append(CLIP_TOKEN_BUDGET - count_tokens(fitted.positive))
            left_2.append(CLIP_TOKEN_BUDGET - count_tokens(fitted.positive_2))
            over += max(count_tokens(fitted.positive), count_tokens(fitted.positive_2)) > CLIP_TOKEN_BUDGET
            if any(Part(d.part, d.text).rank >= KEPT for d in fitted.dropped):  # the subject, the trigger
                raise AssertionError(f"a never-cut part was cut: {fitted.dropped}")
            cut.update(f"prompt {d.prompt}: {d.part.split(':')[0]}" for d in fitted.dropped)
    return {"plans": len(plans), "shots": shots, "fits_1": fits_1 / shots, "fits_2": fits_2 / shots,
            "left_1": statistics.mean(left_1), "left_2": statistics.mean(left_2), "cut": cut, "over": over}


def report(name: str, figures: dict) -> None:
    print(f"{name}: {figures['plans']} plans, {figures['shots']} shots")
    print(f"  prompt 1 (CLIP ViT-L) fits uncut: {figures['fits_1']:6.1%}   mean tokens left {figures['left_1']:5.1f}")
    print(f"  prompt 2 (OpenCLIP bigG) fits uncut: {figures['fits_2']:6.1%}   mean tokens left {figures['left_2']:5.1f}")
    cut = ", ".join(f"{part} {n}" for part, n in figures["cut"].most_common()) or "nothing"
    print(f"  cut most often: {cut}")
    if figures["over"]:
        print(f"  over 77 tokens with only never-cut parts left (the encoder cuts them): {figures['over']} shots")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", nargs="*", type=Path, default=[], help="plan JSON files (python -m bot plan)")
    parser.add_argument("--counts", nargs="*", type=int, default=[6, 7, 8, 9, 10],
                        help="shot counts to plan each sample story at, with both planners")
    args = parser.parse_args(argv)
    if not all(MIN_FRAMES <= count <= MAX_FRAMES for count in args.counts):
        parser.error(f"shot counts must be between {MIN_FRAMES} and {MAX_FRAMES}")
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = real_clip_tokenizer(Path(folder))

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    offline = measure(offline_plans(args.counts), count_tokens)
    report(f"offline planner, sample stories x {args.counts} shots", offline)
    worst = measure(llm_worst_case_plans(args.counts, count_tokens), count_tokens)
    report(f"{LLM_ROW}, sample stories x {args.counts} shots", worst)
    if args.plans:
        report("given plans", measure(given_plans(args.plans), count_tokens))
    else:
        print("given plans: none (--plans takes plans an LLM made; this machine has no LLM to ask)")
    print(f"RESULT prompt_budget: offline plans fit uncut: prompt 1 {offline['fits_1']:.1%}, "
          f"prompt 2 {offline['fits_2']:.1%}")
    # not "RESULT prompt_budget: ...", which bench/run_all.py reads the offline figures from
    print(f"RESULT prompt_budget ({LLM_ROW}): plans fit uncut: prompt 1 {worst['fits_1']:.1%}, "
          f"prompt 2 {worst['fits_2']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
