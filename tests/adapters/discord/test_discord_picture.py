"""/story's ``image`` and ``no_lora`` options on Discord (issue 19, part 3): the real discord.py
downloads the user's attachment from the local fake, inside the real composition root
(``run_bot``) with the real service, picture checks, queue, worker and engine."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.config import AppConfig
from bot.messages import text
from bot.pictures import FORMATS
from tests.adapters.discord.rig import boards, running
from tests.fakes.discord_server import GUILD_ID, FakeDiscord
from tests.helpers import db_rows

ALICE = 5001
STORY = "Aldar Kose tricks a greedy merchant at the bazaar"


async def first_reply(fake: FakeDiscord, iid: int, timeout: float = 15) -> str:
    """What the deferred ("thinking") answer to the interaction was first filled with."""
    def filled(f: FakeDiscord) -> str | None:
        original = f.original(iid)
        if original is None:
            return None
        shown = [h.get("content") for h in original.history] + [original.content]
        return next((t for t in shown if t), None)

    return await fake.wait_for(filled, timeout=timeout)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def character(size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A small RGB picture with structure (a gradient and a block), so CLIP sees something."""
    image = Image.new("RGB", size)
    image.putdata([(x * 5 % 256, y * 6 % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    image.paste((250, 30, 40), (8, 6, 24, 30))
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no pixel data:
    a decompression bomb as far as any decoder that trusts the header is concerned."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), color) for color in ((200, 20, 20), (20, 20, 200))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def stored_pictures(config: AppConfig) -> list[Path]:
    folder = config.storage.outputs / "pictures"
    return sorted(folder.iterdir()) if folder.exists() else []


# -- the picture draws the board -----------------------------------------------------------------
@pytest.fixture
def sdxl_engine_section(tiny_sdxl_dir, tiny_clip_dir):
    return {"renderer": "sdxl", "base_model": str(tiny_sdxl_dir), "clip_model": str(tiny_clip_dir),
            "width": 64, "height": 64, "steps": 2, "ref_guided": False}


async def test_story_with_an_image_draws_a_board_checked_against_that_picture(
    fake, dc_config, errors, sdxl_engine_section, tiny_clip_dir
):
    config = dc_config(engine=sdxl_engine_section, validation={"face_check": False})
    picture = character()
    async with running(config, fake):
        synced = {o["name"]: o for o in next(c for c in fake.commands(GUILD_ID) if c["name"] == "story")["options"]}
        assert (synced["image"]["type"], synced["image"].get("required", False)) == (11, False)
        assert (synced["no_lora"]["type"], synced["no_lora"].get("required", False)) == (5, False)
        upload = fake.upload(encoded(picture, "PNG"), "me.png")
        iid = await fake.slash("story", {"text": STORY, "frames": 2, "seed": 7, "image": upload}, user_id=ALICE)
        await fake.wait_for(lambda f: boards(f), timeout=120)
    assert fake.downloaded(upload) == 1
    reply = await first_reply(fake, iid)
    assert reply.startswith("🧾 Job #1 is queued") and text("note_picture_checks_no_ip_adapter", "en") in reply

    [(report_path, stored, lora)] = await db_rows(config, "SELECT report_path, character_image, lora FROM jobs")
    assert lora == 1 and Path(stored).parent == config.storage.outputs / "pictures"
    folder = Path(report_path).parent
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    assert report["character_image"] == "character.png" and report["validator"] == "clip"
    with Image.open(folder / "character.png") as kept:
        assert kept.mode == "RGB" and kept.size == picture.size
        assert kept.tobytes() == picture.tobytes()  # the picture's own pixels

    # recompute every frame's identity against the picture, independently of the engine's run
    from engine.identity.validate import ClipScorer
    from engine.models import ModelLoader
    from engine.settings import RenderSettings

    model, processor = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir))).clip()
    scorer = ClipScorer(model, processor)
    frames = report["frames"]
    assert [f["index"] for f in frames] == [1, 2]
    scored = [f for f in frames if "identity" in f["attempts"][f["chosen_attempt"]]["scores"]]
    assert scored and scored[0]["index"] == 1  # the offline planner puts Aldar Kose in the first shot
    drawn_frames: dict[int, Image.Image] = {}
    for frame in scored:
        with Image.open(folder / frame["file"]) as drawn:
            image = drawn_frames[frame["index"]] = drawn.convert("RGB")
        reported = frame["attempts"][frame["chosen_attempt"]]["scores"]["identity"]
        [against_picture] = scorer.with_pictures([picture]).score([image], texts=[frame["shot"]["description"]],
                                                                   reference=None)
        assert reported == pytest.approx(against_picture["identity"], abs=2e-3), frame["index"]
        if frame["index"] == 1:
            # without a picture, frame 1 would be its own reference (an identity of 1.0)
            [against_itself] = scorer.with_pictures([image]).score([image], texts=[frame["shot"]["description"]],
                                                                  reference=None)
            assert against_itself["identity"] == pytest.approx(1.0, abs=1e-3)
            assert reported != pytest.approx(1.0, abs=1e-2)
        else:  # nor is any later frame scored against frame 1
            [against_frame_1] = scorer.with_pictures([drawn_frames[1]]).score(
                [image], texts=[frame["shot"]["description"]], reference=None)
            assert reported != pytest.approx(against_frame_1["identity"], abs=1e-2)
    assert errors() == []


