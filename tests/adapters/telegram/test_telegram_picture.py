"""The user's own character picture, through Telegram: the real python-telegram-bot against the
local fake Bot API, inside the real composition root with the real service, queue and engine.

A photo (or a picture sent as a file) whose caption is ``/story …``, or ``/story`` in reply to
one, makes a job that names the picture; bad pictures get the service's reply and no job."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.messages import text
from bot.pictures import FORMATS
from tests.helpers import bot_running as running
from tests.helpers import db_rows

ALICE, BOB = 1001, 1002
GROUP = -100777
STORY = "/story Aldar Kose rides to the bazaar on his horse --frames 2 --seed 5"


def photos(fake, chat):
    return [m for m in fake.messages(chat) if m.kind == "photo"]


def replies(fake, chat) -> list[str]:
    """The first text of each text message the bot sent to the chat (before any edit)."""
    return [(m.history[0].get("text") if m.history else m.text) or "" for m in fake.messages(chat) if m.kind == "text"]


def picture(width: int = 96, height: int = 80, mode: str = "RGB") -> Image.Image:
    """A picture with some structure (CLIP sees more than a flat colour)."""
    image = Image.new("RGB", (width, height), (200, 40, 30))
    for x in range(width):
        for y in range(height):
            if (x // 8 + y // 8) % 2:
                image.putpixel((x, y), (20, 90 + y, 160 + x // 2))
    return image.convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def bomb_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (144 megapixels by default)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)  # only a few rows behind it
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def animated_gif() -> bytes:
    """Three frames of different colours (identical frames would be merged into one)."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


async def job_rows(config) -> list[tuple]:
    return await db_rows(config, "SELECT id, story, character_image, source_ref, report_path FROM jobs ORDER BY id")


def report_of(report_path: str) -> dict:
    return json.loads(Path(report_path).read_text(encoding="utf-8"))


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


@pytest.fixture
def sdxl_sections(tiny_sdxl_dir, tiny_clip_dir):
    engine = {"renderer": "sdxl", "base_model": str(tiny_sdxl_dir), "clip_model": str(tiny_clip_dir),
              "width": 64, "height": 64, "steps": 2, "ref_guided": False}
    validation = {"face_check": False, "max_retries": 0}  # faces have their own tests; one attempt per frame
    return {"engine": engine, "validation": validation}


async def test_a_photo_with_a_story_caption_is_what_every_frame_is_scored_against(
    fake, tg_config, sdxl_sections, tiny_clip_dir
):
    from engine.identity.validate import ClipScorer
    from engine.models import ModelLoader
    from engine.settings import RenderSettings

    config = tg_config(**sdxl_sections)
    sent = picture()
    message = fake.send_photo(encoded(sent), caption=STORY, chat_id=ALICE, user_id=ALICE)
    async with running(config):
        await fake.wait_for(lambda f: photos(f, ALICE), timeout=120)

    assert replies(fake, ALICE)[0].startswith("🧾 Job #1 is queued")
    assert text("note_picture_checks_no_ip_adapter", "en") in replies(fake, ALICE)[0]  # no IP-Adapter loaded
    assert fake.downloads == [message["photo"][-1]["file_id"]]  # the largest size, once
    [(_, story, stored, source, report_path)] = await job_rows(config)
    assert story == STORY.removeprefix("/story ").split(" --")[0]
    assert source == f"{ALICE}:{message['message_id']}"
    assert Path(stored).is_file() and same_pixels(Image.open(stored), sent)
    report = report_of(report_path)
    assert report["character_image"] == "character.png"
    board = Path(report_path).parent
    character = Image.open(board / "character.png")
    assert same_pixels(character, sent)

    # the identities in the report are CLIP's against the picture, recomputed here on their own
    model, processor = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir))).clip()
    scorer = ClipScorer(model, processor).with_pictures([character.convert("RGB")])
    frames = report["frames"]
    assert len(frames) == 2
    for frame in frames:
        recorded = frame["attempts"][frame["chosen_attempt"]]["scores"]
        image = Image.open(board / frame["file"]).convert("RGB")
        [fresh] = scorer.score([image], texts=[frame["shot"]["description"]], reference=None)
        assert recorded["identity"] == pytest.approx(fresh["identity"], abs=2e-3)
        assert recorded["clip_t"] == pytest.approx(fresh["clip_t"], abs=2e-3)
    first = frames[0]["attempts"][frames[0]["chosen_attempt"]]["scores"]["identity"]
    assert first < 0.99  # frame 1 is compared with the picture, not with itself


