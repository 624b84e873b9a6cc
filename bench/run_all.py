"""Run every benchmark in bench/ and print one table: each figure next to its target.

Each bench runs as its own subprocess (``sys.executable bench/NAME.py ARGS``, cwd = the repo root,
HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1), one after another; run_all reads the figures out
of its stdout (the benches' ``RESULT ...`` lines) and prints

    | benchmark | figure | measured | target | verdict |

with verdict OK, BELOW TARGET, info (a figure with no target), skipped (engine_gpu without CUDA:
"skipped: needs CUDA"; scale_out without redis-server: "skipped: needs redis-server") or error. The
targets are the ``TARGET_*`` constants of each bench script, read from its source, so the table
follows the scripts. The run ends with its total wall time.

Exit status: 0 when every bench ran and printed its figures, whatever they measured (a figure
below its target is reported, not a failure); 1 when a bench crashed, timed out, or printed
no figure run_all could read (the verdict then says "error: " and the bench's last stderr line);
2 for bad arguments.

Default arguments keep the whole run under ~3 minutes on a 2-core laptop (about 2 min here);
--quick picks smaller repeat counts (about 1 min here), used by tests/test_bench_run_all.py.
Figures from a --quick run are noisier. Nothing is downloaded.

    python bench/run_all.py [--quick] [--only NAME[,NAME...]] [--timeout S] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
DEFAULT_STORY = REPO.parent / "shared" / "stories" / "en_merchant.txt"
FALLBACK_STORY = "Aldar Kose tricks a greedy merchant at the bazaar and rides away on his horse."
NUM = r"(?:\d+(?:\.\d+)?|nan|inf)"

OK, BELOW, INFO, ERROR = "OK", "BELOW TARGET", "info", "error"
SKIPPED_CUDA = "skipped: needs CUDA"


@dataclass(frozen=True)
class Figure:
    """One row of the table: a regex on the bench's stdout and how to judge the value.

    ``pattern`` has a group ``value``; other named groups must equal ``require`` for OK.
    ``target`` is the name of a module-level constant of the bench script (read with ``ast``,
    times ``scale``) or a literal; ``op`` compares the value with it. No ``op``: info only.
    """

    label: str
    pattern: str
    unit: str = ""
    op: str | None = None
    target: str | float | None = None
    scale: float = 1.0
    require: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    figures: tuple[Figure, ...]
    story_arg: bool = False  # takes --story PATH
    skip_marker: str | None = None  # stdout containing it: every figure is reported as skip_label
    skip_label: str = "skipped: needs CUDA"

    @property
    def script(self) -> Path:
        return BENCH / f"{self.name}.py"


BENCHES: tuple[Bench, ...] = (
    Bench(
        "preview_board", (), ("--repeat", "1"),
        (Figure("preview board time (run_story, median)",
                rf"RESULT preview_board: median (?P<value>{NUM}) s", "s", "<", "TARGET_S"),),
        story_arg=True,
    ),
    Bench(
        "loop_lag", (), ("--repeat", "1", "--jobs", "2"),
        (Figure("loop lag p99 during a render", rf"RESULT loop_lag: worker p99 (?P<value>{NUM}) ms", "ms", "<",
                "TARGET_MS"),),
        story_arg=True,
    ),
    Bench(
        "cold_start", (), ("--repeat", "3"),
        (
            Figure("`python -m bot plan` cold start (median)", rf"RESULT cold_start: median (?P<value>{NUM}) ms",
                   "ms", "<", "TARGET_S", scale=1000),
            Figure("torch/diffusers imported by plan", r"RESULT cold_start:.*torch/diffusers imported: (?P<value>\w+)",
                   "", "==", "no"),
        ),
    ),
    Bench(
        "telegram_intake", (), (),
        (
            Figure("accepted /story commands per second", rf"RESULT telegram_intake: (?P<value>{NUM}) cmd/s",
                   "cmd/s", ">=", "TARGET_RATE"),
            Figure("p99 ack latency", rf"RESULT telegram_intake: .*?cmd/s, p99 (?P<value>{NUM}) ms", "ms", "<",
                   "TARGET_P99_MS"),
        ),
    ),
    Bench(
        "discord_intake", (), ("--repeat", "1"),
        (
            Figure("p99 defer latency (100 at once)",
                   rf"RESULT discord_intake: .*?p99 defer (?P<value>{NUM}) ms.* (?P<bench>PASS|MISS)\s*$", "ms", "<",
                   "TARGET_P99_MS", require=(("bench", "PASS"),)),  # MISS also = interactions lost or answered badly
            Figure("interactions deferred per second", rf"RESULT discord_intake: (?P<value>{NUM}) interactions/s",
                   "/s"),
        ),
    ),
    Bench(
        # --threads 1: on a busy 2-core box torch's two threads spin against each other (a 3 s board took 190 s)
        "engine_tiny", ("--repeat", "2", "--threads", "1"), ("--repeat", "1", "--frames", "4", "--threads", "1"),
        (
            Figure("warm board time (median)", rf"RESULT engine_tiny: warm board (?P<value>{NUM}) s", "s"),
            Figure("cold start / warm board", rf"RESULT engine_tiny: .*?cold start {NUM} s, (?P<value>{NUM})x", "x"),
            Figure("model loads per warm board",
                   r"RESULT engine_tiny: .*model loads per warm board (?P<value>\d+), loader total (?P<loader>\w+)",
                   "", "==", "TARGET_LOADS", require=(("loader", "steady"),)),
        ),
        story_arg=True,
    ),
    Bench(
        "ref_guided_tiny", (), ("--repeat", "1", "--frames", "2"),
        (
            Figure("peak RSS, both modes loaded / simple only",
                   rf"RESULT ref_guided_tiny: RSS both/simple = (?P<value>{NUM})", "x", "<=", "TARGET_RSS_RATIO"),
            Figure("ref-guided board / simple board", rf"RESULT ref_guided_tiny: .*board ref/simple = (?P<value>{NUM})",
                   "x"),
        ),
        story_arg=True,
    ),
    Bench(
        "seed_drift", (), ("--frames", "4", "--steps", "2"),
        (
            Figure("one seed, another batch size or thread count: largest pixel difference",
                   rf"RESULT seed_drift: max (?P<value>{NUM}) levels", "levels", "<=", "TARGET_MAX_LEVELS"),
            Figure("one seed, another batch size or thread count: lowest PSNR",
                   rf"RESULT seed_drift: .*?min PSNR (?P<value>{NUM}) dB", "dB", ">=", "TARGET_MIN_PSNR_DB"),
            Figure("frame 1 the same bytes at any batch size",
                   r"RESULT seed_drift: .*frame 1 the same bytes at any batch size: (?P<value>\w+)", "", "==", "yes"),
        ),
    ),
    Bench(
        "queue_position", (), ("--sizes", "1000,100000", "--repeat", "20"),
        (
            Figure("/status with 100k jobs queued (SQL position)",
                   rf"RESULT queue_position: 100000 queued: /status (?P<value>{NUM}) ms", "ms", "<", "TARGET_MS"),
            Figure("old replay / SQL position at 100k queued",
                   rf"RESULT queue_position: 100000 queued: .*\((?P<value>{NUM})x\)", "x"),
        ),
    ),
    Bench(
        "train_tiny", (), ("--steps", "8"),
        (Figure("cached / uncached trainer steps per second", rf"ratio cached/uncached: (?P<value>{NUM})x", "x", ">=",
                "TARGET_RATIO"),),
    ),
    Bench(
        "eval_tiny", (), ("--boards", "1", "--frames", "3", "--size", "64", "--steps", "2", "--repeat", "1"),
        (
            Figure("eval scoring time / render time, per frame (tiny models)",
                   rf"RESULT eval_tiny: .*?, (?P<value>{NUM}) of render time", "x", "<=", "TARGET_SHARE"),
            Figure("eval scoring per frame", rf"RESULT eval_tiny: scoring (?P<value>{NUM}) ms/frame", "ms"),
        ),
    ),
    Bench(
        "export", (), ("--repeat", "1"),
        (
            Figure("PDF shot sheet, 8-panel 16:9 board", rf"RESULT export: pdf (?P<value>{NUM}) s", "s", "<=",
                   "TARGET_SECONDS"),
            Figure("MP4 animatic, 8-panel 16:9 board", rf"RESULT export: .*?mp4 (?P<value>{NUM}) s", "s", "<=",
                   "TARGET_SECONDS"),
            Figure("PDF time / preview board time", rf"RESULT export: .*?pdf/board (?P<value>{NUM})", "x"),
            Figure("MP4 time / preview board time", rf"RESULT export: .*?mp4/board (?P<value>{NUM})", "x"),
        ),
    ),
    Bench(
        "prompt_budget", (), ("--counts", "6"),
        (
            Figure("offline plans whose prompt 1 fits 77 tokens uncut",
                   rf"RESULT prompt_budget: .*?prompt 1 (?P<value>{NUM})%", "%"),
            Figure("offline plans whose prompt 2 fits 77 tokens uncut",
                   rf"RESULT prompt_budget: .*?prompt 2 (?P<value>{NUM})%", "%"),
        ),
    ),
    Bench(
        "face_checks", (), ("--batch", "2", "--size", "512", "--repeat", "1"),
        (
            Figure("render thread's speed while a batch is face-checked (own process)",
                   rf"RESULT face_checks: render thread at (?P<value>{NUM})% of its speed", "%", ">=", "TARGET_SPEED",
                   scale=100),
            Figure("render thread's speed, own process / check on a thread",
                   rf"RESULT face_checks: .*? on a thread \((?P<value>{NUM})x\)", "x"),
        ),
    ),
    Bench(
        "engine_gpu", ("--configs", "baseline,all-on"), ("--configs", "baseline,all-on", "--repeat", "1"),
        (Figure("baseline / all-on board time (speed-up)",
                rf"RESULT engine_gpu: all on {NUM} s/board vs baseline {NUM} s/board \((?P<value>{NUM})x\)"
                r".* (?P<bench>PASS|MISS)\s*$", "x", ">=", 1.0, require=(("bench", "PASS"),)),),
        skip_marker="no CUDA",
    ),
    Bench(
        "gpu_probe", (), ("--tiny", "--frames", "3"),
        (
            Figure("probe: every module of both modes in the configured dtype",
                   r"RESULT gpu_probe: dtypes: (?P<value>all|MISMATCH)", "", "==", "all"),
            Figure("probe: simple board, 8 frames at 1024 px, 30 steps",
                   rf"RESULT gpu_probe: simple: (?P<value>{NUM}) s/board", "s"),
            Figure("probe: ref-guided board, 8 frames at 1024 px, 30 steps",
                   rf"RESULT gpu_probe: ref-guided: (?P<value>{NUM}) s/board", "s"),
        ),
        skip_marker="device cpu",
    ),
    Bench(
        "scale_out", (), ("--quick",),
        (
            Figure("throughput, 2 arq workers / 1", rf"RESULT scale_out: .*?; 2 workers (?P<value>{NUM})x", "x", ">=",
                   "TARGET_RATIO_2"),
            Figure("throughput, 4 arq workers / 1", rf"RESULT scale_out: .*?; 4 workers (?P<value>{NUM})x", "x", ">=",
                   "TARGET_RATIO_4"),
            Figure("boards per minute, 1 worker", rf"RESULT scale_out: 1 worker (?P<value>{NUM}) boards/min",
                   "boards/min"),
            Figure("orchestration overhead per job, 1 worker (p50)", rf"RESULT scale_out: .*? p50 (?P<value>{NUM}) ms",
                   "ms"),
        ),
        skip_marker="no redis-server",
        skip_label="skipped: needs redis-server",
    ),
)
BY_NAME = {b.name: b for b in BENCHES}


@dataclass
class Run:
    """What one bench subprocess did."""

    name: str
    script: Path
    argv: list[str]
    rc: int | None = None  # None: timed out
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timeout: float = 0.0


@dataclass
class Row:
    bench: str
    figure: str
    measured: str = "-"
    target: str = "-"
    verdict: str = ERROR

    def cells(self) -> list[str]:
        return [self.bench, self.figure, self.measured, self.target, self.verdict]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "name: full last stderr line"

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


# -- reading the benches ------------------------------------------------------------------------
def script_constants(path: Path) -> dict[str, float]:
    """Module-level ``NAME = <number>`` assignments of a script, without importing it."""
    constants: dict[str, float] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            value = node.value.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        constants[target.id] = value
    return constants


def _fmt(value: float | str, unit: str) -> str:
    text = value if isinstance(value, str) else f"{value:g}"
    if not unit:
        return text
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}"


def target_text(figure: Figure, script: Path) -> tuple[str, float | str | None]:
    """("< 2 s", 2.0) for a figure; ("-", None) when it has no target. KeyError: constant missing."""
    if figure.op is None:
        return "-", None
    if isinstance(figure.target, str) and figure.target.isidentifier() and figure.target.isupper():
        value: float | str = script_constants(script)[figure.target] * figure.scale
    else:
        value = figure.target
    shown = _fmt(value, figure.unit)
    return (shown if figure.op == "==" else f"{figure.op} {shown}"), value


def _compare(value: float | str, op: str, target: float | str) -> bool:
    if isinstance(target, str):
        return str(value) == target if op == "==" else False
    value = float(value)
    if math.isnan(value):
        return False
    return {"<": value < target, "<=": value <= target, ">=": value >= target, ">": value > target,
            "==": value == target}[op]


def last_line(run: Run) -> str:
    """The bench's last stderr line (its exception, usually), else its last stdout line."""
    for text in (run.stderr, run.stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "(no output)"


def judge(bench: Bench, run: Run, report: Report) -> None:
    """Append the bench's rows (and its error, if any) to the report."""
    if run.rc is None:
        failed = f"timed out after {run.timeout:g} s"
    elif run.rc != 0:
        failed = f"exit {run.rc}: {last_line(run)}"
    else:
        failed = ""
    if failed:
        report.errors.append(f"{bench.name}: {failed}")
    skipped = not failed and bench.skip_marker is not None and bench.skip_marker in run.stdout
    for figure in bench.figures:
        row = Row(bench.name, figure.label)
        report.rows.append(row)
        try:
            row.target, target = target_text(figure, bench.script)
        except KeyError as exc:
            why = f"{bench.script.name} has no constant {exc.args[0]} (the target)"
            report.errors.append(f"{bench.name}: {why}")
            row.verdict = _short(f"{ERROR}: {why}")
            continue
        if failed:
            row.verdict = _short(f"{ERROR}: {failed}")
            continue
        if skipped:
            row.verdict = bench.skip_label
            continue
        match = re.search(figure.pattern, run.stdout, re.MULTILINE)
        if match is None:
            why = f"no '{figure.label}' figure in its output (last line: {last_line(run)})"
            report.errors.append(f"{bench.name}: {why}")
            row.verdict = _short(f"{ERROR}: {why}")
            continue
        raw = match["value"]
        row.measured = _fmt(raw, figure.unit)
        if figure.op is None:
            row.verdict = INFO
        else:
            value: float | str = raw if isinstance(target, str) else float(raw)
            met = _compare(value, figure.op, target) and all(match[g] == want for g, want in figure.require)
            row.verdict = OK if met else BELOW


def judge_extra(run: Run, report: Report) -> None:
    """An --extra-script: one row, its exit status."""
    row = Row(run.name, "exit status", target="exit 0")
    if run.rc == 0:
        row.measured, row.verdict = "exit 0", OK
    else:
        why = f"timed out after {run.timeout:g} s" if run.rc is None else f"exit {run.rc}: {last_line(run)}"
        row.measured = "-" if run.rc is None else f"exit {run.rc}"
        row.verdict = _short(f"{ERROR}: {why}")
        report.errors.append(f"{run.name}: {why}")
    report.rows.append(row)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- running ------------------------------------------------------------------------------------
def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def run_script(name: str, script: Path, argv: list[str], timeout: float, log_dir: Path | None) -> Run:
    run = Run(name, script, argv, timeout=timeout)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), *argv], cwd=REPO, env=bench_env(), capture_output=True,
                              text=True, errors="replace", timeout=timeout, check=False)
        run.rc, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        run.stdout = _text(exc.stdout)
        run.stderr = _text(exc.stderr)
    run.seconds = time.perf_counter() - t0
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{name}.stdout").write_text(run.stdout, encoding="utf-8")
        (log_dir / f"{name}.stderr").write_text(run.stderr, encoding="utf-8")
    return run


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def bench_argv(bench: Bench, quick: bool, story: Path | None) -> list[str]:
    argv = list(bench.quick_args if quick else bench.args)
    if bench.story_arg and story is not None:
        argv += ["--story", str(story)]
    if bench.name == "engine_gpu":  # the same weights the GPU tests use, where they are set
        for var, flag in (("ALDAR_SDXL_BASE", "--base-model"), ("ALDAR_CLIP", "--clip-model")):
            if os.environ.get(var):
                argv += [flag, os.environ[var]]
    return argv


