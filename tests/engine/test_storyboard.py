"""StoryEngine end to end: files on disk, pixels, report.json, retries, references, cancel and resume.

Every test runs the real offline planner, prompt builder, grid and report code at 128×128.
Doubles are used only where a test needs to see or script what the engine does: a renderer
that records each ``FrameRequest`` (and draws with the real preview renderer) and a
validator that returns identity scores from a list and fails loudly when it runs out.
"""

from __future__ import annotations

import contextvars
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from engine.board_files import FrameResult, Storyboard, load_saved_board, plan_from_report
from engine.build import build_engine
from engine.errors import Cancelled, InvalidRequest
from engine.identity.validate import Attempt, NullValidator
from engine.planning.offline.planner import OfflinePlanner
from engine.rendering.base import FrameRequest
from engine.rendering.preview import PreviewRenderer
from engine.rendering.prompts import build_prompt
from engine.settings import EngineSettings, PlannerSettings, PromptSettings, RenderSettings, ValidateSettings
from engine.shots import ShotList
from engine.storyboard import BoardRequest, ProgressEvent, StoryEngine, frame_seed

SIZE = 128
TRIGGER = "aldar_kose_man"
KAZAKH_LETTERS = "әғқңөұүһі"
STORY = (
    "Aldar Kose came to the bazaar at dawn. He told the greedy merchant a tale about a magic pot. "
    "The merchant laughed and gave him a horse. Aldar Kose rode away into the steppe at sunset."
)


# ------------------------------------------------------------------------------- doubles


class RecordingRenderer:
    """Draws with the real preview renderer and records every request and image it returns."""

    name = "recording"
    modes = ("simple", "ref-guided")

    def __init__(self, batch_size: int = 1) -> None:
        self.preview = PreviewRenderer()
        self.batch_size = batch_size
        self.batches: list[list[int]] = []
        self.requests: list[FrameRequest] = []
        self.images: list[Image.Image] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def fit_prompt(self, prompt):
        return prompt

    def render(self, requests, *, on_step=None, should_cancel=None) -> list[Image.Image]:
        assert len(requests) <= self.batch_size, "the engine sent a bigger batch than the renderer takes"
        self.batches.append([r.shot.index for r in requests])
        images = [self.preview.draw(request) for request in requests]
        self.requests += requests
        self.images += images
        return images


class ScriptedValidator:
    """Returns ``{"identity": score}`` from a fixed list, one per image; fails loudly when the list runs out."""

    name = "scripted"

    def __init__(self, identities: list[float]) -> None:
        self.identities = list(identities)
        self.references: list[Image.Image | None] = []

    def score(self, images, *, texts, reference: Image.Image | None, framings=None) -> list[dict[str, float]]:
        assert len(images) == len(texts)
        scores = []
        for _ in images:
            assert self.identities, "the engine asked for more scores than the test scripted"
            self.references.append(reference)
            scores.append({"identity": self.identities.pop(0)})
        return scores


# ------------------------------------------------------------------------------- helpers


def settings(**validation: float) -> EngineSettings:
    return EngineSettings(
        render=RenderSettings(width=SIZE, height=SIZE),
        validation=ValidateSettings(**validation) if validation else ValidateSettings(),
    )


def default_engine() -> StoryEngine:
    return build_engine(settings())


def engine_with(renderer=None, validator=None, **validation: float) -> StoryEngine:
    engine_settings = settings(**validation)
    return StoryEngine(
        planner=OfflinePlanner(engine_settings.planner),
        renderer=renderer or RecordingRenderer(),
        validator=validator or NullValidator(),
        settings=engine_settings,
    )


def read_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def pixels(path_or_image: Path | Image.Image) -> bytes:
    if isinstance(path_or_image, Image.Image):
        return path_or_image.convert("RGB").tobytes()
    with Image.open(path_or_image) as image:
        return image.convert("RGB").tobytes()


def frame_pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("frame_*.png"))


def checkpoint_files(folder: Path) -> list[str]:
    return sorted(p.name for p in [*folder.glob("plan.json"), *folder.glob("frame_*.json"), *folder.glob("*.tmp")])


# ------------------------------------------------------------------------------- 1. files and report


