"""The worker driving the real SDXL engine (tiny weights) on its engine thread:
cancel within a step, a responsive event loop, and out-of-memory handling."""

from __future__ import annotations

import asyncio

import pytest
import torch

from engine.build import build_engine
from tests.helpers import ALICE, BOB, loop_lag_while


@pytest.fixture
def sdxl_engine_section(tiny_sdxl_dir, tiny_clip_dir):
    def section(**values):
        return {"renderer": "sdxl", "base_model": str(tiny_sdxl_dir), "clip_model": str(tiny_clip_dir),
                "width": 64, "height": 64, "steps": 2, "batch_size": 4, "ref_guided": False, **values}

    return section


async def sdxl_rig(rig_factory, make_config, section, **queue):
    validation = {"face_check": False}  # face checks have their own tests; dlib is slow on face-less frames
    config = make_config(engine=section, queue=queue, validation=validation)
    engine = build_engine(config.engine_settings())
    return await rig_factory(story_engine=engine, engine=section, queue=queue, validation=validation)


async def test_cancel_stops_a_running_sdxl_job_within_steps(rig_factory, make_config, sdxl_engine_section):
    rig = await sdxl_rig(rig_factory, make_config, sdxl_engine_section(steps=60), cancel_poll_s=0.05)
    job_id = await rig.submit(frames=4)
    worker = asyncio.create_task(rig.worker.run(burst=True))
    while not any(u.stage == "step" for u in rig.gateway.updates):
        await asyncio.sleep(0.01)
    await rig.service.cancel(ALICE, job_id)
    await asyncio.wait_for(worker, timeout=60)

    job = await rig.store.get_job(job_id)
    assert (job.status, job.error_type) == ("cancelled", "Cancelled")
    steps = [u for u in rig.gateway.updates if u.stage == "step"]
    assert len(steps) < 60  # frame 1 never finished its 60 steps
    assert rig.gateway.deliveries == []
    await rig.store.close()


async def test_the_loop_stays_responsive_while_sdxl_renders(rig_factory, make_config, sdxl_engine_section):
    rig = await sdxl_rig(rig_factory, make_config, sdxl_engine_section(steps=8))
    await rig.submit(frames=6)
    lags, elapsed = await loop_lag_while(rig.worker.run(burst=True), interval=0.005)
    assert (await rig.store.get_job(1)).status == "done"
    assert len(lags) > 20 and elapsed > 0.3
    lags.sort()
    assert lags[int(len(lags) * 0.99)] < 0.1, f"p99 lag {lags[int(len(lags) * 0.99)]:.3f}s over {elapsed:.1f}s"
    await rig.store.close()


class FlakyMemoryPipe:
    """The real pipeline, but out of memory for every call while ``failing`` is set."""

    def __init__(self, pipe) -> None:
        self._pipe, self.failing, self.batches = pipe, True, []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        self.batches.append(len(kwargs["prompt"]))
        if self.failing:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self._pipe(**kwargs)


async def test_out_of_memory_fails_the_job_clearly_and_the_next_job_succeeds(
    rig_factory, make_config, sdxl_engine_section
):
    rig = await sdxl_rig(rig_factory, make_config, sdxl_engine_section())
    pipe = FlakyMemoryPipe(rig.engine.renderer.pipe)
    rig.engine.renderer.pipe = pipe
    first = await rig.submit(frames=3)
    assert await rig.worker.run_once()
    failed = await rig.store.get_job(first)
    assert (failed.status, failed.error_type) == ("failed", "OutOfMemory")
    assert "out of GPU memory drawing frame 1" in failed.error_message
    [note] = [u for u in rig.gateway.updates if u.stage == "failed"]
    assert "OutOfMemory" in note.text

    pipe.failing = False
    second = await rig.submit(who=BOB, frames=3)
    assert await rig.worker.run_once()
    assert (await rig.store.get_job(second)).status == "done"
    assert [d.job_id for d in rig.gateway.deliveries] == [second]
    await rig.store.close()
