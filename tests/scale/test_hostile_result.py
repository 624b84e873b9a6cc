"""A hostile result in Redis, as a compromised worker (or anyone who can write to Redis) would plant it,
met by the real bot (``open_app`` with ``engine.backend = "arq"``) on a real redis-server.

No worker process runs: ``max_in_flight`` lets the bot claim without one, and the test writes the
job's arq result itself, under the id the bot enqueues the job with. The bot finds the result
already there and takes it, exactly as it takes a worker's.
"""

from __future__ import annotations

import io
import json

import pytest
import redis as redis_client
from arq.constants import result_key_prefix
from arq.jobs import serialize_result
from arq.utils import timestamp_ms
from PIL import Image

from bot.config import load_config
from bot.messages import text
from bot.render import wire
from bot.service import StoryOptions, StoryRequest
from engine.board_files import REPORT_FILE
from engine.build import build_engine
from engine.storyboard import BoardRequest
from tests.helpers import ALICE, WORKER_STORY
from tests.scale.conftest import running_bot
from tests.scale_harness import scale_config, wait_until

FRAMES = 2


def drawn_result(config_path, tmp_path) -> dict:
    """A real board's result, drawn here with the bot's own engine settings (preview, 96x96)."""
    engine = build_engine(load_config(config_path, {}).engine_settings())
    board = engine.run(BoardRequest(story=WORKER_STORY, frames=FRAMES, seed=5), tmp_path / "drawn-here")
    return wire.loads(wire.dumps(wire.encode_board(board, max_bytes=2**24)))


def with_report(result: dict, change) -> dict:
    report = json.loads(result["files"][REPORT_FILE])
    change(report, result["files"])
    result["files"][REPORT_FILE] = json.dumps(report).encode()
    return result


def forty_frames_on_one_huge_picture(report, files) -> None:
    buffer = io.BytesIO()
    Image.new("1", (4000, 4000)).save(buffer, format="PNG")  # a few KB; 48 MB once decoded as RGB
    report["frames"] = [dict(report["frames"][0], index=1, file="frame_01.png") for _ in range(40)]
    files["frame_01.png"] = buffer.getvalue()


def chosen_attempt_past_the_end(report, files) -> None:
    report["frames"][0]["chosen_attempt"] = 7


def frame_numbers_twice(report, files) -> None:
    report["frames"][1]["index"] = 1


def envelope(arq_id: str, result: dict | None) -> bytes:
    """arq's own result envelope around ``result``, as a worker's arq writes it; None: bytes that are no envelope."""
    if result is None:
        return b"\xc1 not msgpack"
    now = timestamp_ms()
    return serialize_result(wire.RENDER_FUNCTION, (), {}, 1, now, True, result, now, now, arq_id, "aldar:render",
                            arq_id, serializer=wire.dumps)


async def submit(bot) -> int:
    submitted = await bot.app.service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(frames=FRAMES, seed=5)))
    return submitted.job_id


@pytest.fixture
def config_path(tmp_path, redis_server):
    return scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, arq={"max_in_flight": 1})


async def plant_result(bot, result) -> tuple[int, str]:
    """Submit a job and put ``result`` where its worker's result would go; then let the bot poll."""
    job_id = await submit(bot)
    arq_id = f"aldar:render:job-{job_id}"
    await bot.app.port.redis.set(result_key_prefix + arq_id, envelope(arq_id, result))
    bot.start_worker_loop()
    return job_id, arq_id


@pytest.mark.parametrize("hostile", [
    pytest.param(forty_frames_on_one_huge_picture, id="forty frames on one 4000x4000 picture"),
    pytest.param(chosen_attempt_past_the_end, id="chosen attempt past the end"),
    pytest.param(frame_numbers_twice, id="a frame number twice"),
    pytest.param(None, id="not msgpack"),
])
async def test_a_hostile_result_fails_its_job_once_with_the_reason_and_is_gone_from_redis(
        tmp_path, redis_server, config_path, hostile):
    result = None if hostile is None else with_report(drawn_result(config_path, tmp_path), hostile)
    async with running_bot(config_path) as bot:
        job_id, arq_id = await plant_result(bot, result)
        await bot.wait_for_status([job_id], "failed", timeout=30)
        left_in_redis = await bot.app.port.redis.exists(result_key_prefix + arq_id)
        job = await bot.job(job_id)

    assert (job.status, job.error_type, job.attempts) == ("failed", "BadResult", 1)
    reason = {forty_frames_on_one_huge_picture: "the board has 40 frames; the job asked for 2",
              chosen_attempt_past_the_end: "frame 1 keeps attempt 7 of 1",
              frame_numbers_twice: "the board's frames are numbered [1, 1], not 1..2 in order",
              None: "the worker's result cannot be read"}[hostile]
    assert reason in job.error_message
    # the chat hears the reason once, in the words stored on the row
    assert [u.text for u in bot.updates(job_id, "failed")] == [text("job_failed", "en", job=job_id,
                                                                    error=job.error_message)]
    assert bot.gateway.deliveries == []
    assert left_in_redis == 0  # taken out, not left for the next claim to decode again


async def test_the_result_is_out_of_redis_before_its_first_pixel_is_decoded(
        tmp_path, redis_server, config_path, monkeypatch):
    result = drawn_result(config_path, tmp_path)
    observer = redis_client.Redis(port=redis_server.port)
    seen_while_decoding: list[int] = []
    load_board = wire.load_board

    def watched_load_board(*args):  # runs on the bot's decoding thread
        seen_while_decoding.append(observer.exists(result_key_prefix + arq_id))
        return load_board(*args)

    monkeypatch.setattr(wire, "load_board", watched_load_board)
    async with running_bot(config_path) as bot:
        job_id, arq_id = await plant_result(bot, result)
        await bot.wait_for_status([job_id], "done", timeout=30)
        await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
    observer.close()

    assert seen_while_decoding == [0]
    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]
    assert len(bot.gateway.deliveries[0].frame_paths) == FRAMES