def test_run_writes_frames_grid_and_report_and_removes_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "board"
    board = default_engine().run(BoardRequest(story=STORY, frames=4, seed=3), out)

    n = len(board.frames)
    assert n == 4
    assert frame_pngs(out) == [f"frame_{i:02d}.png" for i in range(1, n + 1)]
    assert checkpoint_files(out) == []
    grids = sorted(out.glob("grid.*"))
    assert [g.name for g in grids] == [f"grid.{board.grid.extension}"]
    assert board.grid_path == grids[0]
    assert sorted(p.name for p in out.iterdir()) == sorted([*frame_pngs(out), grids[0].name, "report.json"])

    # every frame file is the frame the engine returned, at the configured size
    for frame in board.frames:
        with Image.open(out / frame.file_name) as img:
            assert img.size == (SIZE, SIZE)
        assert pixels(out / frame.file_name) == pixels(frame.image)

    # the grid on disk is a decodable image of the size the report claims
    report = read_report(out)
    assert report == board.report
    with Image.open(board.grid_path) as grid:
        grid.load()
        assert grid.size == (report["grid"]["width"], report["grid"]["height"])
        assert grid.width > SIZE and grid.height > SIZE
    assert report["grid"]["file"] == board.grid_path.name
    assert report["grid"]["bytes"] == board.grid_path.stat().st_size


def test_report_has_the_fixed_keys_and_values(tmp_path: Path) -> None:
    out = tmp_path / "board"
    board = default_engine().run(BoardRequest(story=STORY, frames=3, seed=11), out)
    report = read_report(out)

    assert {"story", "mode", "planner", "renderer", "frames", "timings"} <= report.keys()
    assert report["story"] == STORY
    assert report["mode"] == "simple"
    assert report["planner"] == "offline"
    assert report["renderer"] == "preview"
    assert isinstance(report["frames"], list) and len(report["frames"]) == 3

    negative = PromptSettings().negative_prompt
    for index, frame in enumerate(report["frames"], start=1):
        assert {"index", "shot", "prompt", "negative_prompt", "seed", "attempts", "accepted"} <= frame.keys()
        assert frame["index"] == index
        assert frame["shot"]["index"] == index
        assert TRIGGER in frame["prompt"]
        assert frame["prompt"].startswith(TRIGGER)
        assert frame["negative_prompt"] == negative
        assert isinstance(frame["attempts"], list) and frame["attempts"]
        for attempt in frame["attempts"]:
            assert attempt.keys() == {"seed", "scores", "verdict"}
        assert frame["seed"] == frame["attempts"][frame["chosen_attempt"]]["seed"]
        assert frame["accepted"] is True  # the preview is paired with the null validator
        assert (out / frame["file"]).is_file()
    assert [f["prompt"] for f in report["frames"]] == [f.prompt.positive for f in board.frames]

    timings = report["timings"]
    stages = ("plan", "prompts", "render", "validate", "grid", "report")
    for stage in (*stages, "total"):
        assert isinstance(timings[stage], (int, float)) and timings[stage] >= 0, stage
    # total is the whole run's wall time, so it covers every stage (4-decimal rounding aside)
    assert timings["total"] + 1e-3 >= sum(timings[stage] for stage in stages)
    assert report["timings"] == board.report["timings"]


def test_custom_negative_prompt_and_trigger_reach_the_report(tmp_path: Path) -> None:
    custom = EngineSettings(
        render=RenderSettings(width=SIZE, height=SIZE),
        prompt=PromptSettings(negative_prompt="beard, blurry", trigger_token="aldar_kose_man"),
    )
    build_engine(custom).run(BoardRequest(story=STORY, frames=2), tmp_path / "b")
    frames = read_report(tmp_path / "b")["frames"]
    assert [f["negative_prompt"] for f in frames] == ["beard, blurry", "beard, blurry"]


# ------------------------------------------------------------------------------- 2. frame count and seeds


@pytest.mark.parametrize("count", [1, 5, 12])
def test_frames_gives_exactly_that_many_frames(tmp_path: Path, count: int) -> None:
    board = default_engine().run(BoardRequest(story=STORY, frames=count, seed=4), tmp_path / "b")
    assert len(board.frames) == len(board.plan.shots) == count
    assert frame_pngs(tmp_path / "b") == [f"frame_{i:02d}.png" for i in range(1, count + 1)]
    assert len(read_report(tmp_path / "b")["frames"]) == count


def test_natural_frame_count_is_within_the_planner_range(tmp_path: Path) -> None:
    board = default_engine().run(BoardRequest(story=STORY), tmp_path / "b")
    planner = PlannerSettings()
    assert planner.min_shots <= len(board.frames) <= planner.max_shots


