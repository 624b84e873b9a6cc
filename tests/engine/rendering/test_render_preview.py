"""The preview renderer paints honest, deterministic sketch panels from a shot's fields."""

from __future__ import annotations

import time

import pytest
from PIL import Image, ImageStat

from engine.rendering.preview import (
    FIGURE_COLOUR,
    HORSE_COLOUR,
    KALPAK_COLOUR,
    OTHER_COLOUR,
    PREVIEW_MARK_COLOUR,
    PreviewRenderer,
)
from engine.rendering.prompts import build_prompt
from engine.rendering.base import FrameRequest, Renderer
from engine.settings import PromptSettings
from engine.shots import FRAMINGS, POSES, SETTINGS, TIMES_OF_DAY, Shot


def make_shot(**overrides: object) -> Shot:
    fields: dict[str, object] = {
        "index": 1,
        "description": "Aldar Kose grins at the merchant",
        "caption": "Алдар Көсе саудагерге күлді.",
        "action": "grins at the merchant",
        "setting": "steppe",
        "framing": "medium",
        "camera_angle": "front",
        "pose": "standing",
        "emotion": "sly",
        "time_of_day": "day",
    }
    fields.update(overrides)
    return Shot(**fields)


def make_request(shot: Shot | None = None, *, seed: int = 7, size: tuple[int, int] = (384, 384), **kwargs: object) -> FrameRequest:
    shot = shot or make_shot()
    prompt = build_prompt(shot, PromptSettings())
    return FrameRequest(shot=shot, prompt=prompt, seed=seed, width=size[0], height=size[1], **kwargs)


def render(shot: Shot | None = None, **kwargs: object) -> Image.Image:
    return PreviewRenderer().draw(make_request(shot, **kwargs))


def count_colour(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int] | None = None) -> int:
    region = image.crop(box) if box else image
    return sum(1 for pixel in region.get_flattened_data() if pixel == colour)


def test_renderer_is_named_preview_and_fits_the_protocol() -> None:
    renderer: Renderer = PreviewRenderer()
    assert renderer.name == "preview"


@pytest.mark.parametrize("size", [(384, 384), (768, 768), (320, 200), (200, 320), (64, 64)])
def test_panel_is_rgb_and_exactly_the_requested_size(size: tuple[int, int]) -> None:
    image = render(size=size)
    assert image.mode == "RGB"
    assert image.size == size


def test_same_request_gives_identical_pixels() -> None:
    request = make_request(make_shot(setting="bazaar", time_of_day="sunset", characters=("merchant",)), seed=42)
    renderer = PreviewRenderer()
    assert renderer.draw(request).tobytes() == renderer.draw(request).tobytes()


def test_seeds_change_only_small_details() -> None:
    first, second = render(seed=1), render(seed=2)
    changed = sum(1 for a, b in zip(first.get_flattened_data(), second.get_flattened_data()) if a != b)
    assert 0 < changed < 0.1 * first.width * first.height


