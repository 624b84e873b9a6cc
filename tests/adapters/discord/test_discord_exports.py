"""📄 PDF and 🎞 Animatic on Discord: the real discord.py against the local fake REST API and
gateway, inside the real composition root. A press is answered at once (ephemeral); the file
follows on a followup message; a second press sends the cached file; the service's rules decide."""

from __future__ import annotations

import io

import av
from pypdf import PdfReader

from tests.adapters.discord.rig import boards, running

ALICE, BOB = 5001, 5002
SMALL_VIDEO = {"animatic_long_side": 192, "animatic_min_seconds": 1.0, "animatic_max_seconds": 1.5}
EPHEMERAL = 64


async def test_each_button_sends_exactly_one_file_and_a_second_press_the_cached_one(fake, dc_config, errors):
    config = dc_config(export=SMALL_VIDEO, queue={"resend_cooldown_s": 0})
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose rides to the yurt", "frames": 3, "aspect": "9:16"},
                         user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0])
        pdf = await fake.click("board:p:1", message_id=board.id, user_id=ALICE)
        await fake.wait_for(lambda f: f.followups(pdf))
        video = await fake.click("board:v:1", message_id=board.id, user_id=BOB)  # a member of the channel
        await fake.wait_for(lambda f: f.followups(video))
        folder = next(config.storage.outputs.glob("job-*"))
        made_at = (folder / "storyboard.pdf").stat().st_mtime_ns
        again = await fake.click("board:p:1", message_id=board.id, user_id=ALICE)
        await fake.wait_for(lambda f: f.followups(again))

    for press, kind in ((pdf, "PDF"), (video, "MP4")):
        callback, data = fake.callback(press)
        assert (callback, data["flags"]) == (4, EPHEMERAL)
        assert data["content"] == f"⏳ Making the {kind} of board #1; it follows in a moment."
    [pdf_message] = fake.followups(pdf)
    assert list(pdf_message.files) == ["storyboard.pdf"]
    assert "Shot 3" in " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf_message.files["storyboard.pdf"])).pages)
    [video_message] = fake.followups(video)
    assert list(video_message.files) == ["animatic.mp4"]
    with av.open(io.BytesIO(video_message.files["animatic.mp4"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
        assert stream.height > stream.width  # the board's 9:16
    [cached] = fake.followups(again)
    assert cached.files == pdf_message.files and (folder / "storyboard.pdf").stat().st_mtime_ns == made_at
    assert errors() == []


async def test_a_refused_export_is_an_ephemeral_reply_and_sends_nothing(fake, dc_config, errors):
    config = dc_config(export=SMALL_VIDEO, queue={"resend_cooldown_s": 600})
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose laughs", "frames": 2}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0])
        first = await fake.click("board:p:1", message_id=board.id, user_id=BOB)
        await fake.wait_for(lambda f: f.followups(first))
        second = await fake.click("board:v:1", message_id=board.id, user_id=BOB)
        await fake.wait_for(lambda f: f.callback(second))
    callback, data = fake.callback(second)
    assert (callback, data["flags"]) == (4, EPHEMERAL) and "600 s" in data["content"]
    assert fake.followups(second) == []
    assert errors() == []
