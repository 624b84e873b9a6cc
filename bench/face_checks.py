"""Does a face check stop the render thread? dlib on a thread vs dlib in its own process.

The engine checks a rendered batch on a thread while the next batch renders (engine/storyboard.py).
The render thread is Python launching GPU kernels, so what matters is how much Python it can run
while a check is under way. dlib's CNN face detector holds the GIL for its whole call, so a check
on a thread of this process would stall it; engine.identity.face_process runs dlib in a child process.

Set-up: a batch of --batch frames at --size px, half of them a face (scikit-image's astronaut,
found by the fast HOG detector) and half without one (its coffee cup: HOG finds nothing and the
~1 s CNN detector runs). A "render thread" stand-in counts Python loop turns. Measured, each
--repeat times (median):

- its turns per second alone;
- its turns per second while a thread checks the batch with ``FaceIdentity`` in this process;
- the same while the thread checks it through ``FaceProcess``;
- the wall time of one batch check in-process and through the child process (the difference is
  the cost of shipping the frames to the child and back).

    RESULT face_checks: render thread at P% of its speed with the check in a process, T% on a thread (Rx); batch of 4 at 1024 px: process X s, in-process Y s

Needs at least 2 CPU cores to mean anything (the child needs a core of its own). Nothing is downloaded.

    python bench/face_checks.py [--batch 4] [--size 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from engine.identity.face_process import FaceProcess  # noqa: E402
from engine.identity.faces import FaceIdentity  # noqa: E402

TARGET_SPEED = 0.8  # with the check in a process, the render thread keeps at least 80% of its speed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="frames per checked batch, >= 2 (default 4)")
    parser.add_argument("--size", type=int, default=1024, help="frame side in pixels, >= 128 (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure, >= 1 (default 3)")
    args = parser.parse_args(argv)
    if args.batch < 2 or args.size < 128 or args.repeat < 1:
        parser.error("need --batch >= 2, --size >= 128, --repeat >= 1")
    return args


def batch(size: int, count: int) -> list[Image.Image]:
    from skimage import data

    face = Image.fromarray(data.astronaut()).resize((size, size))
    cup = Image.fromarray(data.coffee()).resize((size, size))
    return [face if i % 2 == 0 else cup for i in range(count)]


def count_turns(done: threading.Event) -> float:
    """The render thread's stand-in: Python loop turns per second until ``done`` is set."""
    turns, start = 0, time.perf_counter()
    while not done.is_set():
        turns += 1
    return turns / (time.perf_counter() - start)


def turns_per_second(seconds: float) -> float:
    """The stand-in alone for ``seconds`` (a timer thread, asleep meanwhile, ends it)."""
    done = threading.Event()
    timer = threading.Timer(seconds, done.set)
    timer.start()
    rate = count_turns(done)
    timer.join()
    return rate


def turns_per_second_beside(check: Callable[[], object]) -> tuple[float, float]:
    """(loop turns per second on this thread, the check's wall time) while a thread runs the check."""
    done = threading.Event()
    timing: dict[str, float] = {}

    def run() -> None:
        start = time.perf_counter()
        check()
        timing["s"] = time.perf_counter() - start
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    rate = count_turns(done)
    worker.join()
    return rate, timing["s"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = batch(args.size, args.batch)
    here, there = FaceIdentity(), FaceProcess()
    try:
        there.faces_in(images[:1])  # the child's start-up and first call are not what is measured
        alone, on_thread, in_process, thread_s, process_s = [], [], [], [], []
        for _ in range(args.repeat):
            alone.append(turns_per_second(1.0))
            rate, seconds = turns_per_second_beside(lambda: here.faces_in(images))
            on_thread.append(rate)
            thread_s.append(seconds)
            rate, seconds = turns_per_second_beside(lambda: there.faces_in(images))
            in_process.append(rate)
            process_s.append(seconds)
    finally:
        there.close()
    base = statistics.median(alone)
    thread_share = statistics.median(on_thread) / base
    process_share = statistics.median(in_process) / base
    ratio = process_share / thread_share if thread_share > 0 else float("inf")
    print(f"cores: {os.cpu_count()}; render-thread stand-in alone: {base:,.0f} turns/s")
    print(f"check on a thread, dlib in this process: {statistics.median(thread_s):.2f} s a batch, "
          f"render thread at {thread_share:.0%}")
    print(f"check on a thread, dlib in a child process: {statistics.median(process_s):.2f} s a batch, "
          f"render thread at {process_share:.0%}")
    verdict = "PASS" if process_share >= TARGET_SPEED else "MISS"
    print(f"RESULT face_checks: render thread at {process_share * 100:.0f}% of its speed with the check in a process, "
          f"{thread_share * 100:.0f}% on a thread ({ratio:.1f}x); batch of {args.batch} at {args.size} px: "
          f"process {statistics.median(process_s):.2f} s, in-process {statistics.median(thread_s):.2f} s {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
