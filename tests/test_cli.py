"""``python -m bot`` as a user runs it: fresh processes, real files, kill -9 included."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.__main__ import build_parser
from bot.messages import text
from engine.limits import frame_size
from tests.helpers import count_panels

REPO = Path(__file__).resolve().parents[1]


def bot(*args: str, config: Path | None = None, stdin: str | None = None, timeout: float = 120,
        env: dict[str, str] | None = None, cwd: Path = REPO):
    """``python -m bot ARGS`` in a fresh process; from another ``cwd`` it sees no config.toml (the embedded defaults)."""
    argv = [sys.executable, "-m", "bot", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=_env(PYTHONPATH=str(REPO), **(env or {})))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "DISCORD_TOKEN", "TELEGRAM_TOKEN")}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}, **extra)
    return env


def write_config(tmp_path: Path, **sections: dict) -> Path:
    """A config.toml in tmp_path with small frames; ``sections`` add or override keys."""
    data = {
        "storage": {"database": "bot.sqlite3", "outputs": "outputs"},
        "engine": {"width": 128, "height": 128},
        "queue": {"poll_interval_s": 0.05},
        "observability": {"port": 0},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_help_lists_the_commands():
    result = bot("--help")
    assert result.returncode == 0
    for command in ("run", "story", "plan"):
        assert command in result.stdout
    assert "OPENAI_API_KEY" in result.stdout


def test_plan_prints_the_shot_list_as_json(stories):
    result = bot("plan", stories["kk_kozha"])
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) == {"title", "language", "cast", "places", "shots"}
    assert plan["language"] == "kk"
    assert plan["cast"][0]["id"] == 0 and plan["cast"][0]["name"] == "Алдар Көсе"  # the story bible, in Kazakh
    assert {shot["place_id"] for shot in plan["shots"]} <= {place["id"] for place in plan["places"]}
    assert 6 <= len(plan["shots"]) <= 10
    assert "Алдар Көсе" in plan["shots"][0]["caption"]


def test_plan_refuses_an_empty_story():
    result = bot("plan", "   ")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {text('err_empty', 'en')}"


@pytest.mark.parametrize("command", ["plan", "story"])
def test_plan_and_story_apply_the_same_story_rules_as_the_chats(tmp_path, command):
    config = write_config(tmp_path, story={"max_chars": 40, "banned_terms": ["darkword"]})
    story = "Aldar Kose rides across the steppe to the bazaar at dawn"
    too_long = bot(command, story, config=config)
    assert too_long.returncode == 1
    assert too_long.stderr.strip().endswith(f"error: {text('err_too_long', 'en', length=len(story), max=40)}")
    banned = bot(command, "Aldar Kose and the DARKWORD", config=config)
    assert banned.returncode == 1 and banned.stderr.strip().endswith(f"error: {text('err_banned_terms', 'en')}")
    frames = bot(command, "Aldar Kose rides", "--frames", "40", config=config)
    assert frames.returncode == 1
    assert frames.stderr.strip().endswith(
        f"error: {text('err_bad_option', 'en', option='--frames', allowed='1..12')}")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv", [
    ["--config", "{config}", "run"], ["run", "--config", "{config}"],
    ["--config", "{config}", "story", "Aldar Kose rides"], ["story", "--config", "{config}", "Aldar Kose rides"],
    ["plan", "Aldar Kose rides", "--config", "{config}"], ["worker", "--config", "{config}"],
])
def test_config_is_read_before_or_after_the_command(tmp_path, argv):
    config = write_config(tmp_path, story={"default_frames": 40})
    result = bot(*[arg.format(config=config) for arg in argv], stdin="")
    assert result.returncode == 2
    assert f"invalid configuration ({config})" in result.stderr and "story.default_frames = 40" in result.stderr


def test_log_level_is_read_after_the_command_and_wins_there():
    parser = build_parser()
    assert parser.parse_args(["run", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "ERROR", "run"]).log_level == "ERROR"
    assert parser.parse_args(["--log-level", "ERROR", "plan", "x", "--log-level", "DEBUG"]).log_level == "DEBUG"
    args = parser.parse_args(["run"])
    assert (args.config, args.log_level) == (None, None)
    assert parser.parse_args(["--config", "a.toml", "story", "x"]).config == Path("a.toml")


def test_story_writes_a_board_and_prints_its_folder(tmp_path):
    out = tmp_path / "board"
    result = bot("story", "Aldar Kose rides his horse across the steppe", "--frames", "6", "--seed", "3",
                 "--out", str(out), config=write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert sorted(p.name for p in out.glob("frame_*.png")) == [f"frame_{i:02d}.png" for i in range(1, 7)]
    assert count_panels(next(out.glob("grid.*"))) == (3, 2)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["mode"], report["seed"], report["renderer"], report["planner"]) == ("simple", 3, "preview", "offline")
    assert "start-up: planner=offline" in result.stderr and "renderer=preview" in result.stderr


def test_story_draws_the_aspect_asked_for_and_lays_wide_panels_out_two_to_a_row(tmp_path):
    out = tmp_path / "wide"
    result = bot("story", "Aldar Kose rides his horse across the steppe", "--frames", "6", "--aspect", "16:9",
                 "--out", str(out), config=write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    width, height = Image.open(out / "frame_01.png").size
    assert report["aspect"] == "16:9" and width > height
    assert count_panels(next(out.glob("grid.*"))) == (2, 3)
    refused = bot("story", "Aldar Kose rides", "--aspect", "5:4", config=write_config(tmp_path))
    assert refused.returncode == 2 and "--aspect" in refused.stderr and "16:9" in refused.stderr


def test_a_bad_config_fails_at_start_up_naming_the_key(tmp_path):
    result = bot("plan", "x", config=write_config(tmp_path, story={"default_frames": 40}))
    assert result.returncode == 2
    assert "story.default_frames = 40" in result.stderr and "1..12" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_no_tokens_uses_the_console(tmp_path):
    result = bot("run", config=write_config(tmp_path), stdin="/story Aldar Kose laughs at the bai --frames 2\n")
    assert result.returncode == 0, result.stderr
    assert "adapters=console (no DISCORD_TOKEN or TELEGRAM_TOKEN set)" in result.stderr
    assert "✅ Job #1 is done" in result.stdout


def test_a_job_survives_kill_9_mid_render_and_is_delivered_once(tmp_path):
    config = write_config(tmp_path, queue={"lease_seconds": 1.0}, engine={"preview_delay_s": 0.4})
    argv = [sys.executable, "-m", "bot", "--config", str(config), "run"]
    first = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=_env())
    first.stdin.write("/story Aldar Kose tricks a greedy merchant at the bazaar --frames 6 --seed 9\n")
    first.stdin.flush()
    # frame N is announced as frame N-1 is being checked (and kept): at frame 4, frames 1-2 are on disk
    seen = _read_until(first, "drawing frame 4 of 6", timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert "is done" not in seen

    db = tmp_path / "bot.sqlite3"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, attempts FROM jobs").fetchall() == [("running", 1)]
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (0,)

    second = subprocess.run(argv, cwd=REPO, input="", capture_output=True, text=True, timeout=120, env=_env())
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("✅ Job #1 is done") == 1
    assert "resuming with 2 finished frame(s)" in second.stderr or "resuming with 3 finished frame(s)" in second.stderr, second.stderr

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, status, attempts FROM jobs").fetchall() == [(1, "done", 2)]
        assert conn.execute("SELECT job_id, status FROM deliveries").fetchall() == [(1, "sent")]
        assert conn.execute("SELECT COUNT(*) FROM frames WHERE job_id = 1").fetchone() == (6,)
        report_path = conn.execute("SELECT report_path FROM jobs").fetchone()[0]
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    assert [f["seed"] for f in report["frames"]] == [(9 + i * 7919) % 2**32 for i in range(1, 7)]
    assert any(f["reused"] for f in report["frames"])

    third = subprocess.run(argv, cwd=REPO, input="", capture_output=True, text=True, timeout=60, env=_env())
    assert "is done" not in third.stdout  # nothing is delivered twice


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"bot exited before printing {marker!r}; output so far:\n{seen}")
        seen += line
        if marker in line:
            return seen
    pytest.fail(f"{marker!r} not printed within {timeout}s; output so far:\n{seen}")


def test_sigterm_mid_render_puts_the_job_back_for_the_next_start(tmp_path):
    config = write_config(tmp_path, engine={"preview_delay_s": 0.4})
    argv = [sys.executable, "-m", "bot", "--config", str(config), "run"]
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    proc.stdin.write("/story Aldar Kose rides to the bazaar --frames 6\n")
    proc.stdin.flush()
    _read_until(proc, "drawing frame 2 of 6", timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "returned to the queue" in stderr and "Traceback" not in stderr
    with sqlite3.connect(tmp_path / "bot.sqlite3") as conn:
        assert conn.execute("SELECT status, lease_owner FROM jobs").fetchall() == [("queued", None)]


def test_story_with_the_sdxl_flags_loads_any_diffusers_folder(tmp_path, tiny_sdxl_dir, tiny_lora_file, tiny_clip_dir):
    out = tmp_path / "board"
    result = bot("story", "Aldar Kose rides his horse across the steppe", "--renderer", "sdxl",
                 "--base-model", str(tiny_sdxl_dir), "--lora", str(tiny_lora_file), "--clip-model", str(tiny_clip_dir),
                 "--steps", "2", "--size", "96x96", "--aspect", "16:9", "--frames", "3", "--seed", "7",
                 "--out", str(out),
                 config=write_config(tmp_path, engine={"width": 128, "height": 128, "ref_guided": False},
                                     validation={"face_check": False}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["renderer"], report["validator"], report["seed"]) == ("sdxl", "clip", 7)
    assert report["models"]["sources"]["engine.lora"] == str(tiny_lora_file)
    assert Image.open(out / "frame_01.png").size == frame_size("16:9", 96 * 96) == (128, 80)
    assert "renderer=sdxl (configured: engine.renderer = sdxl; weights loaded)" in result.stderr


def test_the_default_config_draws_a_simple_sdxl_board_offline_and_refuses_ref_guided_clearly(
        tmp_path, tiny_sdxl_dir, tiny_lora_file, tiny_clip_dir):
    """No config file and no ref-guided weights: ``engine.ref_guided = "auto"`` leaves it off."""
    flags = ["--renderer", "sdxl", "--base-model", str(tiny_sdxl_dir), "--lora", str(tiny_lora_file),
             "--clip-model", str(tiny_clip_dir), "--steps", "2", "--size", "64x64", "--frames", "2", "--seed", "3"]
    simple = bot("story", "Aldar Kose rides his horse across the steppe", *flags, "--out", str(tmp_path / "b"),
                 cwd=tmp_path)
    assert simple.returncode == 0, simple.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert (report["mode"], report["renderer"], report["validator"]) == ("simple", "sdxl", "clip+face")
    assert "ref-guided=off (auto: its weights did not load (engine.controlnet = 'xinsir/" in simple.stderr
    guided = bot("story", "Aldar Kose rides his horse across the steppe", *flags, "--mode", "ref-guided",
                 "--out", str(tmp_path / "g"), cwd=tmp_path)
    assert guided.returncode == 1
    assert guided.stderr.strip().endswith("error: " + text(
        "err_mode_weights_missing", "en", mode="ref-guided", weights="engine.controlnet = controlnet-openpose-sdxl-1.0"))
    assert "Traceback" not in guided.stderr and not (tmp_path / "g").exists()


def test_a_flat_ip_adapter_folder_loads_with_an_empty_subfolder_flag(
        tmp_path, tiny_sdxl_dir, tiny_controlnet_dir):
    from tests.tiny_models import build_tiny_ip_adapter

    flat = build_tiny_ip_adapter(tiny_sdxl_dir, tmp_path / "ip-adapter", subfolder="")
    flags = ["--renderer", "sdxl", "--base-model", str(tiny_sdxl_dir), "--clip-model", "", "--steps", "2",
             "--size", "64x64", "--frames", "2", "--controlnet", str(tiny_controlnet_dir), "--ip-adapter", str(flat)]
    config = write_config(tmp_path, engine={"ref_guided": True}, validation={"face_check": False})
    wrong = bot("story", "Aldar Kose rides", *flags, "--mode", "ref-guided", config=config)
    assert wrong.returncode == 2
    assert f"no weights file ip-adapter_sdxl.safetensors (engine.ip_adapter_weight) in {flat / 'sdxl_models'}" \
        in wrong.stderr and "--ip-adapter-subfolder ''" in wrong.stderr
    right = bot("story", "Aldar Kose rides", *flags, "--ip-adapter-subfolder", "", "--mode", "ref-guided",
                "--out", str(tmp_path / "b"), config=config)
    assert right.returncode == 0, right.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["mode"] == "ref-guided" and report["models"]["sources"]["engine.ip_adapter"] == str(flat)
    assert "ref-guided=on (configured: engine.ref_guided = true)" in right.stderr


def test_a_missing_base_model_stops_start_up_with_the_key(tmp_path):
    result = bot("story", "Aldar Kose rides", "--renderer", "sdxl", "--base-model", str(tmp_path / "nope"),
                 config=write_config(tmp_path, engine={"width": 128, "height": 128, "ref_guided": False}))
    assert result.returncode == 2
    assert f"engine.base_model: path not found: {tmp_path / 'nope'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_with_the_openai_planner_honours_openai_base_url(fake_openai, stories):
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_openai.base_url}
    result = bot("plan", stories["ru_bai"], "--planner", "openai", env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["language"] == "ru" and 6 <= len(plan["shots"]) <= 10
    assert all(shot["caption"] in stories["ru_bai"] for shot in plan["shots"])
    assert len(fake_openai.requests) == 1
    assert "test-key" not in result.stderr  # never logged


def test_auto_picks_openai_when_a_key_is_set_and_pretty_prints(fake_openai):
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_openai.base_url}
    result = bot("plan", "Aldar Kose tricks the bai. The bai laughs. Aldar Kose rides away.", "--pretty", env=env)
    assert result.returncode == 0, result.stderr
    assert "planner: openai" in result.stdout.splitlines()[0]
    assert "framing" in result.stdout.splitlines()[1]
    assert "planner=openai (auto: OPENAI_API_KEY is set" in result.stderr


def test_plan_says_when_it_fell_back(fake_openai):
    from tests.fakes.openai_server import Reply

    fake_openai.script = [Reply(status=500)] * 10
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_openai.base_url}
    result = bot("plan", "Aldar Kose tricks the bai.", "--planner", "openai", env=env)
    assert result.returncode == 0, result.stderr
    assert "note: planned offline because the openai planner failed: HTTP 500" in result.stderr
    assert 6 <= len(json.loads(result.stdout)["shots"]) <= 10


def test_the_openai_planner_without_a_key_is_a_clear_error():
    result = bot("plan", "Aldar Kose laughs.", "--planner", "openai")
    assert result.returncode == 1
    assert "planner.backend = 'openai' needs OPENAI_API_KEY" in result.stderr


def test_a_story_run_plans_with_openai_and_records_it(fake_openai, tmp_path):
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_openai.base_url}
    out = tmp_path / "board"
    result = bot("story", "Aldar Kose tricks the bai. The bai laughs. Aldar Kose rides away.", "--frames", "6",
                 "--out", str(out), config=write_config(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["planner"], report["planner_fallback"]) == ("openai", None)
    assert "exactly 6 shots" in fake_openai.messages()["system"]


def test_a_chat_that_cannot_be_reached_stops_start_up_with_a_clear_message(tmp_path):
    env = {"TELEGRAM_TOKEN": "123:secret-token", "TELEGRAM_BASE_URL": "http://127.0.0.1:9/bot"}
    result = bot("run", config=write_config(tmp_path), env=env, timeout=60)
    assert result.returncode == 2
    assert "error: telegram: could not start: NetworkError" in result.stderr
    assert "Traceback" not in result.stderr and "secret-token" not in result.stderr


def test_story_with_a_character_image_keeps_it_with_the_board(tmp_path):
    from PIL import Image

    Image.new("RGB", (60, 80), (30, 90, 200)).save(tmp_path / "me.jpg", quality=95)
    out = tmp_path / "board"
    result = bot("story", "Aldar Kose rides his horse across the steppe", "--frames", "2", "--out", str(out),
                 "--character-image", str(tmp_path / "me.jpg"), config=write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["character_image"], report["lora"]) == ("character.png", True)
    assert Image.open(out / "character.png").size == (60, 80)
    assert text("note_picture_inset", "en") in result.stderr  # said where the progress is shown

    missing = bot("story", "Aldar Kose rides", "--character-image", str(tmp_path / "nope.png"),
                  config=write_config(tmp_path))
    assert missing.returncode == 2 and "--character-image: cannot read" in missing.stderr
    bare = bot("story", "Aldar Kose rides", "--no-lora", config=write_config(tmp_path))
    assert bare.returncode == 1 and text("err_no_lora_needs_picture", "en") in bare.stderr