def test_frame_seeds_follow_the_board_seed(tmp_path: Path) -> None:
    renderer = RecordingRenderer()
    engine = engine_with(renderer)
    first = engine.run(BoardRequest(story=STORY, frames=4, seed=1234), tmp_path / "a")
    expected = [frame_seed(1234, i, 0) for i in range(1, 5)]
    assert [f.seed for f in first.frames] == expected
    assert [f["seed"] for f in read_report(tmp_path / "a")["frames"]] == expected
    assert [r.seed for r in renderer.requests] == expected

    other = engine.run(BoardRequest(story=STORY, frames=4, seed=1235), tmp_path / "b")
    other_seeds = [f.seed for f in other.frames]
    assert other_seeds == [frame_seed(1235, i, 0) for i in range(1, 5)]
    assert set(other_seeds).isdisjoint(expected)
    # and the seeds are what drew the pixels: another seed gives another picture
    assert pixels(tmp_path / "a" / "frame_01.png") != pixels(tmp_path / "b" / "frame_01.png")


def test_frame_seed_is_reproducible_and_in_range() -> None:
    assert frame_seed(7, 3, 1) == frame_seed(7, 3, 1)
    assert len({frame_seed(7, i, a) for i in range(1, 13) for a in range(3)}) == 36
    assert 0 <= frame_seed(2**32 - 1, 12, 2) < 2**32


# ------------------------------------------------------------------------------- 3. report round trip


def test_report_round_trip_reproduces_the_board(tmp_path: Path) -> None:
    engine = default_engine()
    first = engine.run(BoardRequest(story=STORY, frames=4, seed=77), tmp_path / "first")
    report = read_report(tmp_path / "first")

    plan = plan_from_report(report)
    assert plan == first.plan

    second = engine.run(BoardRequest(story=STORY, plan=plan, seed=77), tmp_path / "second")
    report2 = read_report(tmp_path / "second")
    assert [f["prompt"] for f in report2["frames"]] == [f["prompt"] for f in report["frames"]]
    assert [f["seed"] for f in report2["frames"]] == [f["seed"] for f in report["frames"]]
    assert [f["reused"] for f in report2["frames"]] == [False] * 4
    for frame in second.frames:
        assert pixels(tmp_path / "second" / frame.file_name) == pixels(tmp_path / "first" / frame.file_name)


def test_the_report_carries_the_story_bible_and_what_each_prompt_dropped(tmp_path: Path) -> None:
    character = "beardless trickster in a patched robe, one felt boot"  # not the planner's words for him
    style = " ".join(["ink"] * 70)  # alone over prompt 2's 77 tokens: it must be cut, and said so
    engine_settings = EngineSettings(prompt=PromptSettings(character=character, style_suffix=style))
    engine = StoryEngine(planner=OfflinePlanner(engine_settings.planner), renderer=PreviewRenderer(),
                         validator=NullValidator(), settings=engine_settings)
    engine.run(BoardRequest(story=STORY, frames=3, seed=5), tmp_path / "b")
    report = read_report(tmp_path / "b")

    assert report["cast"][0] == {"id": 0, "name": report["cast"][0]["name"], "look": character}
    assert report["places"] and all(p["look"] for p in report["places"])
    place_looks = {p["id"]: p["look"] for p in report["places"]}
    for frame in report["frames"]:
        assert frame["prompt"].startswith(f"{TRIGGER}, {character}")
        assert place_looks[frame["shot"]["place_id"]] in frame["prompt_2"]
        assert {"prompt": 2, "part": "style", "text": style} in frame["dropped"]
    assert plan_from_report(report).cast == load_saved_board(tmp_path / "b").plan.cast


def test_finished_board_loads_back_with_its_frames(tmp_path: Path) -> None:
    board = default_engine().run(BoardRequest(story=STORY, frames=3, seed=5), tmp_path / "b")
    saved = load_saved_board(tmp_path / "b")
    assert saved.plan == board.plan
    assert sorted(saved.frames) == [1, 2, 3]
    for frame in board.frames:
        loaded = saved.frames[frame.index]
        assert loaded == frame  # image is excluded from equality; compared below
        assert pixels(loaded.image) == pixels(frame.image)


# ------------------------------------------------------------------------------- 4. Cyrillic captions


def _assert_captions_literal(folder: Path, story_letters: str) -> dict:
    raw = (folder / "report.json").read_text(encoding="utf-8")
    assert "\\u04" not in raw, "Cyrillic was escaped in report.json"
    report = json.loads(raw)
    for frame in report["frames"]:
        assert frame["shot"]["caption"] in raw
    for letter in story_letters:
        assert letter in raw, letter
    return report


