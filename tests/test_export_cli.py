"""``python -m bot export`` and ``story --export``, in a fresh process as an operator runs them."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import av
from pypdf import PdfReader

from tests.test_cli import bot, write_config

SMALL_VIDEO = {"animatic_long_side": 192, "animatic_min_seconds": 1.0, "animatic_max_seconds": 1.5}
STORY = "Aldar Kose tricks a greedy merchant at the bazaar. The merchant waits by the cold pot."


def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, export=SMALL_VIDEO)


def test_story_export_makes_the_pdf_and_the_mp4_with_the_board(tmp_path):
    out = tmp_path / "board"
    result = bot("story", STORY, "--frames", "3", "--aspect", "4:3", "--export", "pdf,mp4", "--out", str(out),
                 config=config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(out), str(out / "storyboard.pdf"), str(out / "animatic.mp4")]
    assert len(PdfReader(out / "storyboard.pdf").pages) == 1
    with av.open(str(out / "animatic.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_export_by_job_id_re_uses_the_files_and_copies_them_out(tmp_path):
    cfg = config(tmp_path)
    assert bot("story", STORY, "--frames", "2", config=cfg).returncode == 0
    [(folder,)] = sqlite3.connect(tmp_path / "bot.sqlite3").execute(
        "SELECT substr(report_path, 1, length(report_path) - length('/report.json')) FROM jobs").fetchall()
    first = bot("export", "1", "--pdf", config=cfg)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [str(Path(folder) / "storyboard.pdf")]
    made_at = (Path(folder) / "storyboard.pdf").stat().st_mtime_ns
    copied = bot("export", folder, "--pdf", "--mp4", "--out", str(tmp_path / "take-away"), config=cfg)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.split() == [str(tmp_path / "take-away" / name) for name in ("storyboard.pdf", "animatic.mp4")]
    assert (Path(folder) / "storyboard.pdf").stat().st_mtime_ns == made_at  # the first one's file, not made again
    text = PdfReader(io.BytesIO((tmp_path / "take-away" / "storyboard.pdf").read_bytes())).pages[0].extract_text()
    assert "Shot 1" in text


def test_export_says_clearly_what_is_wrong(tmp_path):
    cfg = config(tmp_path)
    cases = {("export", "42", "--pdf"): "no bot database",
             ("export", str(tmp_path), "--pdf"): "is not a finished board",
             ("export", str(tmp_path / "nowhere"), "--mp4"): "no such board folder",
             ("export", str(tmp_path)): "--pdf, --mp4 or both"}
    for argv, message in cases.items():
        result = bot(*argv, config=cfg)
        assert result.returncode == 1 and message in result.stderr, (argv, result.stderr)
    bad = bot("story", STORY, "--export", "gif", config=cfg)
    assert bad.returncode == 2 and "takes pdf, mp4" in bad.stderr
