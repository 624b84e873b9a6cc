"""The user's character picture at the door (bot/pictures.py): what passes, what is refused and
why, and what is stored. Real Pillow decoders on real files, made here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.errors import BadRequest, StoryError
from bot.jobs.requests import board_request
from bot.messages import text
from bot.pictures import PictureRules, Upload, read_picture
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from tests.helpers import ALICE, BOB, WORKER_STORY


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def rules(tmp_path) -> PictureRules:
    return PictureRules(max_mb=1.0, outputs=tmp_path / "outputs")


def refusal(rules: PictureRules, data: bytes) -> str:
    with pytest.raises(BadRequest) as caught:
        rules.accept(data)
    assert not rules.folder.exists() or not any(rules.folder.iterdir()), "a refused picture is not stored"
    return caught.value.key


def test_a_photo_is_stored_as_an_rgb_png_and_read_back_the_same(rules):
    photo = Image.new("RGB", (120, 90), (200, 60, 60))
    path = rules.accept(encoded(photo, "JPEG", quality=95))
    assert path.parent == rules.folder and path.suffix == ".png"
    stored = read_picture(path)
    assert (stored.mode, stored.size) == ("RGB", (120, 90))
    assert rules.accept(encoded(photo, "JPEG", quality=95)) == path  # the same picture is stored once


def test_cmyk_palette_and_transparent_pictures_are_converted_to_rgb(rules):
    cmyk = read_picture(rules.accept(encoded(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG")))
    assert cmyk.mode == "RGB" and cmyk.getpixel((10, 10))[0] > 200  # still red
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert read_picture(rules.accept(encoded(clear, "PNG"))).getpixel((5, 5)) == (255, 255, 255)  # over white
    assert read_picture(rules.accept(encoded(Image.new("P", (20, 20), 3), "GIF"))).mode == "RGB"


def test_a_large_picture_is_stored_at_a_reference_size_upright(rules):
    big = Image.new("RGB", (3000, 1000), (10, 200, 10))
    exif = big.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": a phone held upright
    stored = read_picture(rules.accept(encoded(big, "JPEG", exif=exif, quality=70)))
    assert stored.size[1] == 1024 and 340 <= stored.size[0] <= 342  # turned upright, then fitted to 1024


def test_more_bytes_than_the_limit_is_refused_before_anything_is_decoded(rules):
    assert refusal(rules, b"\xff" * (1_000_001)) == "err_picture_too_big"
    rules.check_size(1_000_000)  # the declared size of an upload, checked before it is fetched
    with pytest.raises(BadRequest) as caught:
        rules.check_size(5_000_000)
    assert caught.value.key == "err_picture_too_big" and caught.value.params == {"size": "5.0", "max": "1.0"}


@pytest.mark.parametrize("data", [b"just some text", b"", b"%!PS-Adobe-3.0 EPSF-3.0\n"])
def test_what_is_not_a_picture_of_an_allowed_format_is_refused(rules, data):
    assert refusal(rules, data) == "err_picture_unreadable"


def test_a_truncated_picture_is_refused(rules):
    data = encoded(Image.effect_noise((200, 200), 60).convert("RGB"), "PNG")
    assert refusal(rules, data[: len(data) // 2]) == "err_picture_unreadable"


def test_a_decompression_bomb_is_refused_from_its_header(rules, monkeypatch):
    small_file = encoded(Image.new("RGB", (400, 400)), "PNG")  # a few KB that decode to 160 000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    assert refusal(rules, small_file) == "err_picture_too_many_pixels"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)  # past twice the limit Pillow raises by itself
    assert refusal(rules, small_file) == "err_picture_too_many_pixels"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animated_picture_is_refused(rules, fmt):
    frames = [Image.new("RGB", (20, 20), (i * 100, 0, 0)) for i in range(3)]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    assert refusal(rules, data) == "err_picture_animated"


# -- the service and the worker: a picture goes with its job --------------------------------------

MODERATOR = Requester(platform="console", user_id="local", chat_id="console")  # the default moderator


class CountedUpload:
    """An upload that counts its downloads."""

    def __init__(self, data: bytes) -> None:
        self.data, self.fetches = data, 0

    async def fetch(self) -> bytes:
        self.fetches += 1
        return self.data

    def upload(self, **declared) -> Upload:
        return Upload(self.fetch, **declared)


def a_picture(colour=(200, 60, 60)) -> Image.Image:
    return Image.new("RGB", (60, 80), colour)


async def test_a_picture_goes_with_its_job_to_the_board_and_to_every_redraw_of_it(rig_factory):
    rig = await rig_factory(engine={"renderer": "preview", "width": 64, "height": 64})
    picture = a_picture()
    submitted = await rig.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=2),
                                                      picture=Upload.of_bytes(encoded(picture, "PNG"))))
    await rig.worker.run(burst=True)
    board_job = await rig.store.get_job(submitted.job_id)
    assert board_job.status == "done" and board_job.lora is True
    redraws = [(await rig.service.regenerate(ALICE, board_job.id)).job_id,
               (await rig.service.regenerate(ALICE, board_job.id, frame=2)).job_id]
    await rig.worker.run(burst=True)
    for job_id in (board_job.id, *redraws):
        job = await rig.store.get_job(job_id)
        assert (job.status, job.character_image) == ("done", board_job.character_image)
        folder = Path(job.report_path).parent
        assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["character_image"] == "character.png"
        assert np.array_equal(np.asarray(Image.open(folder / "character.png")), np.asarray(picture))


async def test_a_resumed_job_is_drawn_from_its_picture_again(rig_factory, tmp_path):
    rig = await rig_factory()
    picture = a_picture((20, 160, 90))
    job_id = (await rig.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=2, lora=False),
                                                    picture=Upload.of_bytes(encoded(picture, "PNG"))))).job_id
    job = await rig.store.get_job(job_id)
    request = board_request(job, tmp_path / "board", None)  # what the worker asks the engine for, from the row
    assert request.lora is False
    assert np.array_equal(np.asarray(request.character_image), np.asarray(picture))


async def test_nothing_is_downloaded_for_a_banned_user_a_refused_story_or_a_bad_option(rig_factory):
    rig = await rig_factory()
    upload = CountedUpload(encoded(a_picture(), "PNG"))
    await rig.service.ban(MODERATOR, "test", "bob")
    attempts = [StoryRequest(BOB, WORKER_STORY, picture=upload.upload()),
                StoryRequest(ALICE, "   ", picture=upload.upload()),
                StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=99), picture=upload.upload()),
                StoryRequest(ALICE, WORKER_STORY, picture=upload.upload(size=50_000_000)),
                StoryRequest(ALICE, WORKER_STORY, picture=upload.upload(content_type="text/plain")),
                StoryRequest(ALICE, WORKER_STORY, picture=upload.upload(content_type="video/mp4"))]  # a Telegram GIF
    refusals = []
    for attempt in attempts:
        with pytest.raises(StoryError) as caught:
            await rig.service.submit(attempt)
        refusals.append(caught.value.key)
    assert refusals == ["err_user_banned", "err_empty", "err_bad_option", "err_picture_too_big",
                        "err_picture_unreadable", "err_picture_animated"]
    assert upload.fetches == 0
    assert await rig.store.active_jobs() == []
    await rig.service.submit(StoryRequest(ALICE, WORKER_STORY, picture=upload.upload(content_type="image/png")))
    assert upload.fetches == 1


@pytest.mark.parametrize(("use", "mode", "note"), [
    ("inset", "simple", "note_picture_inset"),
    ("checks", "simple", "note_picture_checks"),
    ("checks_no_ip_adapter", "simple", "note_picture_checks_no_ip_adapter"),
    ("guides", "ref-guided", None),
])
async def test_the_acknowledgement_says_what_the_picture_will_not_do_on_this_bot(store, config, use, mode, note):
    service = StoryService(store, config, picture_use=lambda asked: use if asked == mode else None)
    submitted = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(mode=mode),
                                                  picture=Upload.of_bytes(encoded(a_picture(), "PNG"))))
    lines = submitted.text.splitlines()
    assert lines[0] == text("queued", "en", job=submitted.job_id, position=1)
    assert lines[1:] == ([text(note, "en")] if note else [])
    plain = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(mode=mode)))
    assert len(plain.text.splitlines()) == 1  # no picture, nothing to say


async def test_no_lora_without_a_picture_is_refused_with_the_reason(store, config):
    with pytest.raises(StoryError) as caught:
        await StoryService(store, config).submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(lora=False)))
    assert caught.value.key == "err_no_lora_needs_picture"
    assert await store.active_jobs() == []