def test_russian_captions_survive_literally(tmp_path: Path, stories: dict[str, str]) -> None:
    story = stories["ru_bai"]
    board = default_engine().run(BoardRequest(story=story, seed=2), tmp_path / "ru")
    report = _assert_captions_literal(tmp_path / "ru", "Алдар Косе")
    assert report["story"] == story
    assert report["language"] == "ru"
    assert "Алдар Косе пришёл в аул жадного бая Шыгая." in (tmp_path / "ru" / "report.json").read_text("utf-8")
    # captions are the story's own words, never translated; prompts are English
    for frame in report["frames"]:
        assert set(frame["shot"]["caption"].split()) <= set(story.split())
        assert (TRIGGER in frame["prompt"]) == (0 in frame["shot"]["cast_ids"])  # a panel without him: no trigger
        assert not any("а" <= ch <= "я" for ch in frame["prompt"].lower())
    assert len(board.frames) >= 6


def test_kazakh_letters_survive_literally(tmp_path: Path, stories: dict[str, str]) -> None:
    # kk_kozha lacks ә, ұ and һ; one more sentence brings every Kazakh-specific letter in
    story = stories["kk_kozha"] + " Әжесі шаһардан ұн әкелді."
    assert all(letter in story for letter in KAZAKH_LETTERS)
    default_engine().run(BoardRequest(story=story, frames=6), tmp_path / "kk")
    report = _assert_captions_literal(tmp_path / "kk", KAZAKH_LETTERS)
    assert report["language"] == "kk"
    captions = " ".join(f["shot"]["caption"] for f in report["frames"])
    for letter in KAZAKH_LETTERS:
        assert letter in captions, letter


# ------------------------------------------------------------------------------- 5. retry policy


def one_frame_retry_run(tmp_path: Path, identities: list[float], seed: int = 50):
    renderer = RecordingRenderer()
    validator = ScriptedValidator(identities)
    engine = engine_with(renderer, validator, threshold=0.70, max_retries=2)
    board = engine.run(BoardRequest(story=STORY, frames=1, seed=seed), tmp_path / "b")
    return board, renderer, validator


def test_failing_frame_is_rerolled_to_the_limit_and_the_best_attempt_kept(tmp_path: Path) -> None:
    board, renderer, validator = one_frame_retry_run(tmp_path, [0.5, 0.6, 0.4], seed=50)
    seeds = [frame_seed(50, 1, attempt) for attempt in range(3)]
    assert [r.seed for r in renderer.requests] == seeds
    assert validator.identities == []

    frame = board.frames[0]
    assert frame.attempts == (Attempt(seeds[0], {"identity": 0.5}, "low_identity"),
                              Attempt(seeds[1], {"identity": 0.6}, "low_identity"),
                              Attempt(seeds[2], {"identity": 0.4}, "low_identity"))
    assert frame.chosen == 1
    assert frame.seed == seeds[1]
    assert frame.accepted is False
    # the kept picture is attempt 2's, not the last one rendered
    assert pixels(tmp_path / "b" / "frame_01.png") == pixels(renderer.images[1])
    assert pixels(tmp_path / "b" / "frame_01.png") != pixels(renderer.images[2])

    saved = read_report(tmp_path / "b")["frames"][0]
    assert saved["attempts"] == [
        {"seed": s, "scores": {"identity": v}, "verdict": "low_identity"}
        for s, v in zip(seeds, [0.5, 0.6, 0.4], strict=True)
    ]
    assert saved["chosen_attempt"] == 1
    assert saved["seed"] == seeds[1]
    assert saved["accepted"] is False
    assert read_report(tmp_path / "b")["validation"] == {"threshold": 0.70, "max_retries": 2, "copy_ceiling": 0.95,
                                                        "face_threshold": 0.6}


def test_reroll_stops_at_the_first_passing_attempt(tmp_path: Path) -> None:
    board, renderer, validator = one_frame_retry_run(tmp_path, [0.5, 0.9, 0.99], seed=8)
    assert [r.seed for r in renderer.requests] == [frame_seed(8, 1, 0), frame_seed(8, 1, 1)]
    assert validator.identities == [0.99]  # the third score was never asked for
    frame = board.frames[0]
    assert len(frame.attempts) == 2
    assert frame.chosen == 1 and frame.accepted is True
    assert frame.seed == frame_seed(8, 1, 1)
    assert pixels(tmp_path / "b" / "frame_01.png") == pixels(renderer.images[1])
    saved = read_report(tmp_path / "b")["frames"][0]
    assert len(saved["attempts"]) == 2 and saved["accepted"] is True