# -- bad pictures ------------------------------------------------------------------------------------
BAD_PICTURES = {
    # (the upload, the reply's catalogue key and parameters, downloads expected)
    "not an image": (lambda fake: fake.upload(b"just some notes\n", "notes.txt"),
                     ("err_picture_unreadable", {"formats": ", ".join(FORMATS)}), 0),
    "text that says it is a PNG": (
        lambda fake: fake.upload(b"just some notes\n", "notes.png", content_type="image/png"),
        ("err_picture_unreadable", {"formats": ", ".join(FORMATS)}), 1),  # the service's check is the authority
    "over the size limit": (lambda fake: fake.upload(encoded(character(), "PNG"), "big.png", declared_size=25_000_000),
                            ("err_picture_too_big", {"size": "25.0", "max": "10.0"}), 0),
    "a decompression bomb": (lambda fake: fake.upload(png_claiming(30_000, 30_000), "bomb.png"),
                             ("err_picture_too_many_pixels", {"max": f"{Image.MAX_IMAGE_PIXELS / 1e6:.0f}"}), 1),
    "animated": (lambda fake: fake.upload(animated_gif(), "dance.gif"), ("err_picture_animated", {}), 1),
}


@pytest.mark.parametrize("case", list(BAD_PICTURES), ids=list(BAD_PICTURES))
async def test_a_bad_picture_gets_its_reply_and_no_job_and_the_next_job_works(fake, dc_config, errors, case):
    make_upload, (key, params), downloads = BAD_PICTURES[case]
    config = dc_config()
    async with running(config, fake):
        upload = make_upload(fake)
        refused = await fake.slash("story", {"text": STORY, "frames": 2, "image": upload}, user_id=ALICE)
        said = await first_reply(fake, refused)
        assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
        assert stored_pictures(config) == []
        following = await fake.slash("story", {"text": STORY, "frames": 2}, user_id=ALICE)
        await fake.wait_for(lambda f: boards(f), timeout=30)
    assert said == text(key, "en", **params)
    assert fake.callback(refused)[0] == 5 and not fake.original(refused).ephemeral  # as any refused story
    assert fake.downloaded(upload) == downloads  # an oversized or non-image file is never fetched
    assert (await first_reply(fake, following)).startswith("🧾 Job #1 is queued")
    assert await db_rows(config, "SELECT id, status, character_image FROM jobs") == [(1, "done", None)]
    assert errors() == []


async def test_a_cmyk_jpeg_is_accepted_and_stored_as_rgb(fake, dc_config, errors):
    cmyk = character().convert("CMYK")
    config = dc_config()
    async with running(config, fake):
        upload = fake.upload(encoded(cmyk, "JPEG", quality=95), "print.jpg")
        assert upload["content_type"] == "image/jpeg" and (upload["width"], upload["height"]) == (48, 40)
        iid = await fake.slash("story", {"text": STORY, "frames": 2, "image": upload}, user_id=ALICE)
        await fake.wait_for(lambda f: boards(f), timeout=30)
    reply = await first_reply(fake, iid)
    assert reply.startswith("🧾 Job #1 is queued") and text("note_picture_inset", "en") in reply  # the preview renderer
    [(stored, report_path, status)] = await db_rows(config, "SELECT character_image, report_path, status FROM jobs")
    assert status == "done" and [Path(stored)] == stored_pictures(config)
    for path in (Path(stored), Path(report_path).parent / "character.png"):
        with Image.open(path) as kept:
            assert (kept.format, kept.mode, kept.size) == ("PNG", "RGB", (48, 40))
    assert errors() == []


# -- no_lora -------------------------------------------------------------------------------------------
async def test_no_lora_needs_a_picture_and_is_kept_on_the_job(fake, dc_config, errors):
    config = dc_config()
    async with running(config, fake):
        alone = await fake.slash("story", {"text": STORY, "frames": 2, "no_lora": True}, user_id=ALICE)
        said = await first_reply(fake, alone)
        assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
        upload = fake.upload(encoded(character(), "PNG"), "me.png")
        drawn = await fake.slash("story", {"text": STORY, "frames": 2, "no_lora": True, "image": upload},
                                 user_id=ALICE)
        assert (await first_reply(fake, drawn)).startswith("🧾 Job #1 is queued")  # after its download
        plain = await fake.slash("story", {"text": STORY, "frames": 2, "no_lora": False}, user_id=ALICE)
        await fake.wait_for(lambda f: len(boards(f)) == 2, timeout=30)
    assert said == text("err_no_lora_needs_picture", "en")
    assert (await first_reply(fake, plain)).startswith("🧾 Job #2 is queued")
    rows = await db_rows(config, "SELECT id, lora, character_image IS NOT NULL, status, report_path FROM jobs ORDER BY id")
    assert [row[:4] for row in rows] == [(1, 0, 1, "done"), (2, 1, 0, "done")]
    report = json.loads(Path(rows[0][4]).read_text(encoding="utf-8"))
    assert (report["lora"], report["character_image"]) == (False, "character.png")
    assert errors() == []
