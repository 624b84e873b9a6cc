"""compose.scale.yaml, the README's scale-out example: Redis with a password and no published port,
the bot on the arq backend without a GPU, and a GPU worker with its own health check. There is no
Docker engine here, so the file is read and its settings are checked against the real config loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.config import load_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose.scale.yaml"
SECRET_NAMES = ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "OPENAI_API_KEY", "REDIS_PASSWORD")
FAKE_ENV = {"REDIS_PASSWORD": "pw-from-the-shell", "TELEGRAM_TOKEN": "", "DISCORD_TOKEN": "", "OPENAI_API_KEY": ""}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, enough for this file."""
    return re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: env.get(m.group(1), ""), value)


def environment(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def gpu_devices(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_the_example_has_redis_bot_and_worker(services):
    assert {"redis", "bot", "worker"} <= set(services)


def test_redis_needs_a_password_and_is_not_published(services):
    redis = services["redis"]
    assert "ports" not in redis
    assert "--requirepass" in " ".join(redis["command"])
    assert environment(redis)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "--appendonly yes" in " ".join(redis["command"])


def test_no_secret_is_written_in_the_file(services):
    for name, service in services.items():
        for key, value in environment(service).items():
            for secret in SECRET_NAMES:
                if secret in key or secret in value:
                    assert f"${{{secret}" in value, f"{name}.{key} holds a literal secret: {value!r}"


def test_the_bot_runs_the_arq_backend_without_a_gpu(services):
    bot = services["bot"]
    env = {key: interpolate(value, FAKE_ENV) for key, value in environment(bot).items()}
    config = load_config(None, env)
    assert config.engine.backend == "arq"
    assert config.redis_url() == "redis://:pw-from-the-shell@redis:6379/0"
    assert gpu_devices(bot) == [] and "gpus" not in bot
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_worker_draws_on_a_gpu_and_checks_its_own_health(services):
    worker = services["worker"]
    env = {key: interpolate(value, FAKE_ENV) for key, value in environment(worker).items()}
    config = load_config(None, env)
    assert worker["command"] == ["python", "-m", "bot", "worker"]
    assert config.engine.renderer == "sdxl"
    assert config.redis_url() == "redis://:pw-from-the-shell@redis:6379/0"
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in gpu_devices(worker))
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "bot", "worker", "--check"]
    assert worker["image"] == services["bot"]["image"]


def test_every_volume_used_is_declared():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    used = {v.split(":")[0] for service in compose["services"].values() for v in service.get("volumes", [])}
    assert used <= set(compose["volumes"])