def test_score_at_the_threshold_passes_first_time(tmp_path: Path) -> None:
    board, renderer, _ = one_frame_retry_run(tmp_path, [0.70])
    assert renderer.calls == 1
    assert board.frames[0].accepted is True and len(board.frames[0].attempts) == 1


def test_no_retries_when_max_retries_is_zero(tmp_path: Path) -> None:
    renderer, validator = RecordingRenderer(), ScriptedValidator([0.1])
    engine = engine_with(renderer, validator, threshold=0.70, max_retries=0)
    board = engine.run(BoardRequest(story=STORY, frames=1), tmp_path / "b")
    assert renderer.calls == 1
    assert board.frames[0].accepted is False


# ------------------------------------------------------------------------------- 6. reference passing


def _without_the_hero(plan: ShotList, *indices: int) -> ShotList:
    """The plan with Aldar Kose taken out of the shots ``indices`` (each then about cast member 1)."""
    shots = tuple(shot.model_copy(update={"cast_ids": (1,)}) if shot.index in indices else shot for shot in plan.shots)
    return plan.model_copy(update={"shots": shots})


def test_a_panel_without_aldar_kose_is_not_checked_against_him(tmp_path: Path) -> None:
    plan = _without_the_hero(_a_plan(3), 3)
    assert len(plan.cast) > 1  # the story has a merchant, cast member 1
    validator = ScriptedValidator([0.9, 0.1, 0.1, 0.1])  # frame 2 fails every try; frame 3 is never scored
    board = engine_with(validator=validator).run(BoardRequest(story=STORY, plan=plan, seed=3), tmp_path / "b")

    frames = read_report(tmp_path / "b")["frames"]
    assert [len(f["attempts"]) for f in frames] == [1, 3, 1]
    assert frames[2]["attempts"] == [{"seed": frame_seed(3, 3, 0), "scores": {}, "verdict": "not_in_shot"}]
    assert frames[2]["accepted"] is True and validator.identities == []
    assert "aldar_kose_man" not in frames[2]["prompt"] + frames[2]["prompt_2"]
    assert board.frames[2].shot.cast_ids == (1,)


def test_frame_one_always_shows_aldar_kose_as_the_reference(tmp_path: Path) -> None:
    plan = _without_the_hero(_a_plan(3), 1)
    engine_with().run(BoardRequest(story=STORY, plan=plan, seed=3), tmp_path / "b")
    report = read_report(tmp_path / "b")
    assert report["frames"][0]["shot"]["cast_ids"] == [0, 1]
    assert report["frames"][0]["prompt"].startswith("aldar_kose_man")
    assert "shot 1: Aldar Kose added, frame 1 is the identity reference" in report["plan_repairs"]


def test_ref_guided_passes_frame_one_as_the_reference(tmp_path: Path) -> None:
    renderer = RecordingRenderer()
    validator = ScriptedValidator([0.9] * 4)
    engine = engine_with(renderer, validator)
    board = engine.run(BoardRequest(story=STORY, mode="ref-guided", frames=4, seed=9), tmp_path / "b")

    assert [r.shot.index for r in renderer.requests] == [1, 2, 3, 4]
    assert renderer.requests[0].reference is None
    frame_one = pixels(tmp_path / "b" / "frame_01.png")
    for request in renderer.requests[1:]:
        assert request.reference is not None
        assert pixels(request.reference) == frame_one
    # identity is checked against frame 1 as well
    assert validator.references[0] is None
    assert all(ref is not None and pixels(ref) == frame_one for ref in validator.references[1:])
    assert read_report(tmp_path / "b")["mode"] == "ref-guided"
    # the preview marks a reference-guided panel differently from frame 1 drawn alone
    assert pixels(board.frames[1].image) != pixels(
        PreviewRenderer().draw(FrameRequest(board.frames[1].shot, board.frames[1].prompt, board.frames[1].seed, SIZE, SIZE))
    )


def test_ref_guided_reference_is_frame_ones_kept_attempt(tmp_path: Path) -> None:
    renderer = RecordingRenderer()
    validator = ScriptedValidator([0.6, 0.5, 0.4, 0.9])  # frame 1 keeps attempt 1 of 3; frame 2 passes
    engine = engine_with(renderer, validator, threshold=0.70, max_retries=2)
    engine.run(BoardRequest(story=STORY, mode="ref-guided", frames=2, seed=21), tmp_path / "b")

    assert renderer.calls == 4
    assert [r.reference for r in renderer.requests[:3]] == [None, None, None]
    reference = renderer.requests[3].reference
    assert reference is not None
    assert pixels(reference) == pixels(renderer.images[0])
    assert pixels(reference) != pixels(renderer.images[2])
    assert pixels(reference) == pixels(tmp_path / "b" / "frame_01.png")