def story_file(tmp: Path) -> tuple[Path | None, str]:
    """The sample story the benches default to; $STORIES_DIR or a written sentence where it is missing."""
    if os.environ.get("STORIES_DIR"):
        candidate = Path(os.environ["STORIES_DIR"]) / DEFAULT_STORY.name
        if candidate.is_file():
            return candidate, f"story {candidate}"
    if DEFAULT_STORY.is_file():
        return None, f"story {DEFAULT_STORY}"
    path = tmp / "story.txt"
    path.write_text(FALLBACK_STORY, encoding="utf-8")
    return path, f"story: {DEFAULT_STORY} missing, a built-in sentence instead"


def print_table(rows: list[Row]) -> None:
    header = ["benchmark", "figure", "measured", "target", "verdict"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table[1:]:
        print(line(cells))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    epilog = ["benchmarks and the arguments each gets (default | --quick):"]
    for b in BENCHES:
        epilog.append(f"  {b.name:<16} {' '.join(b.args) or '(script defaults)'} | "
                      f"{' '.join(b.quick_args) or '(script defaults)'}")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + "\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller repeat counts: about half the time, noisier")
    parser.add_argument("--only", action="append", default=[], metavar="NAME[,NAME...]",
                        help="run only these benchmarks (repeatable; names as listed below)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="give up on one bench after S seconds; it is then an error (default 600)")
    parser.add_argument("--log-dir", type=Path, default=None, metavar="DIR",
                        help="write each bench's stdout and stderr to DIR/NAME.stdout, DIR/NAME.stderr")
    parser.add_argument("--extra-script", action="append", default=[], type=Path, metavar="PATH",
                        help="also run this script (no arguments) and report its exit status; "
                        "for testing run_all's error path")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    args.only = names
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    missing = [str(p) for p in args.extra_script if not p.is_file()]
    if missing:
        parser.error(f"--extra-script: no such file {', '.join(missing)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    jobs: list[tuple[Bench | None, str, Path]] = [(b, b.name, b.script) for b in benches]
    jobs += [(None, f"extra:{p.name}", p.resolve()) for p in args.extra_script]
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp_name:
        story, story_note = story_file(Path(tmp_name))
        print(f"run_all: {len(jobs)} benchmark(s), {'--quick' if args.quick else 'default'} arguments; "
              f"{story_note}; python {sys.executable}", flush=True)
        for i, (bench, name, script) in enumerate(jobs, 1):
            argv_ = bench_argv(bench, args.quick, story) if bench else []
            print(f"[{i}/{len(jobs)}] {name} {' '.join(argv_)}".rstrip(), end=" ... ", flush=True)
            run = run_script(name, script, argv_, args.timeout, args.log_dir)
            before = len(report.errors)
            if bench is None:
                judge_extra(run, report)
            else:
                judge(bench, run, report)
            status = "error" if len(report.errors) > before else "ok"
            if bench and bench.skip_marker and run.rc == 0 and bench.skip_marker in run.stdout:
                status = "skipped"
            print(f"{status} ({run.seconds:.1f} s)", flush=True)

    print()
    print_table(report.rows)
    if report.errors:
        print()
        print("errors (the bench's last stderr line):")
        for line in report.errors:
            print(f"  {line}")
    below = sum(r.verdict == BELOW for r in report.rows)
    print()
    print(f"run_all: {len(report.rows)} figures, {sum(r.verdict == OK for r in report.rows)} OK, {below} below target, "
          f"{len(report.errors)} error(s); total wall time {time.perf_counter() - started:.1f} s "
          f"(exit {report.exit_code}: {'errors' if report.errors else 'figures below target do not fail the run'})")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
