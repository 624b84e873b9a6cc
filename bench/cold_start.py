"""Cold start of the CLI: ``python -m bot plan TEXT`` as a fresh process.

Target: median wall time of a fresh ``python -m bot plan TEXT`` < 1.5 s (start-up must stay
light: no torch, no diffusers, no model loading on import or for planning).

It prints:

1. the wall time of --repeat fresh subprocesses (sys.executable, cwd = repo root), after one
   untimed warm-up run so .pyc files exist; median, max, min;
2. the 10 slowest imports of one ``python -X importtime -m bot plan TEXT`` run, by cumulative
   time (with each module's own "self" time);
3. whether heavy modules (torch, diffusers, transformers, ...) end up in ``sys.modules``
   (a) after ``import bot.__main__, engine.planning.offline.planner`` and (b) after running ``bot.__main__.main(["plan", TEXT])``
   in a fresh interpreter. torch and diffusers must be absent.

Subprocesses write only to pipes; the working directory for them is the repo root (so
config.toml is read as a user would), and HOME/TMPDIR point into a temporary directory.

    python bench/cold_start.py [--repeat 5] [--text "..."]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 1.5
DEFAULT_TEXT = "Aldar Kose tricks a greedy merchant at the bazaar and rides away on his horse."
HEAVY = ("torch", "diffusers", "transformers", "peft", "openai", "discord", "telegram", "numpy", "PIL", "aiosqlite")
MUST_BE_ABSENT = ("torch", "diffusers")

_CHECK = r"""
import json, sys
mode, text, heavy = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
if mode == "import":
    import bot.__main__, engine.planning.offline.planner  # noqa: F401
else:
    import contextlib, io
    from bot.__main__ import main
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["plan", text])
    assert rc == 0, rc
print(json.dumps({name: name in sys.modules for name in heavy}))
"""


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALDAR")}
    env.update(HOME=str(tmp), TMPDIR=str(tmp), PYTHONPATH=str(REPO))
    return env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc


def time_cold_starts(text: str, repeat: int, env: dict[str, str]) -> list[float]:
    cmd = [sys.executable, "-m", "bot", "plan", text]
    _run(cmd, env)  # warm-up: byte-compile once, fill the OS file cache
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = _run(cmd, env)
        walls.append(time.perf_counter() - t0)
        shots = len(json.loads(proc.stdout)["shots"])
    print(f"plan printed {shots} shots")
    return walls


def slowest_imports(text: str, env: dict[str, str], top: int = 10) -> list[tuple[int, int, str]]:
    proc = _run([sys.executable, "-X", "importtime", "-m", "bot", "plan", text], env)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:"):].split("|", 2))
        rows.append((int(cumulative_us), int(self_us), name))
    rows.sort(reverse=True)
    total = sum(r[1] for r in rows)
    print(f"-X importtime: {len(rows)} imports, {total / 1000:.1f} ms of import time (sum of self)")
    return rows[:top]


def heavy_modules(mode: str, text: str, env: dict[str, str]) -> dict[str, bool]:
    proc = _run([sys.executable, "-c", _CHECK, mode, text, ",".join(HEAVY)], env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed fresh processes (default 5)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="story text passed to `plan`")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp_name:
        env = _env(Path(tmp_name))
        bare = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            _run([sys.executable, "-c", "pass"], env)
            bare.append(time.perf_counter() - t0)
        walls = time_cold_starts(args.text, args.repeat, env)
        imports = slowest_imports(args.text, env)
        loaded = {mode: heavy_modules(mode, args.text, env) for mode in ("import", "main")}

    print()
    print(f"{'command':<34} {'runs':>4} {'median ms':>10} {'max ms':>8} {'min ms':>8}")
    for name, values in (("python -c pass (interpreter floor)", bare), ("python -m bot plan TEXT", walls)):
        print(f"{name:<34} {len(values):>4} {statistics.median(values) * 1000:>10.1f} "
              f"{max(values) * 1000:>8.1f} {min(values) * 1000:>8.1f}")

    print()
    print("10 slowest imports (python -X importtime -m bot plan TEXT), by cumulative time")
    print(f"{'cumulative ms':>13} {'self ms':>8}  module")
    for cumulative, self_us, name in imports:
        print(f"{cumulative / 1000:>13.1f} {self_us / 1000:>8.1f}  {name}")

    print()
    print("in sys.modules? (a) after `import bot.__main__, engine.planning.offline.planner`; (b) after main(['plan', TEXT])")
    print(f"{'module':<14} {'installed':>9} {'(a) import':>10} {'(b) plan':>9}")
    for name in HEAVY:
        flag = "  <- must be False" if name in MUST_BE_ABSENT else ""
        installed = importlib.util.find_spec(name) is not None
        print(f"{name:<14} {str(installed):>9} {str(loaded['import'][name]):>10} {str(loaded['main'][name]):>9}{flag}")
    missing = [name for name in MUST_BE_ABSENT if importlib.util.find_spec(name) is None]
    if missing:
        print(f"note: {', '.join(missing)} not installed in this interpreter, so their check cannot fail here")
    heavy_ok = not any(loaded[mode][name] for mode in loaded for name in MUST_BE_ABSENT)

    figure = statistics.median(walls)
    verdict = "PASS" if figure < TARGET_S and heavy_ok else "MISS"
    print()
    print(f"RESULT cold_start: median {figure * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms; "
          f"torch/diffusers imported: {'no' if heavy_ok else 'YES'} (target < {TARGET_S * 1000:.0f} ms, "
          f"no torch/diffusers) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
