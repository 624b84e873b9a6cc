"""Eval cost: seconds to score a frame, and that as a share of the time to render it, on the
tiny models (tests/tiny_models.py, built into a temp dir; nothing is downloaded).

Target: scoring costs at most 10% of rendering on the same device. Boards of ``--frames``
frames are drawn by the tiny SDXL at ``--size`` with ``--steps`` steps (the identity check
off, so render time is drawing only), then scored by ``BoardScorer`` with the tiny CLIP, once
without and once with the dlib face metrics (the face models ship with the face_recognition
models package; without them that row is skipped). Each row is the median of ``--repeat``
passes over the same boards. The tiny SDXL draws far faster per pixel than SDXL does, so this
ratio is the cost's upper bound; on a GPU host run the same scorer over real boards with
``python -m bot eval --boards``, which prints ``scoring_seconds`` in eval.json.

    python bench/eval_tiny.py [--boards 2] [--frames 6] [--size 128] [--steps 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.build import build_engine  # noqa: E402
from engine.evaluation.boards import load_our_board  # noqa: E402
from engine.evaluation.metrics import BoardScorer  # noqa: E402
from engine.identity.validate import ClipScorer  # noqa: E402
from engine.models import ModelLoader  # noqa: E402
from engine.settings import EngineSettings, RenderSettings, ValidateSettings  # noqa: E402
from engine.storyboard import BoardRequest  # noqa: E402
from tests.tiny_models import build_tiny_clip, build_tiny_sdxl  # noqa: E402

TARGET_SHARE = 0.10
STORY = ("Aldar Kose meets a greedy bai at the bazaar. The bai laughs at his old coat. Aldar Kose grins and "
         "whispers a secret. The bai gives him his horse. Aldar Kose rides away across the steppe at sunset.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=2, help="boards to draw and score (default 2)")
    parser.add_argument("--frames", type=int, default=6, help="frames per board (default 6)")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="scoring passes, the median is reported (default 3)")
    return parser.parse_args()


def render(tmp: Path, args: argparse.Namespace) -> tuple[list, float]:
    settings = EngineSettings(
        render=RenderSettings(renderer="sdxl", base_model=str(build_tiny_sdxl(tmp / "sdxl")), clip_model="",
                              width=args.size, height=args.size, steps=args.steps, ref_guided=False),
        validation=ValidateSettings(face_check=False))
    engine = build_engine(settings)
    engine.run(BoardRequest(STORY, frames=2, seed=999), tmp / "warm-up")  # first-call costs are not drawing
    started = time.perf_counter()
    folders = []
    for seed in range(args.boards):
        folder = tmp / f"board-{seed}"
        engine.run(BoardRequest(STORY, frames=args.frames, seed=seed), folder)
        folders.append(folder)
    seconds = time.perf_counter() - started
    return [load_our_board(folder) for folder in folders], seconds / (args.boards * args.frames)


def scoring_seconds_per_frame(scorer: BoardScorer, boards: list, repeat: int) -> float:
    scorer.score(boards[0])  # warm: the first call pays for lazy set-up
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        for board in boards:
            scorer.score(board)
        passes.append(time.perf_counter() - started)
    return statistics.median(passes) / sum(len(board.frames) for board in boards)


def face_models():
    from engine.identity.faces import FaceIdentity, FaceModelError

    try:
        return FaceIdentity()
    except FaceModelError as exc:
        print(f"face metrics skipped: {exc}")
        return None


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        boards, render_s = render(tmp, args)
        model, processor = ModelLoader(RenderSettings(clip_model=str(build_tiny_clip(tmp / "clip")))).clip()
        print(f"{args.boards} boards x {args.frames} frames at {args.size}px, {args.steps} steps: "
              f"render {render_s * 1000:.1f} ms/frame")
        rows = [("CLIP only", ClipScorer(model, processor))]
        faces = face_models()
        if faces is not None:
            rows.append(("CLIP + faces", ClipScorer(model, processor, faces=faces)))
        shares = []
        for name, clip in rows:
            score_s = scoring_seconds_per_frame(BoardScorer(clip, copy_ceiling=0.95), boards, args.repeat)
            share = score_s / render_s
            shares.append((name, score_s, share))
            print(f"  {name:13s} score {score_s * 1000:7.1f} ms/frame = {share:6.1%} of render "
                  f"(target <= {TARGET_SHARE:.0%}){'' if share <= TARGET_SHARE else '  BELOW TARGET'}")
    worst_name, worst_s, worst = max(shares, key=lambda row: row[2])
    print(f"RESULT eval_tiny: scoring {worst_s * 1000:.1f} ms/frame, {worst:.3f} of render time ({worst_name}; "
          f"target <= {TARGET_SHARE}); CLIP only {shares[0][2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