def test_simple_mode_passes_no_render_reference_but_checks_identity_against_frame_1(tmp_path: Path) -> None:
    renderer = RecordingRenderer()
    validator = ScriptedValidator([0.9] * 4)
    engine_with(renderer, validator).run(BoardRequest(story=STORY, mode="simple", frames=4), tmp_path / "b")
    assert renderer.calls == 4
    assert [r.reference for r in renderer.requests] == [None] * 4
    assert validator.references[0] is None  # frame 1 is the reference: nothing to compare it with
    assert all(pixels(ref) == pixels(renderer.images[0]) for ref in validator.references[1:])


# ------------------------------------------------------------------------------- 7. cancel and resume


def test_cancel_checkpoints_finished_frames_and_resume_renders_only_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "b"
    request = BoardRequest(story=STORY, frames=5, seed=31)
    renderer = RecordingRenderer()
    with pytest.raises(Cancelled):
        engine_with(renderer).run(request, out, should_cancel=lambda: renderer.calls >= 2)

    assert renderer.calls == 2
    assert frame_pngs(out) == ["frame_01.png", "frame_02.png"]
    assert checkpoint_files(out) == ["frame_01.json", "frame_02.json", "plan.json"]
    assert not (out / "report.json").exists()
    assert not list(out.glob("grid.*"))

    saved = load_saved_board(out)
    assert saved.plan is not None and len(saved.plan.shots) == 5
    assert sorted(saved.frames) == [1, 2]
    for index in (1, 2):
        assert saved.frames[index].seed == frame_seed(31, index, 0)
        assert pixels(saved.frames[index].image) == pixels(renderer.images[index - 1])

    resumer = RecordingRenderer()
    board = engine_with(resumer).run(
        BoardRequest(story=STORY, frames=5, seed=31, plan=saved.plan, keep=saved.frames), out
    )
    assert [r.shot.index for r in resumer.requests] == [3, 4, 5]
    assert [r.seed for r in resumer.requests] == [frame_seed(31, i, 0) for i in (3, 4, 5)]
    report = read_report(out)
    assert [f["reused"] for f in report["frames"]] == [True, True, False, False, False]
    assert [f.reused for f in board.frames] == [True, True, False, False, False]
    assert frame_pngs(out) == [f"frame_{i:02d}.png" for i in range(1, 6)]
    assert checkpoint_files(out) == []

    # the resumed board is the board an uninterrupted run draws
    engine_with().run(request, tmp_path / "straight")
    for i in range(1, 6):
        name = f"frame_{i:02d}.png"
        assert pixels(out / name) == pixels(tmp_path / "straight" / name), name
    assert plan_from_report(report) == plan_from_report(read_report(tmp_path / "straight"))


def test_cancel_before_the_first_frame_leaves_only_the_plan(tmp_path: Path) -> None:
    renderer = RecordingRenderer()
    with pytest.raises(Cancelled):
        engine_with(renderer).run(BoardRequest(story=STORY, frames=3), tmp_path / "b", should_cancel=lambda: True)
    assert renderer.calls == 0
    assert checkpoint_files(tmp_path / "b") == ["plan.json"]
    saved = load_saved_board(tmp_path / "b")
    assert saved.plan is not None and len(saved.plan.shots) == 3
    assert saved.frames == {}


# ------------------------------------------------------------------------------- 8. regenerate one frame


def test_regenerating_one_frame_rerenders_only_that_frame(tmp_path: Path) -> None:
    parent_dir, child_dir = tmp_path / "parent", tmp_path / "child"
    parent = default_engine().run(BoardRequest(story=STORY, frames=5, seed=5), parent_dir)

    saved = load_saved_board(parent_dir)
    keep = {i: f for i, f in saved.frames.items() if i != 3}
    renderer = RecordingRenderer()
    child = engine_with(renderer).run(
        BoardRequest(story=STORY, plan=saved.plan, keep=keep, seed=99), child_dir
    )

    assert [(r.shot.index, r.seed) for r in renderer.requests] == [(3, frame_seed(99, 3, 0))]
    assert child.plan == parent.plan
    for i in (1, 2, 4, 5):
        name = f"frame_{i:02d}.png"
        assert (child_dir / name).read_bytes() == (parent_dir / name).read_bytes(), name
        assert pixels(child_dir / name) == pixels(parent_dir / name), name
    assert pixels(child_dir / "frame_03.png") != pixels(parent_dir / "frame_03.png")
    assert pixels(child_dir / "frame_03.png") == pixels(renderer.images[0])

    report = read_report(child_dir)
    assert [f["reused"] for f in report["frames"]] == [True, True, False, True, True]
    parent_seeds = [f["seed"] for f in read_report(parent_dir)["frames"]]
    assert [f["seed"] for f in report["frames"]] == [*parent_seeds[:2], frame_seed(99, 3, 0), *parent_seeds[3:]]
    assert checkpoint_files(child_dir) == []
    # the parent board is untouched
    assert read_report(parent_dir) == parent.report


