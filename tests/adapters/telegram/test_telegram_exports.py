"""📄 PDF and 🎞 Animatic on Telegram: the real python-telegram-bot against the local fake Bot
API, inside the real composition root. A press is answered at once; the file follows as a
document or a video; a second press sends the cached file; the service's rules decide who may."""

from __future__ import annotations

import io

import av
from pypdf import PdfReader

from tests.helpers import bot_running as running

ALICE, BOB = 1001, 1002
GROUP = -100778
SMALL_VIDEO = {"animatic_long_side": 192, "animatic_min_seconds": 1.0, "animatic_max_seconds": 1.5}


def sent(fake, chat, kind):
    return [m for m in fake.messages(chat) if m.kind == kind]


async def posted_board(fake, chat, **story):
    fake.send_message("/story Aldar Kose tricks a greedy merchant at the bazaar --frames 3 --aspect 16:9",
                      chat_id=chat, user_id=ALICE, **story)
    return await fake.wait_for(lambda f: sent(f, chat, "photo") and sent(f, chat, "photo")[0])


async def test_each_button_sends_exactly_one_file_of_its_kind_and_a_second_press_the_cached_one(
        fake, tg_config):
    config = tg_config(export=SMALL_VIDEO, queue={"resend_cooldown_s": 0})
    async with running(config):
        board = await posted_board(fake, ALICE)
        pdf_press = fake.press_button("p:1", message=board, user_id=ALICE)
        [pdf] = await fake.wait_for(lambda f: sent(f, ALICE, "document"))
        video_press = fake.press_button("v:1", message=board, user_id=ALICE)
        [video] = await fake.wait_for(lambda f: sent(f, ALICE, "video"))
        folder = next(config.storage.outputs.glob("job-*"))
        made_at = {name: (folder / name).stat().st_mtime_ns for name in ("storyboard.pdf", "animatic.mp4")}
        again = fake.press_button("p:1", message=board, user_id=ALICE)
        await fake.wait_for(lambda f: len(sent(f, ALICE, "document")) == 2)

    assert fake.answered(pdf_press)["text"] == "⏳ Making the PDF of board #1; it follows in a moment."
    assert not fake.answered(pdf_press).get("show_alert")
    assert fake.answered(video_press)["text"].startswith("⏳ Making the MP4 of board #1")
    assert pdf.document_name == "storyboard.pdf" and pdf.raw["document"]["mime_type"] == "application/pdf"
    assert pdf.raw["reply_to_message"]["message_id"] == board.message_id
    assert "Shot 1" in PdfReader(io.BytesIO(pdf.document_bytes)).pages[0].extract_text()
    assert video.document_name == "animatic.mp4" and video.raw["video"]["supports_streaming"] is True
    with av.open(io.BytesIO(video.document_bytes)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
        assert (video.raw["video"]["width"], video.raw["video"]["height"]) == (stream.width, stream.height)
        assert stream.width > stream.height  # the board's 16:9
    assert sent(fake, ALICE, "document")[1].document_bytes == pdf.document_bytes
    assert {name: (folder / name).stat().st_mtime_ns for name in made_at} == made_at  # sent, not made again
    assert fake.answered(again) is not None and fake.unanswered() == []


async def test_a_group_member_may_take_the_file_once_per_cooldown_as_with_full_resolution(fake, tg_config):
    config = tg_config(export=SMALL_VIDEO, queue={"resend_cooldown_s": 600})
    async with running(config):
        board = await posted_board(fake, GROUP, chat_type="supergroup")
        first = fake.press_button("p:1", message=board, user_id=BOB)
        await fake.wait_for(lambda f: sent(f, GROUP, "document"))
        second = fake.press_button("v:1", message=board, user_id=BOB)
        await fake.wait_for(lambda f: f.answered(second))
    assert fake.answered(first)["text"].startswith("⏳ Making the PDF")
    assert fake.answered(second)["show_alert"] is True and "600 s" in fake.answered(second)["text"]
    assert sent(fake, GROUP, "video") == []  # the refused press made and sent nothing
    assert not list(config.storage.outputs.glob("job-*/animatic.mp4"))


async def test_a_board_that_cannot_be_exported_says_why_in_the_chat(fake, tg_config):
    config = tg_config(export=SMALL_VIDEO, queue={"resend_cooldown_s": 0})
    async with running(config):
        board = await posted_board(fake, ALICE)
        next(config.storage.outputs.glob("job-*/frame_02.png")).unlink()
        press = fake.press_button("v:1", message=board, user_id=ALICE)
        reply = await fake.wait_for(lambda f: [m for m in sent(f, ALICE, "text") if "could not make" in (m.text or "")])
    assert fake.answered(press)["text"].startswith("⏳ Making the MP4")  # answered at once, before the failure
    assert reply[0].text.startswith("⚠️ I could not make the MP4 of board #1")
    assert "The board itself is unchanged." in reply[0].text
    assert sent(fake, ALICE, "video") == []
