"""Engine flags on `python -m bot run|story` become [engine] overrides with the config's key names."""

from __future__ import annotations

import pytest

from bot.__main__ import build_parser, engine_overrides


def overrides(*argv: str) -> dict[str, object]:
    return engine_overrides(build_parser().parse_args(["story", "a story", *argv]))


def test_no_flags_override_nothing() -> None:
    assert overrides() == {}


def test_ref_guided_flags_name_their_keys() -> None:
    assert overrides("--controlnet", "cn", "--ip-adapter", "ip", "--ip-adapter-weight", "w.safetensors",
                     "--image-encoder", "enc", "--size", "768x512") == {
        "controlnet": "cn", "ip_adapter": "ip", "ip_adapter_weight": "w.safetensors", "image_encoder": "enc",
        "width": 768, "height": 512}


def test_pose_pictures_switch_on_detection() -> None:
    assert overrides("--pose-images", "poses/", "--pose-detector", "weights/") == {
        "pose_images": "poses/", "pose_source": "detect", "pose_detector": "weights/"}
    assert "pose_source" not in overrides("--pose-detector", "weights/")


def test_a_bad_size_is_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        overrides("--size", "big")
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