# ------------------------------------------------------------------------------- 9. progress


def test_progress_events_arrive_in_order(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    default_engine().run(BoardRequest(story=STORY, frames=3), tmp_path / "b", on_progress=events.append)
    got = [(e.stage, e.frame, e.total) for e in events]
    expected = [("planning", None, None)]
    for i in (1, 2, 3):
        expected += [("rendering", i, 3), ("validating", i, 3)]
    expected += [("composing", None, None), ("done", None, 3)]
    assert got == expected
    assert all(e.attempt == 1 for e in events if e.stage in ("rendering", "validating"))


def test_progress_counts_retry_attempts(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    engine = engine_with(RecordingRenderer(), ScriptedValidator([0.1, 0.9]), threshold=0.7, max_retries=2)
    engine.run(BoardRequest(story=STORY, frames=1), tmp_path / "b", on_progress=events.append)
    assert [(e.stage, e.attempt) for e in events] == [
        ("planning", None), ("rendering", 1), ("validating", 1), ("rendering", 2), ("validating", 2),
        ("composing", None), ("done", None),
    ]


# ------------------------------------------------------------------------------- 10. invalid requests


def _a_plan(count: int = 4) -> ShotList:
    return OfflinePlanner(PlannerSettings()).plan(STORY, shots=count)


def _a_misnumbered_plan() -> ShotList:
    plan = _a_plan(3)
    return plan.model_copy(update={"shots": tuple(reversed(plan.shots))})


def _a_frame() -> FrameResult:
    shot = _a_plan().shots[0]
    prompt = build_prompt(shot, PromptSettings())
    return FrameResult(index=1, shot=shot, prompt=prompt, attempts=(Attempt(seed=1),), chosen=0,
                       accepted=True, picture=Image.new("RGB", (SIZE, SIZE)))


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(lambda: BoardRequest(story=""), id="empty-story"),
        pytest.param(lambda: BoardRequest(story="   \n\t "), id="blank-story"),
        pytest.param(lambda: BoardRequest(story=STORY, mode="fast"), id="mode-fast"),
        pytest.param(lambda: BoardRequest(story=STORY, frames=0), id="frames-0"),
        pytest.param(lambda: BoardRequest(story=STORY, frames=13), id="frames-13"),
        pytest.param(lambda: BoardRequest(story=STORY, seed=-1), id="negative-seed"),
        pytest.param(lambda: BoardRequest(story=STORY, frames=3, plan=_a_plan(4)), id="plan-count-mismatch"),
        pytest.param(lambda: BoardRequest(story=STORY, plan=_a_misnumbered_plan()), id="plan-misnumbered"),
        pytest.param(lambda: BoardRequest(story=STORY, keep={1: _a_frame()}), id="keep-without-plan"),
        pytest.param(lambda: BoardRequest(story=STORY, plan=_a_plan(4), keep={5: _a_frame()}), id="keep-outside-plan"),
    ],
)
def test_invalid_requests_fail_before_any_file_is_written(tmp_path: Path, make_request) -> None:
    renderer = RecordingRenderer()
    out = tmp_path / "never"
    with pytest.raises(InvalidRequest) as caught:
        engine_with(renderer).run(make_request(), out)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)
    assert not out.exists()
    assert renderer.calls == 0


def test_storyboard_paths_point_into_the_output_folder(tmp_path: Path) -> None:
    board: Storyboard = default_engine().run(BoardRequest(story=STORY, frames=1), tmp_path / "b")
    assert board.out_dir == tmp_path / "b"
    assert board.report_path == tmp_path / "b" / "report.json" and board.report_path.is_file()
    assert board.grid_path.is_file()



