"""A board's PDF and MP4 through the service: who may take them, the cache in the board's
folder, the cooldown, and a failure that leaves the board as it was. The files are made by the
real engine exports from a real board the worker drew."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import pytest
from pypdf import PdfReader

from bot.errors import BadRequest, RetryLater
from bot.service import Requester
from tests.helpers import ALICE, BOB

ALICE_IN_CHAT = Requester(platform="test", user_id="carol", chat_id=ALICE.chat_id)  # another member of Alice's chat
MOD = Requester(platform="test", user_id="mod", chat_id="elsewhere")
SMALL_VIDEO = {"animatic_long_side": 192, "animatic_min_seconds": 1.0, "animatic_max_seconds": 1.5}


async def finished_board(rig_factory, **sections):
    rig = await rig_factory(roles={"moderators": ["test:mod"]}, export=SMALL_VIDEO, **sections)
    job_id = await rig.submit(frames=3, seed=4, aspect="16:9")
    await rig.worker.run(burst=True)
    return rig, job_id


async def test_the_owner_gets_a_pdf_and_an_mp4_made_once_and_then_sent_from_the_cache(rig_factory):
    rig, job_id = await finished_board(rig_factory, queue={"resend_cooldown_s": 0})
    pdf = await (await rig.service.export(ALICE, job_id, "pdf")).file()
    mp4 = await (await rig.service.export(ALICE, job_id, "mp4")).file()
    folder = Path((await rig.store.get_job(job_id)).report_path).parent
    assert (pdf.path, pdf.built, pdf.mime_type) == (folder / "storyboard.pdf", True, "application/pdf")
    assert (mp4.path, mp4.built, mp4.mime_type) == (folder / "animatic.mp4", True, "video/mp4")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.path.read_bytes())).pages)
    assert "Shot 3" in text
    with av.open(str(mp4.path)) as video:
        assert video.streams.video[0].codec_context.name == "h264"
        assert (video.streams.video[0].width, video.streams.video[0].height) == (mp4.width, mp4.height)
    made_at = (pdf.path.stat().st_mtime_ns, mp4.path.stat().st_mtime_ns)
    again = [await (await rig.service.export(who, job_id, kind)).file()
             for who, kind in ((ALICE, "pdf"), (ALICE_IN_CHAT, "mp4"), (MOD, "pdf"))]
    assert [f.built for f in again] == [False, False, False]
    assert (pdf.path.stat().st_mtime_ns, mp4.path.stat().st_mtime_ns) == made_at  # not made again
    assert (again[1].width, again[1].height) == (mp4.width, mp4.height)  # read back from the cached file


async def test_two_presses_at_once_make_the_file_once(rig_factory):
    rig, job_id = await finished_board(rig_factory, queue={"resend_cooldown_s": 0})
    tickets = [await rig.service.export(who, job_id, "mp4") for who in (ALICE, ALICE_IN_CHAT)]
    files = await asyncio.gather(*(ticket.file() for ticket in tickets))
    assert sorted(f.built for f in files) == [False, True]


async def test_someone_from_another_chat_is_refused_and_nothing_is_made(rig_factory):
    rig, job_id = await finished_board(rig_factory)
    with pytest.raises(BadRequest) as refused:
        await rig.service.export(BOB, job_id, "pdf")
    assert refused.value.key == "err_not_your_chat"
    folder = Path((await rig.store.get_job(job_id)).report_path).parent
    assert not (folder / "storyboard.pdf").exists()


async def test_an_export_takes_a_turn_of_the_re_send_cooldown_except_for_moderators(rig_factory):
    rig, job_id = await finished_board(rig_factory, queue={"resend_cooldown_s": 600})
    await rig.service.export(ALICE, job_id, "pdf")
    with pytest.raises(RetryLater) as wait:
        await rig.service.export(ALICE, job_id, "mp4")
    assert wait.value.key == "err_resend_cooldown"
    await rig.service.export(ALICE_IN_CHAT, job_id, "pdf")  # another member has a turn of their own
    await rig.service.export(MOD, job_id, "pdf")
    await rig.service.export(MOD, job_id, "mp4")


async def test_a_board_that_cannot_be_exported_gets_a_clear_reply_and_stays_as_it_was(rig_factory):
    rig, job_id = await finished_board(rig_factory, queue={"resend_cooldown_s": 0})
    folder = Path((await rig.store.get_job(job_id)).report_path).parent
    (folder / "frame_02.png").unlink()  # e.g. removed by hand
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for kind in ("pdf", "mp4"):
        with pytest.raises(BadRequest) as failed:
            await (await rig.service.export(ALICE, job_id, kind)).file()
        assert failed.value.key == "err_export_failed"
        assert "frame_02.png" in failed.value.message("en") and "unchanged" in failed.value.message("en")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no file made, none changed


async def test_an_unfinished_or_unknown_board_is_refused(rig_factory):
    rig = await rig_factory()
    queued = await rig.submit(frames=2)
    for job_id, key in ((queued, "err_not_done"), (999, "err_not_found")):
        with pytest.raises(BadRequest) as refused:
            await rig.service.export(ALICE, job_id, "pdf")
        assert refused.value.key == key