def test_night_sky_is_darker_than_day_sky() -> None:
    def sky_brightness(time_of_day: str) -> float:
        image = render(make_shot(time_of_day=time_of_day, framing="wide"))
        top = image.crop((0, 0, image.width, image.height * 3 // 10)).convert("L")
        return ImageStat.Stat(top).mean[0]

    assert sky_brightness("day") - sky_brightness("night") > 80
    assert sky_brightness("sunset") != sky_brightness("dawn")


def test_each_setting_paints_its_own_ground() -> None:
    def ground_mean(setting: str) -> tuple[float, ...]:
        image = render(make_shot(setting=setting, framing="wide", camera_angle="eye-level"))
        strip = image.crop((0, round(image.height * 0.6), image.width // 8, round(image.height * 0.7)))
        return tuple(ImageStat.Stat(strip).mean)

    means = {setting: ground_mean(setting) for setting in SETTINGS}
    assert sum(means["winter steppe"]) > sum(means["steppe"]) + 100  # snow is bright
    assert len(set(means.values())) >= 6  # most settings differ even in one ground strip
    panels = {render(make_shot(setting=setting, framing="wide")).tobytes() for setting in SETTINGS}
    assert len(panels) == len(SETTINGS)


def test_close_up_figure_covers_more_than_medium_more_than_wide() -> None:
    def figure_pixels(framing: str) -> int:
        image = render(make_shot(framing=framing))
        return count_colour(image, FIGURE_COLOUR) + count_colour(image, KALPAK_COLOUR)

    coverage = {framing: figure_pixels(framing) for framing in FRAMINGS}
    assert coverage["wide"] > 0
    assert coverage["medium"] > 3 * coverage["wide"]
    assert coverage["close-up"] > 1.2 * coverage["medium"]
    assert coverage["close-up"] > 0.2 * 384 * 384  # head and shoulders fill much of the panel


def test_riding_puts_a_horse_under_the_figure() -> None:
    assert count_colour(render(make_shot(pose="riding", framing="wide")), HORSE_COLOUR) > 200
    assert count_colour(render(make_shot(pose="standing", framing="wide")), HORSE_COLOUR) == 0


def test_pointing_reaches_further_than_standing() -> None:
    def figure_width(pose: str) -> int:
        image = render(make_shot(pose=pose, framing="wide"))
        columns = {x for x in range(image.width) for y in range(image.height // 2, image.height) if image.getpixel((x, y)) == FIGURE_COLOUR}
        return max(columns) - min(columns)

    assert figure_width("pointing") > figure_width("standing") * 1.3


def test_preview_ribbon_is_drawn_in_the_top_right_corner() -> None:
    image = render(make_shot(time_of_day="day"), size=(512, 512))
    corner = (256, 0, 512, 256)
    red = count_colour(image, PREVIEW_MARK_COLOUR, corner)
    assert red > 0.02 * 512 * 512
    lettering = count_colour(image, (255, 255, 255), corner)  # the word PREVIEW, in white on red
    assert lettering > 300
    assert count_colour(image, PREVIEW_MARK_COLOUR, (0, 256, 256, 512)) == 0  # only in the corner


def test_honesty_note_is_written_in_the_bottom_right() -> None:
    image = render(size=(512, 512))
    strip = image.crop((300, 490, 512, 512)).convert("L")
    light = sum(1 for value in strip.get_flattened_data() if value > 150)
    dark = sum(1 for value in strip.get_flattened_data() if value < 90)
    assert light > 50 and dark > light  # light letters on the dark band


def test_reference_is_accepted_and_only_changes_the_note() -> None:
    reference = Image.new("RGB", (64, 64), (10, 20, 30))
    plain, guided = render(), render(reference=reference)
    changed = sum(1 for a, b in zip(plain.get_flattened_data(), guided.get_flattened_data()) if a != b)
    assert 0 < changed < 0.02 * plain.width * plain.height


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("pose", POSES)
def test_every_pose_and_framing_renders(pose: str, framing: str) -> None:
    image = render(make_shot(pose=pose, framing=framing, characters=("bai",)), size=(128, 128))
    assert count_colour(image, FIGURE_COLOUR) > 0


@pytest.mark.parametrize("time_of_day", TIMES_OF_DAY)
def test_every_time_of_day_renders(time_of_day: str) -> None:
    assert render(make_shot(time_of_day=time_of_day), size=(96, 96)).size == (96, 96)


def test_too_small_frame_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="width must be between 64"):
        make_request(size=(10, 384))
    with pytest.raises(ValueError, match="height"):
        make_request(size=(384, 63))


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        make_request(seed=-1)


def test_delay_imitates_gpu_time() -> None:
    started = time.perf_counter()
    PreviewRenderer(delay_s=0.05).draw(make_request(size=(64, 64)))
    assert time.perf_counter() - started >= 0.05
    with pytest.raises(ValueError):
        PreviewRenderer(delay_s=-1)


def test_a_panel_without_aldar_kose_shows_whom_it_is_about_without_his_kalpak() -> None:
    with_him = render(make_shot(characters=("merchant",), cast_ids=(0, 1)))
    without = render(make_shot(characters=("merchant",), cast_ids=(1,)))
    assert count_colour(with_him, KALPAK_COLOUR) > 50  # the white felt hat marks Aldar Kose
    assert count_colour(without, KALPAK_COLOUR) == 0
    assert count_colour(without, OTHER_COLOUR) > count_colour(with_him, OTHER_COLOUR) // 2 > 0
    assert count_colour(without, FIGURE_COLOUR) < count_colour(with_him, FIGURE_COLOUR)


def test_a_users_picture_is_shown_as_a_small_inset_under_the_number() -> None:
    picture = Image.new("RGB", (60, 80), (12, 200, 120))  # a colour nothing else in a panel has
    plain, with_picture = render(), render(picture=picture)
    assert count_colour(plain, (12, 200, 120)) == 0
    inset = count_colour(with_picture, (12, 200, 120), box=(0, 0, 384 // 3, 384 // 2))  # the top-left, under "1"
    assert 0.02 * 384 * 384 < inset < 0.06 * 384 * 384  # small: about a fifth of the panel's height
    assert count_colour(with_picture, (12, 200, 120)) == inset  # nowhere else
