"""A GPU worker's scratch folder: one a killed worker left behind is removed by the next worker
to start; a live worker's is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from bot.render.arq_worker import SCRATCH_PREFIX, remove_dead_scratch


def test_a_dead_workers_scratch_is_removed_and_a_live_ones_kept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = tmp_path / f"{SCRATCH_PREFIX}{gone.stdout.strip()}-abc"
    (dead / "tmpjob").mkdir(parents=True)
    (dead / "tmpjob" / "frame_01.png").write_bytes(b"half a board")
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / "aldar-worker-notapid"  # not one of ours by its name: left alone
    other.mkdir()
    assert remove_dead_scratch(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