def test_a_kept_frame_filed_under_the_wrong_number_is_refused(tmp_path):
    engine = build_engine(EngineSettings(render=RenderSettings(width=128, height=128)))
    board = engine.run(BoardRequest("Aldar Kose rides. He laughs. He sleeps.", frames=3, seed=1), tmp_path / "a")
    saved = load_saved_board(board.out_dir)
    misfiled = BoardRequest(board.report["story"], frames=3, plan=saved.plan, keep={1: saved.frames[3]})
    with pytest.raises(InvalidRequest, match="wrong frame number"):
        engine.run(misfiled, tmp_path / "b")
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------- 11. checks overlap the next batch


class GatedValidator:
    """Scores frames 2-3 only once the renderer has started on frames 4-5 (or 10 s have passed)."""

    name = "gated"

    def __init__(self, next_batch_started: threading.Event) -> None:
        self.next_batch_started = next_batch_started
        self.overlapped: list[bool] = []
        self.threads: set[str] = set()

    def score(self, images, *, texts, reference, framings=None) -> list[dict[str, float]]:
        self.threads.add(threading.current_thread().name)
        if len(images) == 2 and not self.overlapped:
            self.overlapped.append(self.next_batch_started.wait(timeout=10))
        return [{"identity": 0.9} for _ in images]


class SignallingRenderer(RecordingRenderer):
    def __init__(self, batch_size: int, started: threading.Event, fail_on: int | None = None) -> None:
        super().__init__(batch_size)
        self.started, self.fail_on = started, fail_on

    def render(self, requests, *, on_step=None, should_cancel=None) -> list[Image.Image]:
        if requests[0].shot.index == 4:
            self.started.set()
            if self.fail_on == 4:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().render(requests, on_step=on_step, should_cancel=should_cancel)


def test_a_batch_is_checked_while_the_next_one_renders(tmp_path: Path) -> None:
    started = threading.Event()
    validator = GatedValidator(started)
    renderer = SignallingRenderer(2, started)
    board = engine_with(renderer, validator, threshold=0.7).run(BoardRequest(story=STORY, frames=5), tmp_path / "b")
    assert renderer.batches == [[1], [2, 3], [4, 5]]
    assert validator.overlapped == [True]  # frames 2-3 were scored after frames 4-5 had begun to render
    assert all(name.startswith("frame-check") for name in validator.threads)
    assert [f.accepted for f in board.frames] == [True] * 5
    timings = read_report(tmp_path / "b")["timings"]
    assert timings["validate_wait"] >= 0 and "validate" in timings


def test_a_crash_while_the_next_batch_renders_keeps_the_checked_frames(tmp_path: Path) -> None:
    started = threading.Event()
    renderer = SignallingRenderer(2, started, fail_on=4)
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="illegal memory access"):
        engine_with(renderer, GatedValidator(started), threshold=0.7).run(BoardRequest(story=STORY, frames=5), out)
    assert frame_pngs(out) == ["frame_01.png", "frame_02.png", "frame_03.png"]  # only the batch in flight is lost
    assert sorted(load_saved_board(out).frames) == [1, 2, 3]


def test_a_failing_check_fails_the_board_and_does_not_hang(tmp_path: Path) -> None:
    class BrokenValidator:
        name = "broken"

        def score(self, images, *, texts, reference, framings=None):
            raise ValueError("the face check stopped")

    with pytest.raises(ValueError, match="the face check stopped"):
        engine_with(RecordingRenderer(2), BrokenValidator()).run(BoardRequest(story=STORY, frames=5), tmp_path / "b")
    assert frame_pngs(tmp_path / "b") == []


def test_what_the_caller_adds_to_the_report_is_written_with_it_never_in_place_of_its_own(tmp_path: Path) -> None:
    request = BoardRequest(story=STORY, frames=1, seed=4, report_extra={"worker": {"name": "gpu-a", "try": 1}, "seed": 99})
    default_engine().run(request, tmp_path / "b")
    report = read_report(tmp_path / "b")
    assert report["worker"] == {"name": "gpu-a", "try": 1}
    assert report["seed"] == 4


def test_checks_run_in_the_callers_context_so_their_log_lines_name_the_job(tmp_path: Path) -> None:
    job = contextvars.ContextVar("job", default=None)
    seen: list[str | None] = []

    class RecordingValidator:
        name = "recording"

        def score(self, images, *, texts, reference, framings=None):
            seen.append(job.get())
            return [{"identity": 0.9} for _ in images]

    def run() -> None:
        job.set("job-7")  # what bot.ops.logs.job_context sets for the engine thread
        engine_with(RecordingRenderer(2), RecordingValidator(), threshold=0.7).run(
            BoardRequest(story=STORY, frames=3), tmp_path / "b")

    contextvars.copy_context().run(run)
    assert seen == ["job-7", "job-7"]  # frame 1 alone, then frames 2-3
