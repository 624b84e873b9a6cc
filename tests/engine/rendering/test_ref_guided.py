"""Ref-guided mode on tiny offline models: frame 1 is the reference (IP-Adapter), each later
frame follows its shot's pose (ControlNet-OpenPose), and every component is shared with simple mode."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.build import build_engine
from engine.errors import InvalidRequest
from engine.models import ModelLoadError
from engine.settings import EngineSettings, RenderSettings
from engine.storyboard import BoardRequest
from tests.reproducibility import assert_other_picture
from tests.tiny_models import build_tiny_ip_adapter

STORY = (
    "Aldar Kose arrives at a busy bazaar with an empty pot. A greedy merchant laughs at his coat. "
    "Aldar Kose swears the pot boils soup by itself. The merchant trades his horse for the pot. "
    "Aldar Kose rides away across the steppe at sunset."
)


@pytest.fixture(scope="module")
def settings(render_dtype):
    """Engine settings for the tiny models, in the dtype this round of the module runs in."""
    def make(base: Path, **engine) -> EngineSettings:
        values = {"renderer": "sdxl", "base_model": str(base), "clip_model": "", "width": 64, "height": 64,
                  "steps": 2, "batch_size": 4, "dtype": render_dtype, **engine}
        return EngineSettings(render=RenderSettings(**values))
    return make


@pytest.fixture(scope="module")
def both_modes(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, tiny_lora_file, settings):
    return build_engine(settings(tiny_sdxl_dir, lora=str(tiny_lora_file), ref_guided=True,
                                 controlnet=str(tiny_controlnet_dir), ip_adapter=str(tiny_ip_adapter_dir)))


def frames(folder: Path, count: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"frame_{i:02d}.png")) for i in range(1, count + 1)]


def test_an_eight_frame_ref_guided_board_renders_with_poses(both_modes, tmp_path):
    board = both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=8, seed=3), tmp_path / "b")
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["mode"] == "ref-guided"
    assert report["ref_guided"]["ip_adapter_scale"] == 0.5 and report["ref_guided"]["controlnet_scale"] == 0.8
    assert report["frames"][0]["pose_template"] is None  # frame 1 is drawn in simple mode: the reference
    for frame, shot in zip(report["frames"][1:], board.plan.shots[1:], strict=True):
        assert frame["pose_template"] == shot.pose
        pose = Image.open(tmp_path / "b" / frame["pose_file"])
        assert pose.size == (64, 64)
    assert all(img.shape == (64, 64, 3) for img in frames(tmp_path / "b", 8))
    assert report["models"]["sources"]["engine.controlnet"].endswith("tiny_controlnet0")


def test_both_pipelines_share_every_component(both_modes):
    renderer = both_modes.renderer
    base, guided = renderer.pipe, renderer.ref_guided.pipe
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "scheduler", "image_encoder"):
        assert getattr(base, name) is getattr(guided, name), name
    shared = {id(p) for m in (base.unet, base.vae, base.text_encoder, base.text_encoder_2) for p in m.parameters()}
    held = {id(p) for m in (guided.unet, guided.vae, guided.text_encoder, guided.text_encoder_2)
            for p in m.parameters()}
    assert held == shared  # not a single parameter copied
    assert both_modes.models.loads == 4  # base, LoRA, ControlNet, IP-Adapter: each once


def test_simple_boards_are_bit_identical_with_ref_guided_loaded(both_modes, tiny_sdxl_dir, tiny_lora_file, tmp_path, settings):
    simple_only = build_engine(settings(tiny_sdxl_dir, lora=str(tiny_lora_file), ref_guided=False))
    both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=1), tmp_path / "warm")  # switch modes
    both_modes.run(BoardRequest(STORY, mode="simple", frames=4, seed=5), tmp_path / "with")
    simple_only.run(BoardRequest(STORY, mode="simple", frames=4, seed=5), tmp_path / "without")
    # byte for byte: the same request draws the same batches, and loading ref-guided changes no weight
    for with_rg, without_rg in zip(frames(tmp_path / "with", 4), frames(tmp_path / "without", 4), strict=True):
        assert np.array_equal(with_rg, without_rg)


def test_ref_guided_frames_differ_from_simple_ones(both_modes, tmp_path):
    both_modes.run(BoardRequest(STORY, mode="simple", frames=3, seed=2), tmp_path / "simple")
    both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2), tmp_path / "guided")
    simple, guided = frames(tmp_path / "simple", 3), frames(tmp_path / "guided", 3)
    # byte for byte: frame 1, the reference, is drawn alone in simple mode whatever the board's mode
    assert np.array_equal(simple[0], guided[0])
    assert_other_picture(simple[1], guided[1])  # later frames are steered by pose and reference


# -- engine.ref_guided: "auto" (the default), true, false -------------------------------------------


def test_switched_off_it_loads_nothing_and_says_so(tiny_sdxl_dir, tmp_path, settings):
    simple_only = build_engine(settings(tiny_sdxl_dir, ref_guided=False))
    assert simple_only.models.loads == 1 and "engine.controlnet" not in simple_only.models.sources
    assert simple_only.reasons["ref_guided"] == "off (configured: engine.ref_guided = false)"
    with pytest.raises(InvalidRequest, match=r"ref-guided mode is switched off \(engine.ref_guided = false\)"):
        simple_only.run(BoardRequest(STORY, mode="ref-guided", frames=2, seed=1), tmp_path / "b")


def test_auto_is_the_default_and_loads_what_resolves(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, settings):
    assert RenderSettings().ref_guided == "auto"
    engine = build_engine(settings(tiny_sdxl_dir, controlnet=str(tiny_controlnet_dir),
                                   ip_adapter=str(tiny_ip_adapter_dir)))
    assert engine.renderer.modes == ("simple", "ref-guided") and engine.mode_off("ref-guided") is None
    assert engine.reasons["ref_guided"] == "on (auto: its weights loaded)"


def test_auto_without_its_weights_draws_simple_boards_and_names_what_is_missing(tiny_sdxl_dir, tmp_path, settings):
    # the default hub ids, offline: the ControlNet cannot resolve
    engine = build_engine(settings(tiny_sdxl_dir))
    off = engine.mode_off("ref-guided")
    assert off is not None and off.weights == "engine.controlnet = controlnet-openpose-sdxl-1.0"
    assert engine.reasons["ref_guided"].startswith("off (auto: its weights did not load (engine.controlnet = ")
    engine.run(BoardRequest(STORY, mode="simple", frames=2, seed=1), tmp_path / "simple")
    assert (tmp_path / "simple" / "report.json").is_file()
    with pytest.raises(InvalidRequest, match=r"its weights did not load \(engine.controlnet = "):
        engine.run(BoardRequest(STORY, mode="ref-guided", frames=2, seed=1), tmp_path / "guided")


def test_true_without_its_weights_stops_start_up(tiny_sdxl_dir, settings):
    with pytest.raises(ModelLoadError, match="engine.controlnet = 'xinsir/controlnet-openpose-sdxl-1.0'"):
        build_engine(settings(tiny_sdxl_dir, ref_guided=True))


def test_a_half_loaded_ip_adapter_leaves_simple_mode_exactly_as_it_was(
        tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, tmp_path, settings):
    """diffusers registers the image encoder, then fails patching the UNet: auto undoes both."""
    broken = tmp_path / "broken_ip_adapter"
    shutil.copytree(tiny_ip_adapter_dir, broken)
    weights = broken / "sdxl_models" / "ip-adapter_sdxl.safetensors"
    tensors = load_file(weights)
    tensors["ip_adapter.1.to_k_ip.weight"] = tensors["ip_adapter.1.to_k_ip.weight"][:, :5].contiguous()  # wrong shape
    save_file(tensors, weights)
    engine = build_engine(settings(tiny_sdxl_dir, controlnet=str(tiny_controlnet_dir), ip_adapter=str(broken)))
    assert engine.mode_off("ref-guided").weights == "engine.ip_adapter = broken_ip_adapter"
    assert engine.renderer.pipe.image_encoder is None
    never = build_engine(settings(tiny_sdxl_dir, ref_guided=False))
    engine.run(BoardRequest(STORY, mode="simple", frames=3, seed=4), tmp_path / "after")
    never.run(BoardRequest(STORY, mode="simple", frames=3, seed=4), tmp_path / "never")
    for after, clean in zip(frames(tmp_path / "after", 3), frames(tmp_path / "never", 3), strict=True):
        assert np.array_equal(after, clean)  # byte for byte: the same request and batches, the same weights


def test_a_flat_ip_adapter_folder_loads_with_an_empty_subfolder(tiny_sdxl_dir, tiny_controlnet_dir, tmp_path, settings):
    flat = build_tiny_ip_adapter(tiny_sdxl_dir, tmp_path / "flat", subfolder="")
    assert (flat / "ip-adapter_sdxl.safetensors").is_file() and (flat / "image_encoder").is_dir()
    engine = build_engine(settings(tiny_sdxl_dir, ref_guided=True, controlnet=str(tiny_controlnet_dir),
                                   ip_adapter=str(flat), ip_adapter_subfolder=""))
    engine.run(BoardRequest(STORY, mode="ref-guided", frames=2, seed=1), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))["mode"] == "ref-guided"


def test_a_flat_folder_with_the_default_subfolder_names_the_file_the_folder_and_the_fix(
        tiny_sdxl_dir, tiny_controlnet_dir, tmp_path, settings):
    flat = build_tiny_ip_adapter(tiny_sdxl_dir, tmp_path / "flat", subfolder="")
    with pytest.raises(ModelLoadError) as caught:
        build_engine(settings(tiny_sdxl_dir, ref_guided=True, controlnet=str(tiny_controlnet_dir),
                              ip_adapter=str(flat)))
    message = str(caught.value)
    assert f"no weights file ip-adapter_sdxl.safetensors (engine.ip_adapter_weight) in {flat / 'sdxl_models'}" in message
    assert "engine.ip_adapter_subfolder = 'sdxl_models'" in message and "--ip-adapter-subfolder ''" in message


def test_a_missing_image_encoder_is_named_with_the_folder_it_was_looked_for_in(
        tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, tmp_path, settings):
    with pytest.raises(ModelLoadError, match=r"engine.image_encoder: no image encoder \(config.json\) in .*encoders"):
        build_engine(settings(tiny_sdxl_dir, ref_guided=True, controlnet=str(tiny_controlnet_dir),
                              ip_adapter=str(tiny_ip_adapter_dir), image_encoder="encoders"))


@pytest.mark.gpu
@pytest.mark.skipif(not (os.environ.get("ALDAR_CONTROLNET") and os.environ.get("ALDAR_IP_ADAPTER")),
                    reason="needs ALDAR_CONTROLNET and ALDAR_IP_ADAPTER weights")
def test_a_real_ref_guided_board_keeps_the_character_and_follows_the_poses(tmp_path):
    """Needs CUDA and real weights: ALDAR_SDXL_BASE, ALDAR_CLIP, ALDAR_CONTROLNET, ALDAR_IP_ADAPTER (+ ALDAR_LORA)."""
    render = RenderSettings(renderer="sdxl", base_model=os.environ["ALDAR_SDXL_BASE"],
                            lora=os.environ.get("ALDAR_LORA", ""), clip_model=os.environ["ALDAR_CLIP"],
                            controlnet=os.environ["ALDAR_CONTROLNET"], ip_adapter=os.environ["ALDAR_IP_ADAPTER"])
    engine = build_engine(EngineSettings(render=render))
    engine.run(BoardRequest(STORY, mode="ref-guided", frames=8, seed=1), tmp_path / "b")
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    identities = [f["attempts"][f["chosen_attempt"]]["scores"]["identity"] for f in report["frames"][1:]]
    assert sum(identities) / len(identities) >= 0.70
    assert [f["pose_template"] for f in report["frames"][1:]] == [f["shot"]["pose"] for f in report["frames"][1:]]


@pytest.mark.parametrize("source", ["images", "both"])
def test_configured_pictures_can_feed_ip_adapter(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, tmp_path,
                                                 both_modes, source, settings):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, colour in enumerate(((220, 30, 30), (30, 30, 220))):
        Image.new("RGB", (48, 48), colour).save(refs / f"aldar_{i}.png")
    engine = build_engine(settings(tiny_sdxl_dir, ref_guided=True, controlnet=str(tiny_controlnet_dir),
                                   ip_adapter=str(tiny_ip_adapter_dir), reference_images=str(refs),
                                   ip_adapter_reference=source, lora=both_modes.settings.render.lora))
    engine.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2), tmp_path / source)
    both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2), tmp_path / "frame1")
    report = json.loads((tmp_path / source / "report.json").read_text(encoding="utf-8"))
    assert report["ref_guided"]["ip_adapter_reference"] == source
    ours, theirs = frames(tmp_path / source, 3), frames(tmp_path / "frame1", 3)
    assert np.array_equal(ours[0], theirs[0])  # byte for byte: frame 1 is drawn alone in simple mode either way
    assert_other_picture(ours[1], theirs[1])  # the IP-Adapter saw other pictures


def test_pictures_for_ip_adapter_must_exist(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, settings):
    with pytest.raises(ModelLoadError, match="ip_adapter_reference = 'images' needs pictures"):
        build_engine(settings(tiny_sdxl_dir, ref_guided=True, controlnet=str(tiny_controlnet_dir),
                              ip_adapter=str(tiny_ip_adapter_dir), ip_adapter_reference="images"))


def test_a_users_picture_guides_every_frame_frame_1_included(both_modes, tmp_path):
    red, blue = Image.new("RGB", (48, 64), (220, 30, 30)), Image.new("RGB", (48, 64), (30, 30, 220))
    both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2), tmp_path / "frame1")
    for name, picture in (("red", red), ("blue", blue)):
        both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2, character_image=picture),
                       tmp_path / name)
    report = json.loads((tmp_path / "red" / "report.json").read_text(encoding="utf-8"))
    assert report["character_image"] == "character.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "red" / "character.png")), np.asarray(red))
    assert report["ref_guided"]["ip_adapter_reference"] == "character_image"
    assert all(frame["pose_template"] for frame in report["frames"])  # frame 1 is guided too, with its pose
    without, reds, blues = frames(tmp_path / "frame1", 3), frames(tmp_path / "red", 3), frames(tmp_path / "blue", 3)
    for i in range(3):
        assert_other_picture(reds[i], without[i], f"frame {i + 1}: the picture guides it, not frame 1")
        assert_other_picture(reds[i], blues[i], f"frame {i + 1}: IP-Adapter saw the picture")
