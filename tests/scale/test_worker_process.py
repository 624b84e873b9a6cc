"""``python -m bot worker`` as an operator meets it: start-up errors, its health check, SIGTERM
mid-board, and Redis dying while a board is being drawn."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bot.messages import text
from bot.service import StoryOptions, StoryRequest
from tests.helpers import ALICE, WORKER_STORY
from tests.scale.conftest import running_bot
from tests.scale_harness import REPO, scale_config, wait_until


def bot_command(config_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(config_path), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})


async def submit(bot, frames: int, seed: int) -> int:
    return (await bot.app.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=frames, seed=seed)))).job_id


def test_weights_that_do_not_load_stop_the_worker_with_one_line(tmp_path, redis_server):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0)
    result = bot_command(config_path, "worker", "--renderer", "sdxl", "--base-model", str(tmp_path / "missing"))

    assert result.returncode == 2
    assert f"error: engine.base_model: path not found: {tmp_path / 'missing'}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_health_check_sees_a_live_worker_and_not_a_stopped_one(tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0)
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
    live = bot_command(config_path, "worker", "--check", "--name", "gpu-a")
    worker.stop()
    stopped = bot_command(config_path, "worker", "--check", "--name", "gpu-a")

    assert live.returncode == 0 and live.stdout.startswith("ok: aldar:render:health-check:gpu-a")
    assert stopped.returncode == 1 and "no live worker matches" in stopped.stderr


async def test_sigterm_mid_board_hands_it_to_another_worker(tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.4)
    workers = {name: start_worker(name, config_path) for name in ("gpu-a", "gpu-b")}
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(2)
        job_id = await submit(bot, frames=4, seed=11)
        bot.start_worker_loop()
        victim = await wait_until(lambda: next((n for n, w in workers.items() if "try 1 on" in w.log_text()), None),
                                  30, "a worker to take the job")
        await bot.wait_for_frame(job_id, 2)
        exit_code = workers[victim].stop()
        await bot.wait_for_status([job_id], "done")
        await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
        job = await bot.job(job_id)

    survivor = next(name for name in workers if name != victim)
    assert exit_code == 0
    assert "cancelled, will be run again" in workers[victim].log_text()
    assert json.loads(Path(job.report_path).read_text())["worker"] == {"name": survivor, "try": 2}
    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]


async def test_redis_dying_mid_board_puts_the_job_back_and_it_finishes_when_redis_returns(
        tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.3)
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
        job_id = await submit(bot, frames=6, seed=12)
        bot.start_worker_loop()
        await bot.wait_for_frame(job_id, 2)
        redis_server.stop()
        await wait_until(lambda: bot.updates(job_id, "waiting"), 20, "the user to be told")
        status_while_down = (await bot.job(job_id)).status

        redis_server.start()
        await bot.wait_for_status([job_id], "done", timeout=60)
        await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
        await asyncio.sleep(0.3)
        job = await bot.job(job_id)

    assert status_while_down == "queued"
    assert bot.updates(job_id, "waiting")[0].text == text("engine_unavailable", "en", job=job_id)
    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]
    assert job.attempts == 2  # claimed again once Redis was back
    assert worker.process.poll() is None


async def test_a_board_goes_through_a_redis_acl_user_and_its_password_never_reaches_a_log(
        tmp_path, redis_server, start_worker, caplog):
    import redis as redis_client

    password = "acl-canary-6f1e9b2d"
    admin = redis_client.Redis(port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", "aldar", "on", f">{password}", "~arq:*", "~aldar:*", "&aldar:*",
                          "+@all", "-@admin", "-@dangerous", "+info")
    admin.close()
    env = {"REDIS_URL": f"redis://aldar:{password}@127.0.0.1:{redis_server.port}/0"}
    config_path = scale_config(tmp_path, "redis://127.0.0.1:1/0", frame_delay_s=0.0)  # the file's URL is unused
    worker = start_worker("gpu-a", config_path, env=env)
    with caplog.at_level("DEBUG"):
        async with running_bot(config_path, env=env) as bot:
            await bot.wait_for_workers(1)
            job_id = await submit(bot, frames=2, seed=13)
            bot.start_worker_loop()
            await bot.wait_for_status([job_id], "done")
            await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
    worker.stop()

    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]
    assert "redis://aldar:***@127.0.0.1" in worker.log_text()
    assert password not in worker.log_text()
    assert password not in caplog.text


async def test_regenerating_one_frame_on_a_worker_keeps_the_others_pixel_for_pixel(
        tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0)
    start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
        parent_id = await submit(bot, frames=3, seed=21)
        bot.start_worker_loop()
        await bot.wait_for_status([parent_id], "done")
        regen_id = (await bot.app.service.regenerate(ALICE, parent_id, frame=2)).job_id
        await bot.wait_for_status([regen_id], "done")
        parent, regen = await bot.job(parent_id), await bot.job(regen_id)

    def frames(job) -> dict[int, bytes]:
        report = json.loads(Path(job.report_path).read_text())
        folder = Path(job.report_path).parent
        return {f["index"]: Image.open(folder / f["file"]).convert("RGB").tobytes() for f in report["frames"]}

    before, after = frames(parent), frames(regen)
    assert after[1] == before[1] and after[3] == before[3]  # kept frames travelled to the worker and back
    assert after[2] != before[2]  # the redone frame has a new seed
    regen_report = json.loads(Path(regen.report_path).read_text())
    assert [f["reused"] for f in regen_report["frames"]] == [True, False, True]


async def test_a_bot_restarted_mid_board_picks_up_the_same_render_instead_of_drawing_it_again(
        tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.3, queue={"lease_seconds": 2.0})
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
        job_id = await submit(bot, frames=5, seed=22)
        bot.start_worker_loop()
        await bot.wait_for_frame(job_id, 2)
    # the first bot stopped (its job went back to the queue); the worker went on drawing
    async with running_bot(config_path) as bot:
        bot.start_worker_loop()
        await bot.wait_for_status([job_id], "done")
        await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
        job = await bot.job(job_id)

    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]
    assert job.attempts == 2
    assert worker.log_text().count(f"render aldar:render:job-{job_id}: try") == 1  # drawn once
    assert json.loads(Path(job.report_path).read_text())["worker"] == {"name": "gpu-a", "try": 1}


async def test_a_tiny_sdxl_worker_loads_once_draws_boards_and_stops_within_steps_on_cancel(
        tmp_path, redis_server, start_worker, tiny_sdxl_dir, tiny_clip_dir):
    engine = {"renderer": "sdxl", "base_model": str(tiny_sdxl_dir), "clip_model": str(tiny_clip_dir), "width": 64,
              "height": 64, "steps": 3, "batch_size": 4, "ref_guided": False, "device": "cpu"}
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, engine=engine,
                               validation={"face_check": False})
    long_steps = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, name="worker-60-steps.toml",
                              engine={**engine, "steps": 60}, validation={"face_check": False})
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1, timeout=120)  # torch, diffusers and the tiny weights load first
        first, second = await submit(bot, frames=2, seed=31), await submit(bot, frames=2, seed=32)
        bot.start_worker_loop()
        await bot.wait_for_status([first, second], "done", timeout=120)
        reports = [json.loads(Path((await bot.job(j)).report_path).read_text()) for j in (first, second)]
        step_notes = bot.updates(first, "step")

    assert [r["renderer"] for r in reports] == ["sdxl", "sdxl"]
    assert [r["timings"]["model_loads"] for r in reports] == [0, 0]  # loaded once, in on_startup
    assert worker.log_text().count("ready: planner=") == 1
    assert step_notes and step_notes[-1].text  # per-step progress came back through Redis

    # a worker drawing 60 steps per frame: /cancel must stop it inside frame 1
    worker.stop()
    worker = start_worker("gpu-b", long_steps)
    async with running_bot(long_steps) as bot:
        await bot.wait_for_workers(1, timeout=120)
        job_id = await submit(bot, frames=2, seed=33)
        bot.start_worker_loop()
        await wait_until(lambda: bot.updates(job_id, "step"), 60, "the first diffusion step")
        await bot.app.service.cancel(ALICE, job_id)
        await bot.wait_for_status([job_id], "cancelled", timeout=60)

    assert len(bot.updates(job_id, "step")) < 60  # frame 1 never finished its 60 steps
    assert "aborted" in worker.log_text()
