"""bench/gpu_probe.py: the GPU questions in one run. Here it runs at its tiny size on the CPU
(the same rows, the same loading code), and its full-size configs are checked on the meta device
against SDXL's published parameter counts, so the first GPU host gets a probe that works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "gpu_probe.py"


def probe(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(PROBE), "--tiny", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def results(stdout: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^RESULT gpu_probe: (.+?): (.*)$", stdout, re.M)}


def test_the_tiny_probe_answers_every_row_and_says_which_need_cuda():
    rows = results(probe("--frames", "3"))
    assert rows["dtypes"] == (
        "all bfloat16 (simple.unet=bfloat16 simple.vae=bfloat16 simple.text_encoder=bfloat16 "
        "simple.text_encoder_2=bfloat16 simple.image_encoder=bfloat16 ref-guided.unet=bfloat16 "
        "ref-guided.vae=bfloat16 ref-guided.text_encoder=bfloat16 ref-guided.text_encoder_2=bfloat16 "
        "ref-guided.image_encoder=bfloat16 ref-guided.controlnet=bfloat16)")
    for mode in ("simple", "ref-guided"):
        assert re.fullmatch(r"\d+\.\d\d s/board, \d+\.\d{3} s/frame, \d+\.\d\d it/s \(3 frames at 64 px, 2 steps.*",
                            rows[mode]), rows[mode]
    assert re.fullmatch(r"one seed alone vs in a batch of 4: max \d+ levels", rows["seed drift"])
    assert rows["draft speed (4 steps, guidance 0)"].startswith(tuple("0123456789"))
    for cuda_only in ("vram", "decode oom", "compile"):
        assert rows[cuda_only] == "skipped: needs CUDA"


def test_rows_that_no_longer_fit_the_budget_are_dropped_and_say_so():
    rows = results(probe("--frames", "2", "--budget-s", "0"))
    assert "simple" in rows  # the unit every other row is estimated in always runs
    for dropped in ("ref-guided", "seed drift", "vram", "decode oom", "draft"):
        assert re.fullmatch(r"skipped: about \d+ s, -?\d+ s of --budget-s left", rows[dropped]), (dropped, rows)


@pytest.fixture(scope="module")
def full_size():
    from bench.random_sdxl import build_models

    return build_models(device="meta", dtype=torch.float16)


@pytest.mark.parametrize(("name", "count"), [
    ("unet", 2_567_463_684), ("vae", 83_653_863), ("text_encoder", 123_060_480), ("text_encoder_2", 694_659_840),
    ("image_encoder", 1_844_907_264), ("controlnet", 1_251_014_160),
])
def test_full_size_configs_have_the_published_parameter_counts(full_size, name, count):
    assert sum(p.numel() for p in full_size[name].parameters()) == count
