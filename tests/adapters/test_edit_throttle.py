"""adapters/edit_throttle.py: the one policy both chat adapters edit status messages by."""

from __future__ import annotations

import asyncio
import functools

from adapters.edit_throttle import EditThrottle


async def test_edits_are_throttled_per_lane_and_the_latest_text_always_lands():
    edits: list[tuple[float, str, str]] = []
    loop = asyncio.get_running_loop()

    async def edit(lane: str, text: str) -> None:
        edits.append((loop.time(), lane, text))

    throttle = EditThrottle(interval=0.2, clock=loop.time)
    for i in range(10):
        throttle.submit("42", 7, functools.partial(edit, "42", f"step {i}"))
        throttle.submit("43", 8, functools.partial(edit, "43", f"step {i}"))
        await asyncio.sleep(0.01)
    await throttle.drain()
    for lane in ("42", "43"):
        mine = [(at, text) for at, name, text in edits if name == lane]
        assert mine[0][1] == "step 0" and mine[-1][1] == "step 9"  # the last state is never thrown away
        assert len(mine) <= 3
        assert all(b - a >= 0.19 for (a, _), (b, _) in zip(mine, mine[1:], strict=False))
    # the two lanes do not wait for each other: both first edits go out at once
    assert abs(edits[0][0] - edits[1][0]) < 0.1


async def test_a_failed_edit_does_not_stop_the_next(caplog):
    done: list[str] = []

    async def broken() -> None:
        raise ConnectionError("message deleted")

    async def fine() -> None:
        done.append("edited")

    throttle = EditThrottle(interval=0.01)
    throttle.submit("chat", 1, broken)
    await asyncio.sleep(0)  # the first goes out alone
    throttle.submit("chat", 2, fine)
    await throttle.drain()
    assert done == ["edited"]
    assert "status edit of message 1 (chat) failed" in caplog.text


async def test_lanes_long_quiet_are_forgotten():
    async def edit() -> None:
        pass

    now = [0.0]
    throttle = EditThrottle(interval=1.0, clock=lambda: now[0])
    for job in range(300):
        now[0] += 2.0
        throttle.submit(f"job-{job}", 1, edit)
        await throttle.drain()
    assert len(throttle._last) <= 257  # not one timestamp per job for ever
