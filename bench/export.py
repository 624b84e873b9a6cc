"""Export cost: seconds to build the PDF shot sheet and the MP4 animatic of an 8-panel 16:9
board (1344x768 frames, drawn by the preview renderer), each also as a ratio of the time to
draw that preview board. Target: each under 2 s here (a 2-core CPU box). The MP4 is also built at
smaller ``animatic_long_side`` values (``--smaller``), to show what a faster file would cost in size.

The files are built with the default ``[export]`` settings, exactly as the 📄 PDF and
🎞 Animatic buttons build them (``bot.exports`` calls the same two functions). Each figure is
the median of ``--repeat`` builds; the file sizes are printed beside them, against Discord's
10 MiB. Nothing is downloaded.

    python bench/export.py [--frames 8] [--aspect 16:9] [--repeat 3] [--smaller 854,640]
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
from engine.exports.animatic import build_animatic  # noqa: E402
from engine.exports.board import load_export_board  # noqa: E402
from engine.exports.pdf import build_pdf  # noqa: E402
from engine.limits import ASPECTS  # noqa: E402
from engine.settings import EngineSettings, ExportSettings, RenderSettings  # noqa: E402
from engine.storyboard import BoardRequest  # noqa: E402

TARGET_SECONDS = 2.0
STORY = ("Aldar Kose meets a greedy bai at the bazaar. The bai laughs at his old coat. \"Give me your horse!\" "
         "shouts the bai. Aldar Kose grins and whispers a secret. The bai runs to fetch his purse. Aldar Kose "
         "rides away across the steppe at sunset. The bai sits alone by the cold pot. The moon rises.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="panels on the board (default 8)")
    parser.add_argument("--aspect", choices=ASPECTS, default="16:9", help="the frames' shape (default 16:9)")
    parser.add_argument("--repeat", type=int, default=3, help="builds of each file; the median is reported")
    parser.add_argument("--smaller", default="854,640",
                        help="video long sides to build the MP4 at besides the configured one (default 854,640; '' for none)")
    return parser.parse_args()


def median_seconds(build, repeat: int) -> tuple[float, bytes]:
    times, data = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        data = build()
        times.append(time.perf_counter() - started)
    return statistics.median(times), data


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = ExportSettings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "board"
        engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview")))
        started = time.perf_counter()
        engine.run(BoardRequest(STORY, frames=args.frames, seed=1, aspect=args.aspect), folder)
        board_s = time.perf_counter() - started
        board = load_export_board(folder)
        pdf_s, pdf = median_seconds(lambda: build_pdf(board, settings), args.repeat)
        mp4_s, mp4 = median_seconds(lambda: build_animatic(board, settings).data, args.repeat)
        smaller = {}
        for long_side in (int(side) for side in args.smaller.split(",") if side.strip()):
            at_size = settings.model_copy(update={"animatic_long_side": long_side})
            smaller[long_side] = median_seconds(lambda s=at_size: build_animatic(board, s).data, args.repeat)
    print(f"{args.frames}-panel {args.aspect} board ({board.width}x{board.height}): preview board {board_s:.2f}s")
    for name, seconds, data in (("PDF", pdf_s, pdf), ("MP4", mp4_s, mp4)):
        verdict = "" if seconds <= TARGET_SECONDS else "  BELOW TARGET"
        print(f"  {name}: {seconds:.2f}s = {seconds / board_s:.2f}x the preview board, "
              f"{len(data) / 2**20:.2f} MiB (limit {settings.max_bytes / 2**20:.0f} MiB){verdict}")
    for long_side, (seconds, data) in smaller.items():
        print(f"  MP4 at a {long_side}-pixel long side (default {settings.animatic_long_side}): {seconds:.2f}s, "
              f"{len(data) / 2**20:.2f} MiB")
    print(f"RESULT export: pdf {pdf_s:.3f} s, mp4 {mp4_s:.3f} s (target <= {TARGET_SECONDS}); "
          f"pdf/board {pdf_s / board_s:.3f}, mp4/board {mp4_s / board_s:.3f}; "
          f"pdf {len(pdf)} bytes, mp4 {len(mp4)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
