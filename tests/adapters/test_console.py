"""A console session end to end: stdin lines in, replies and a storyboard out.

``run_bot`` is the real composition root with the real service, queue, worker and
engine; only stdin/stdout are in-memory streams.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image

from bot.app import run_bot
from bot.messages import text
from engine.rendering.grid import auto_columns
from tests.helpers import count_panels, db_rows


async def session(config, *lines: str) -> str:
    stdout = io.StringIO()
    await run_bot(config, stdin=io.StringIO("".join(line + "\n" for line in lines)), stdout=stdout)
    return stdout.getvalue()


async def test_story_status_and_help_end_to_end(config):
    out = await session(
        config,
        "/help",
        "/story Aldar Kose tricks a greedy merchant at the bazaar --frames 6 --seed 5",
        "/status 1",
    )
    assert "Example: /story" in out
    assert "Job #1 is queued, position 1" in out
    assert "drawing frame 1 of 6" in out and "drawing frame 6 of 6" in out
    assert "✅ Job #1 is done" in out

    grid_path = Path(re.search(r"grid: (\S+)", out).group(1))
    report_path = Path(re.search(r"report: (\S+)", out).group(1))
    columns = auto_columns(6)
    assert count_panels(grid_path) == (columns, 6 // columns)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert len(report["frames"]) == 6
    assert all(f["seed"] >= 0 and "aldar_kose_man" in f["prompt"] for f in report["frames"])
    assert report["grid"]["width"] == Image.open(grid_path).width
    assert await db_rows(config, "SELECT id, status FROM jobs") == [(1, "done")]
    assert await db_rows(config, "SELECT job_id, status FROM deliveries") == [(1, "sent")]


async def test_cancel_a_queued_job_from_the_console(make_config):
    config = make_config(engine={"preview_delay_s": 0.1})
    out = await session(
        config,
        "/story Aldar Kose rides across the steppe --frames 6",
        "/story Aldar Kose sits in his yurt --frames 6",
        "/cancel 2",
        "/cancel 2",
        "/status 2",
    )
    assert "🛑 Job #2 was cancelled." in out
    assert "Job #2 is already cancelled" in out
    assert "Job #2: cancelled" in out
    assert out.count("is done") == 1
    assert await db_rows(config, "SELECT id, status FROM jobs ORDER BY id") == [(1, "done"), (2, "cancelled")]


async def test_bad_input_gets_clear_replies_and_no_rows(config):
    out = await session(
        config,
        "/story",
        "/story    ",
        "/story " + "x" * 20_000,
        "/story 🐎🐎🐎 🎉",
        "/story Aldar\x07Kose",
        "/story Aldar Kose --frames many",
        "/status abc",
        "/cancel 77",
        "/regen",
        "/dance",
    )
    expected = [
        "Please write a story after /story",
        "Please write a story after /story",
        "the limit is 2000",
        "not only symbols or emoji",
        "invisible control characters",
        "Option --frames must be 1..12",
        "Job numbers are whole numbers",
        "There is no job #77",
        "Job numbers are whole numbers",
        "I don't know that command",
    ]
    replies = out.strip().splitlines()
    assert len(replies) == len(expected)
    for reply, want in zip(replies, expected, strict=True):
        assert want in reply
    assert "Traceback" not in out
    assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]


async def test_regenerate_a_frame_in_a_later_session(config):
    await session(config, "/story Aldar Kose tricks a greedy merchant --frames 6")
    out = await session(config, "/regen 1 4", "/regen 1 9", "/mystats")
    assert "Job #2 is queued" in out
    assert "Job #1 has frames 1 to 6; frame 9 does not exist." in out
    assert "✅ Job #2 is done" in out
    assert "Jobs submitted: 2;" in out
    assert await db_rows(config, "SELECT id, kind, parent_id, redo_frame, status FROM jobs ORDER BY id") == [
        (1, "story", None, None, "done"),
        (2, "regen_frame", 1, 4, "done"),
    ]


async def test_console_speaks_russian_and_kazakh(make_config):
    ru = await session(make_config(console={"language": "ru"}), "/story")
    assert "Напишите историю после /story" in ru
    kk = await session(make_config(console={"language": "kk"}), "/help")
    assert "Алдар Көсе" in kk


async def test_moderator_ban_from_the_console(config):
    out = await session(config, "/ban telegram:42 spam", "/unban telegram:42", "/ban nobody")
    assert "🔨 telegram:42 is banned" in out
    assert "✅ telegram:42 is unbanned." in out
    assert "I have never seen user nobody" in out


async def test_a_character_picture_from_a_file_and_its_bad_inputs(config, tmp_path):
    picture = Image.new("RGB", (60, 80), (200, 60, 60))
    picture.save(tmp_path / "me.png")
    (tmp_path / "notes.txt").write_text("not a picture", encoding="utf-8")
    out = await session(
        config,
        f"/story Aldar Kose rides --character-image {tmp_path / 'missing.png'}",
        f"/story Aldar Kose rides --character-image {tmp_path / 'notes.txt'}",
        "/story Aldar Kose rides --no-lora",
        f"/story Aldar Kose rides to the bazaar --frames 2 --character-image {tmp_path / 'me.png'} --no-lora",
    )
    assert text("err_picture_file", "en", path=str(tmp_path / "missing.png")) in out
    assert text("err_picture_unreadable", "en", formats="JPEG, PNG, WEBP, GIF, BMP") in out
    assert text("err_no_lora_needs_picture", "en") in out
    assert "Job #1 is queued" in out and text("note_picture_inset", "en") in out  # the preview shows it only
    report = json.loads(Path(re.search(r"report: (\S+)", out).group(1)).read_text(encoding="utf-8"))
    assert (report["story"], report["character_image"], report["lora"]) == ("Aldar Kose rides to the bazaar",
                                                                            "character.png", False)
    assert all("aldar_kose_man" not in f["prompt"] + f["prompt_2"] for f in report["frames"])
    assert await db_rows(config, "SELECT id, lora FROM jobs") == [(1, 0)]  # the refusals left no row