async def test_story_in_reply_to_a_photo_draws_with_that_photo(fake, tg_config):
    config = tg_config()
    sent = picture(120, 90)
    captioned = fake.send_photo(encoded(sent), caption="Aldar Kose sells a magic pot to the bai.", chat_id=GROUP,
                                user_id=BOB, chat_type="supergroup")
    bare = fake.send_document(encoded(sent, "JPEG", quality=95), filename="me.jpg", mime_type="image/jpeg",
                              chat_id=GROUP, user_id=BOB, chat_type="supergroup")
    async with running(config):
        fake.send_message("/story@AldarBot --frames 2", chat_id=GROUP, user_id=ALICE, chat_type="supergroup",
                          reply_to=captioned)
        fake.send_message("/story Aldar Kose looks at himself in the river --frames 2", chat_id=GROUP,
                          user_id=ALICE, chat_type="supergroup", reply_to=bare)
        await fake.wait_for(lambda f: len(photos(f, GROUP)) == 2, timeout=30)

    rows = sorted(await job_rows(config), key=lambda row: row[3])  # by message: both are handled at once
    assert [(story, source) for _, story, _, source, _ in rows] == [
        ("Aldar Kose sells a magic pot to the bai.", f"{GROUP}:3"),  # the caption is the story
        ("Aldar Kose looks at himself in the river", f"{GROUP}:4")]
    assert all(stored and Path(stored).is_file() for _, _, stored, _, _ in rows)
    assert same_pixels(Image.open(rows[0][2]), sent)
    for *_, report_path in rows:
        assert report_of(report_path)["character_image"] == "character.png"
        assert (Path(report_path).parent / "character.png").is_file()
    assert text("note_picture_inset", "en") in replies(fake, GROUP)[0]
    assert fake.downloads == [captioned["photo"][-1]["file_id"], bare["document"]["file_id"]]


UNREADABLE = text("err_picture_unreadable", "en", formats=", ".join(FORMATS))
BAD_PICTURES = {  # case: (sent as, bytes, what send_* is told besides, the reply, downloaded?)
    "not_an_image": ("document", b"Once upon a time...", {"filename": "story.txt", "mime_type": "text/plain"},
                     UNREADABLE, False),
    "not_an_image_behind_an_image_name": ("document", b"\x89PNG but not really",
                                          {"filename": "me.png", "mime_type": "image/png"}, UNREADABLE, True),
    "over_the_size_limit": ("photo", encoded(picture()), {"file_size": 11_000_000},
                            text("err_picture_too_big", "en", size="11.0", max="10.0"), False),
    "decompression_bomb": ("document", bomb_png(), {"filename": "bomb.png", "mime_type": "image/png"},
                           text("err_picture_too_many_pixels", "en", max="89"), True),
    "animated": ("document", animated_gif(), {"filename": "dance.gif", "mime_type": "image/gif"},
                 text("err_picture_animated", "en"), True),
}


@pytest.mark.parametrize("case", list(BAD_PICTURES))
async def test_a_bad_picture_gets_its_reply_and_no_job_and_the_next_story_works(fake, tg_config, case):
    kind, data, details, reply, downloaded = BAD_PICTURES[case]
    config = tg_config()
    async with running(config):
        send = fake.send_photo if kind == "photo" else fake.send_document
        sent = send(data, caption=STORY, chat_id=ALICE, user_id=ALICE, **details)
        await fake.wait_for(lambda f: replies(f, ALICE))
        assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
        fake.send_photo(encoded(picture()), caption=STORY, chat_id=ALICE, user_id=ALICE)
        await fake.wait_for(lambda f: photos(f, ALICE), timeout=30)

    first, second = replies(fake, ALICE)
    assert first == reply
    assert second.startswith("🧾 Job #1 is queued")
    [(_, _, stored, source, _)] = await job_rows(config)
    assert stored and source == f"{ALICE}:{sent['message_id'] + 2}"  # the good one (the bot's reply is between)
    file_id = (sent["document"] if kind == "document" else sent["photo"][-1])["file_id"]
    assert (file_id in fake.downloads) is downloaded
    if not downloaded:
        assert file_id not in [c.params.get("file_id") for c in fake.calls_to("getFile")]  # not even asked


async def test_a_cmyk_jpeg_is_accepted_and_stored_as_rgb(fake, tg_config):
    config = tg_config()
    cmyk = picture(64, 48, mode="CMYK")
    async with running(config):
        fake.send_document(encoded(cmyk, "JPEG", quality=95), filename="print.jpg", mime_type="image/jpeg",
                           caption=STORY, chat_id=ALICE, user_id=ALICE)
        await fake.wait_for(lambda f: photos(f, ALICE), timeout=30)
    [(_, _, stored, _, report_path)] = await job_rows(config)
    assert Image.open(stored).mode == "RGB"
    character = Image.open(Path(report_path).parent / "character.png")
    assert character.mode == "RGB" and character.size == (64, 48)


async def test_photos_that_are_no_story_for_this_bot_get_no_reply_and_no_job(fake, tg_config):
    config = tg_config()
    image = encoded(picture())
    async with running(config):
        fake.send_photo(image, chat_id=ALICE, user_id=ALICE)  # no caption
        fake.send_photo(image, caption="my horse, /story later", chat_id=ALICE, user_id=ALICE)
        fake.send_photo(image, caption="/storyteller at work", chat_id=ALICE, user_id=ALICE)
        fake.send_photo(image, caption="/story@OtherBot Aldar sleeps", chat_id=GROUP, user_id=ALICE,
                        chat_type="supergroup")
        fake.send_document(b"notes", filename="notes.txt", mime_type="text/plain", caption="read this",
                           chat_id=ALICE, user_id=ALICE)
        fake.send_message("/status", chat_id=ALICE, user_id=ALICE)  # handled after the photos: a marker
        await fake.wait_for(lambda f: replies(f, ALICE))
    assert len(replies(fake, ALICE)) == 1 and fake.messages(GROUP) == []
    assert fake.downloads == [] and fake.calls_to("getFile") == []
    assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
