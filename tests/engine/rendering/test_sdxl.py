"""The SDXL engine on tiny random-weight models, loaded through engine.models like real weights.

Nothing here reaches a hub: the fixtures in tests/conftest.py save tiny models to a temp
dir, and the production loading code reads them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.build import build_engine
from engine.errors import Cancelled, InvalidRequest
from engine.models import ModelLoadError
from engine.rendering.prompts import build_prompt
from engine.rendering.base import FrameRequest
from engine.rendering.sdxl import OutOfMemory, SdxlRenderer
from engine.settings import EngineSettings, PromptSettings, RenderSettings, ValidateSettings
from engine.storyboard import BoardRequest, ProgressEvent
from engine.identity.validate import Attempt, RetryPolicy
from tests.reproducibility import assert_other_picture, assert_same_picture
from tests.tiny_models import real_clip_tokenizer

STORY = (
    "Aldar Kose arrives at a busy bazaar with an empty pot. A greedy merchant laughs at his coat. "
    "Aldar Kose swears the pot boils soup by itself. The merchant trades his horse for the pot. "
    "Aldar Kose rides away across the steppe at sunset."
)
SIZE = 64


@pytest.fixture(scope="module")
def sdxl_settings(render_dtype):
    """Engine settings for the tiny models, in the dtype this round of the module runs in."""
    def make(base: Path, clip: Path | str, *, validation: dict | None = None, **engine) -> EngineSettings:
        values = {"renderer": "sdxl", "base_model": str(base), "clip_model": str(clip), "width": SIZE,
                  "height": SIZE, "steps": 2, "batch_size": 4, "ref_guided": False, "dtype": render_dtype, **engine}
        render = RenderSettings(**values)
        # dlib's detector costs ~0.7 s on a face-less 64 px frame; face checks have their own tests
        return EngineSettings(render=render,
                              validation=ValidateSettings(**{"face_check": False, **(validation or {})}))
    return make


@pytest.fixture(scope="module")
def lora_engine(tiny_sdxl_dir, tiny_clip_dir, tiny_lora_file, sdxl_settings):
    return build_engine(sdxl_settings(tiny_sdxl_dir, tiny_clip_dir, lora=str(tiny_lora_file)))


def frame_array(folder: Path, index: int) -> np.ndarray:
    return np.asarray(Image.open(folder / f"frame_{index:02d}.png"), dtype=np.int16)


def report_of(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


# -- a whole board -------------------------------------------------------------------------------


def test_an_eight_frame_board_renders_in_batches_with_scores(lora_engine, tmp_path):
    events: list[ProgressEvent] = []
    board = lora_engine.run(BoardRequest(STORY, frames=8, seed=1), tmp_path / "b", on_progress=events.append)

    assert [Image.open(tmp_path / "b" / f"frame_{i:02d}.png").size for i in range(1, 9)] == [(SIZE, SIZE)] * 8
    report = report_of(tmp_path / "b")
    assert (report["renderer"], report["validator"]) == ("sdxl", "clip")
    first, rest = report["frames"][0], report["frames"][1:]
    assert "identity" not in first["attempts"][0]["scores"]  # frame 1 is the identity reference
    assert "clip_t" in first["attempts"][0]["scores"]
    for frame in rest:
        assert 1 <= len(frame["attempts"]) <= 3
        for attempt in frame["attempts"]:
            assert -1.0 <= attempt["scores"]["identity"] <= 1.0
            assert attempt["verdict"] in ("pass", "low_identity", "copy_paste")
        assert frame["seed"] in [a["seed"] for a in frame["attempts"]]
    # frame 1 alone (it becomes the reference), then the other 7 in batches of at most 4
    first_tries = [(e.frame, e.last_frame) for e in events if e.stage == "rendering" and e.attempt == 1]
    assert first_tries == [(1, 1), (2, 5), (6, 8)]
    steps = [e.step for e in events if e.stage == "step" and (e.frame, e.attempt) == (2, 1)]
    assert steps == [1, 2]
    assert board.grid_path.is_file()


def test_same_request_same_bytes_and_a_new_seed_changes_the_frames(lora_engine, tmp_path):
    """Byte for byte: the same request on the same machine and thread count draws the same batches."""
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        lora_engine.run(BoardRequest(STORY, frames=3, seed=seed), tmp_path / name)
    for i in (1, 2, 3):
        assert np.array_equal(frame_array(tmp_path / "a", i), frame_array(tmp_path / "b", i))
    assert_other_picture(frame_array(tmp_path / "a", 1), frame_array(tmp_path / "c", 1))


def test_a_frame_drawn_in_another_batch_is_the_same_picture(tiny_sdxl_dir, tiny_clip_dir, lora_engine, tmp_path, sdxl_settings):
    """Within rounding: frames 2..5 in one batch of 4, or each alone, start from the same noise.
    Frame 1 is drawn alone at any batch size, so it is the same bytes."""
    single = build_engine(sdxl_settings(tiny_sdxl_dir, "", batch_size=1, lora=lora_engine.settings.render.lora))
    lora_engine.run(BoardRequest(STORY, frames=5, seed=9), tmp_path / "batched")
    single.run(BoardRequest(STORY, frames=5, seed=9), tmp_path / "single")
    assert np.array_equal(frame_array(tmp_path / "batched", 1), frame_array(tmp_path / "single", 1))
    # first attempts share seeds; with no CLIP in `single` each frame keeps its first attempt
    batched = report_of(tmp_path / "batched")["frames"]
    compared = [i for i in range(2, 6) if batched[i - 1]["chosen_attempt"] == 0]
    assert compared, "every frame was re-rolled: nothing left to compare"
    for i in compared:
        assert_same_picture(frame_array(tmp_path / "batched", i), frame_array(tmp_path / "single", i), f"frame {i}")


def test_a_board_drawn_with_another_thread_count_is_the_same_picture(tiny_sdxl_dir, tiny_lora_file, tmp_path, sdxl_settings):
    """Within rounding: the thread count changes how some kernels split their sums."""
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", lora=str(tiny_lora_file)))
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            engine.run(BoardRequest(STORY, frames=5, seed=4), tmp_path / f"threads{count}")
    finally:
        torch.set_num_threads(threads)
    for i in range(1, 6):
        assert_same_picture(frame_array(tmp_path / "threads1", i), frame_array(tmp_path / "threads2", i), f"frame {i}")


def test_the_lora_is_fused_and_changes_the_frames(tiny_sdxl_dir, tiny_lora_file, tiny_kohya_lora_file, tmp_path, sdxl_settings):
    boards = {}
    for name, lora in (("none", ""), ("peft", str(tiny_lora_file)), ("kohya", str(tiny_kohya_lora_file))):
        engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", lora=lora))
        engine.run(BoardRequest(STORY, frames=1, seed=3), tmp_path / name)
        boards[name] = frame_array(tmp_path / name, 1)
        applied = report_of(tmp_path / name)["models"]["applied"]
        assert applied["lora"] == ("none" if not lora else {"character": 1.0})
        pipe = engine.renderer.pipe
        assert not pipe.get_list_adapters(), "adapters are unloaded once fused"
    assert np.abs(boards["peft"] - boards["none"]).mean() > 2  # a visible change, in 0..255 levels
    assert np.abs(boards["peft"] - boards["kohya"]).max() <= 2  # the same LoRA in two file formats


def test_components_load_once_and_a_warm_board_loads_nothing(lora_engine, tmp_path):
    loads_at_start_up = lora_engine.models.loads
    assert loads_at_start_up == 4  # pipeline, LoRA, CLIP model, CLIP processor
    for name in ("one", "two"):
        lora_engine.run(BoardRequest(STORY, frames=2, seed=1), tmp_path / name)
        report = report_of(tmp_path / name)
        assert report["timings"]["model_loads"] == 0
        assert report["models"]["loads_total"] == loads_at_start_up
    assert lora_engine.models.loads == loads_at_start_up


def test_report_records_the_settings_applied(lora_engine, tmp_path, render_dtype):
    lora_engine.run(BoardRequest(STORY, frames=1, seed=1), tmp_path / "b")
    models = report_of(tmp_path / "b")["models"]
    assert models["device"] == "cpu" and models["dtype"] == render_dtype
    assert models["applied"]["scheduler"] == "dpmpp_2m_karras"
    assert models["applied"]["sdpa"] is True and models["applied"]["fuse_qkv"] is True
    assert models["applied"]["channels_last"] == "skipped: needs CUDA"
    assert models["sources"]["engine.base_model"] == str(lora_engine.settings.render.base_model)


def test_draft_mode_fuses_the_draft_lora_with_its_scheduler_and_steps(tiny_sdxl_dir, tiny_lora_file, tmp_path, sdxl_settings):
    settings = sdxl_settings(tiny_sdxl_dir, "", draft=True, draft_lora=str(tiny_lora_file), draft_steps=3,
                             vae_tiling=True)
    engine = build_engine(settings)
    assert engine.renderer.steps == 3 and engine.renderer.guidance == 0.0
    engine.run(BoardRequest(STORY, frames=1, seed=1), tmp_path / "b")
    applied = report_of(tmp_path / "b")["models"]["applied"]
    assert applied["scheduler"] == "euler (trailing, draft)"
    assert applied["lora"] == {"draft": 1.0}
    assert applied["vae_tiling"] is True


def test_with_reference_pictures_frame_1_is_still_drawn_alone(tiny_sdxl_dir, tiny_clip_dir, tmp_path, sdxl_settings):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        Image.new("RGB", (48, 48), colour).save(refs / f"aldar_{i}.png")
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, tiny_clip_dir, reference_images=str(refs)),
                          )
    events: list[ProgressEvent] = []
    engine.run(BoardRequest(STORY, frames=4, seed=2), tmp_path / "b", on_progress=events.append)
    assert [(e.frame, e.last_frame) for e in events if e.stage == "rendering"][:2] == [(1, 1), (2, 4)]
    assert "identity" in report_of(tmp_path / "b")["frames"][0]["attempts"][0]["scores"]  # against the pictures


# -- retry policy with a deterministic scorer --------------------------------------------------


def test_policy_rerolls_copies_and_keeps_the_best_honest_attempt():
    policy = RetryPolicy(threshold=0.70, max_retries=2, copy_ceiling=0.95)
    assert policy.verdict({"identity": 0.99}) == "copy_paste"
    assert policy.verdict({"identity": 0.5}) == "low_identity"
    assert policy.verdict({"identity": 0.8}) == "pass"
    assert policy.verdict({"clip_t": 0.3}) == "unchecked"
    attempts = [Attempt(1, {"identity": 0.99}), Attempt(2, {"identity": 0.6}), Attempt(3, {"identity": 0.97})]
    assert policy.best(attempts) == 1  # no attempt passes: the best non-copy wins
    assert policy.best([Attempt(1, {"identity": 0.99}), Attempt(2, {"identity": 0.97})]) == 1  # least copying
    assert policy.best([Attempt(1, {"identity": 0.6}), Attempt(2, {"identity": 0.8})]) == 1


def test_a_copy_paste_frame_is_rerolled_on_the_real_engine(tiny_sdxl_dir, tiny_clip_dir, tmp_path, sdxl_settings):
    # threshold and ceiling both 0: only a frame whose identity is <= 0 passes; most are "copies"
    settings = sdxl_settings(tiny_sdxl_dir, tiny_clip_dir, validation={"threshold": 0.0, "copy_ceiling": 0.0})
    build_engine(settings).run(BoardRequest(STORY, frames=3, seed=4), tmp_path / "b")
    for frame in report_of(tmp_path / "b")["frames"][1:]:
        verdicts = [a["verdict"] for a in frame["attempts"]]
        assert all(v == "copy_paste" for v in verdicts[:-1])
        assert verdicts[-1] == "pass" or len(verdicts) == 3


# -- cancellation, memory, prompts --------------------------------------------------------------


def frame_request(engine, index: int = 1, seed: int = 1) -> FrameRequest:
    plan = engine.planner.plan(STORY, shots=3)
    shot = plan.shots[index - 1]
    return FrameRequest(shot, engine.renderer.fit_prompt(build_prompt(shot, PromptSettings())), seed, SIZE, SIZE)


def test_cancel_stops_within_one_step(tiny_sdxl_dir, sdxl_settings):
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", steps=10))
    steps: list[int] = []
    with pytest.raises(Cancelled):
        engine.renderer.render([frame_request(engine)], on_step=lambda step, total: steps.append(step),
                               should_cancel=lambda: len(steps) >= 1)
    assert steps == [1]
    # the pipeline is usable again afterwards
    assert len(engine.renderer.render([frame_request(engine)])) == 1


class OutOfMemoryPipe:
    """The real pipeline, except that calls with more than ``max_batch`` prompts run out of memory."""

    def __init__(self, pipe, max_batch: int) -> None:
        self._pipe, self.max_batch, self.batches = pipe, max_batch, []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        self.batches.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self._pipe(**kwargs)


def test_out_of_memory_retries_one_frame_at_a_time_then_fails_clearly(tiny_sdxl_dir, sdxl_settings):
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, ""))
    real = engine.renderer.pipe
    engine.renderer.pipe = OutOfMemoryPipe(real, max_batch=1)
    requests = [frame_request(engine, i) for i in (1, 2, 3)]
    assert len(engine.renderer.render(requests)) == 3
    assert engine.renderer.pipe.batches == [3, 1, 1, 1]

    engine.renderer.pipe = OutOfMemoryPipe(real, max_batch=0)
    with pytest.raises(OutOfMemory, match=r"out of GPU memory drawing frame 1 at 64x64"):
        engine.renderer.render(requests)
    assert engine.renderer.pipe.batches == [3, 1]


def test_prompts_fit_the_real_77_token_budget_with_the_trigger_first(tmp_path, stories):
    tokenizer = real_clip_tokenizer(tmp_path / "clip_tokenizer")
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    pipe = SimpleNamespace(tokenizer=tokenizer, tokenizer_2=tokenizer, vae=SimpleNamespace(dtype=torch.float32))
    renderer = SdxlRenderer(pipe, steps=1, guidance=5.0, batch_size=1)
    from engine.planning.offline.planner import OfflinePlanner
    from engine.settings import PlannerSettings

    trimmed = 0
    for story in stories.values():
        for shot in OfflinePlanner(PlannerSettings()).plan(story).shots:
            full = build_prompt(shot, PromptSettings())
            fitted = renderer.fit_prompt(full)
            for text in (fitted.positive, fitted.positive_2, fitted.negative):
                assert len(tokenizer(text).input_ids) <= 77
            assert fitted.positive.startswith("aldar_kose_man") and fitted.positive_2.startswith("aldar_kose_man")
            trimmed += fitted != full
    # the subject prompt is written to fit: trimming is the exception, not the rule
    assert trimmed <= len(stories)


# -- start-up errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("base_model", "/nope/sdxl", "engine.base_model: path not found: /nope/sdxl"),
        ("lora", "/nope/aldar.safetensors", "engine.lora: path not found: /nope/aldar.safetensors"),
        ("clip_model", "./nope-clip", "engine.clip_model: path not found: ./nope-clip"),
        ("base_model", "someone/not-cached-sdxl", "not found locally; set HF_HOME or a local path"),
        ("reference_images", "/nope/refs", "engine.reference_images: folder not found: /nope/refs"),
    ],
)
def test_a_bad_model_setting_fails_at_start_up_naming_key_and_path(tiny_sdxl_dir, tiny_clip_dir, field, value,
                                                                   message, sdxl_settings):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    settings = sdxl_settings(tiny_sdxl_dir, tiny_clip_dir, **{field: value})
    with pytest.raises(ModelLoadError) as err:
        build_engine(settings)
    assert message in str(err.value)


def test_an_unreadable_model_folder_is_reported(tmp_path, tiny_clip_dir, sdxl_settings):
    broken = tmp_path / "broken_sdxl"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=f"engine.base_model: could not load {broken}"):
        build_engine(sdxl_settings(broken, tiny_clip_dir))


def test_auto_on_a_machine_without_cuda_picks_preview_and_says_why():
    engine = build_engine(EngineSettings(render=RenderSettings(renderer="auto")))
    assert engine.renderer.name == "preview"
    assert engine.reasons["renderer"].startswith("auto: no CUDA device")


# -- real weights on a GPU host --------------------------------------------------------------------


@pytest.mark.gpu
def test_a_real_board_on_a_gpu_keeps_the_character(tmp_path):
    """Needs CUDA and real weights: ALDAR_SDXL_BASE, ALDAR_LORA, ALDAR_CLIP (paths or cached hub ids)."""
    settings = EngineSettings(
        render=RenderSettings(renderer="sdxl", base_model=os.environ["ALDAR_SDXL_BASE"],
                              lora=os.environ.get("ALDAR_LORA", ""), clip_model=os.environ["ALDAR_CLIP"])
    )
    engine = build_engine(settings)
    engine.run(BoardRequest(STORY, frames=8, seed=1), tmp_path / "b")
    report = report_of(tmp_path / "b")
    assert [Image.open(tmp_path / "b" / f"frame_{i:02d}.png").size for i in range(1, 9)] == [(1024, 1024)] * 8
    identities = [f["attempts"][f["chosen_attempt"]]["scores"]["identity"] for f in report["frames"][1:]]
    assert sum(identities) / len(identities) >= 0.70
    assert all(f["accepted"] for f in report["frames"])


def test_cuda_settings_can_be_switched_off(tiny_sdxl_dir, sdxl_settings):
    from diffusers.models.attention_processor import AttnProcessor

    engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", sdpa=False, fuse_qkv=False))
    processors = set(type(p) for p in engine.renderer.pipe.unet.attn_processors.values())
    assert processors == {AttnProcessor}
    assert engine.models.applied["sdpa"] is False and "fuse_qkv" not in engine.models.applied


def test_without_an_identity_check_frame_1_is_still_drawn_alone(tiny_sdxl_dir, tmp_path, sdxl_settings):
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, ""))
    events: list[ProgressEvent] = []
    engine.run(BoardRequest(STORY, frames=6, seed=1), tmp_path / "b", on_progress=events.append)
    assert [(e.frame, e.last_frame) for e in events if e.stage == "rendering"] == [(1, 1), (2, 5), (6, 6)]


def test_no_lora_draws_without_the_character_lora_and_the_next_board_has_it_back_exactly(
        tiny_sdxl_dir, tiny_lora_file, tmp_path, sdxl_settings):
    picture = Image.new("RGB", (48, 64), (200, 60, 60))
    plain = build_engine(sdxl_settings(tiny_sdxl_dir, "", lora=""))
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", lora=str(tiny_lora_file)))
    unet = engine.renderer.pipe.unet
    fused = {name: tensor.clone() for name, tensor in unet.state_dict().items()}
    engine.run(BoardRequest(STORY, frames=1, seed=3), tmp_path / "on_before")

    engine.run(BoardRequest(STORY, frames=1, seed=3, character_image=picture, lora=False), tmp_path / "off")
    plain.run(BoardRequest(STORY, frames=1, seed=3, character_image=picture, lora=False), tmp_path / "plain")
    assert_same_picture(frame_array(tmp_path / "off", 1), frame_array(tmp_path / "plain", 1), "without the LoRA")
    report = report_of(tmp_path / "off")
    assert (report["lora"], report["character_image"]) == (False, "character.png")
    frame = report["frames"][0]
    assert "aldar_kose_man" not in frame["prompt"] + frame["prompt_2"]

    engine.run(BoardRequest(STORY, frames=1, seed=3), tmp_path / "on_after")  # the next board: the LoRA is back
    assert all(torch.equal(unet.state_dict()[name], tensor) for name, tensor in fused.items())
    assert_same_picture(frame_array(tmp_path / "on_before", 1), frame_array(tmp_path / "on_after", 1), "LoRA back")


def test_no_lora_is_refused_where_the_operator_switched_it_off(tiny_sdxl_dir, tiny_lora_file, tmp_path, sdxl_settings):
    engine = build_engine(sdxl_settings(tiny_sdxl_dir, "", lora=str(tiny_lora_file), lora_switch=False))
    assert engine.models.character_lora is None  # and so no copy of the weights is kept
    with pytest.raises(InvalidRequest, match="lora_switch"):
        engine.run(BoardRequest(STORY, frames=1, seed=3, character_image=Image.new("RGB", (8, 8)), lora=False),
                   tmp_path / "b")
