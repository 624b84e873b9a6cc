"""The scale-out settings: ``[engine] backend``, ``[arq]`` and REDIS_URL, read through ``load_config``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config, redacted_url
from bot.ops.logs import MASK, SecretMask
from engine.settings import RenderSettings

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "s3cretpassw0rd"
SECRET_URL = f"redis://:{PASSWORD}@redis:6379/1"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_with_no_file_the_bot_renders_locally_and_redis_is_on_localhost(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config.engine.backend == "local"
    assert config.arq.max_in_flight == 0
    assert config.redis_url() == "redis://127.0.0.1:6379/0"


def test_backend_arq_in_the_file_is_accepted(tmp_path):
    config = load_config(write(tmp_path, '[engine]\nbackend = "arq"\n'), {})
    assert config.engine.backend == "arq"


def test_an_unknown_backend_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[engine]\nbackend = "celery"\n'), {})
    assert "engine.backend" in str(err.value)
    assert "'arq'" in str(err.value)


def test_a_redis_password_in_the_file_is_refused_without_echoing_it(tmp_path):
    body = '[arq]\nredis_url = "redis://:hunter2hunter2@redis:6379/0"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, body), {})
    assert "REDIS_URL" in str(err.value)
    assert "hunter2hunter2" not in str(err.value)


def test_a_redis_password_in_the_file_is_refused_pointing_to_redis_url(tmp_path):
    body = '[arq]\nredis_url = "redis://:hunter2hunter2@redis:6379/0"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, body), {})
    assert "arq.redis_url" in str(err.value)
    assert "REDIS_URL" in str(err.value)


def test_a_redis_url_without_a_password_may_live_in_the_file(tmp_path):
    config = load_config(write(tmp_path, '[arq]\nredis_url = "redis://redis:6379/2"\n'), {})
    assert config.redis_url() == "redis://redis:6379/2"


def test_a_url_that_is_not_redis_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="arq.redis_url"):
        load_config(write(tmp_path, '[arq]\nredis_url = "http://redis:6379/0"\n'), {})


def test_redis_url_from_the_environment_wins_over_the_file(tmp_path):
    path = write(tmp_path, '[arq]\nredis_url = "redis://filehost:6379/0"\n')
    config = load_config(path, {"REDIS_URL": SECRET_URL})
    assert config.redis_url() == SECRET_URL


def test_the_redis_password_is_masked_in_logs_and_redacted_in_start_up_lines(tmp_path):
    config = load_config(write(tmp_path, ""), {"REDIS_URL": SECRET_URL})

    assert PASSWORD in config.secrets.values()
    assert SecretMask(config.secrets.values())(f"connecting to {config.redis_url()}") == \
        f"connecting to redis://:{MASK}@redis:6379/1"
    assert redacted_url(config.redis_url()) == "redis://:***@redis:6379/1"
    assert PASSWORD not in repr(config)
    assert PASSWORD not in config.model_dump_json()


def test_a_redis_url_without_a_password_is_not_redacted():
    assert redacted_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_a_blank_redis_url_in_the_environment_falls_back_to_the_file(tmp_path):
    path = write(tmp_path, '[arq]\nredis_url = "redis://filehost:6379/0"\n')
    assert load_config(path, {"REDIS_URL": "  "}).redis_url() == "redis://filehost:6379/0"


def test_max_in_flight_can_be_set_from_the_environment(tmp_path):
    config = load_config(write(tmp_path, ""), {"ALDAR__ARQ__MAX_IN_FLIGHT": "4"})
    assert config.arq.max_in_flight == 4


def test_zero_tries_from_the_environment_is_refused_naming_the_allowed_range(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, ""), {"ALDAR__ARQ__MAX_TRIES": "0"})
    assert "arq.max_tries = 0" in str(err.value)
    assert "allowed range: 1..20" in str(err.value)


def test_an_unknown_arq_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'arq.max_inflight'"):
        load_config(write(tmp_path, "[arq]\nmax_inflight = 2\n"), {})


def test_the_engine_never_sees_which_backend_the_bot_uses(tmp_path):
    local = load_config(write(tmp_path, '[engine]\nwidth = 512\nbackend = "local"\n'), {})
    remote = load_config(write(tmp_path, '[engine]\nwidth = 512\nbackend = "arq"\n'), {})

    render = remote.engine_settings().render
    assert type(render) is RenderSettings
    assert "backend" not in RenderSettings.model_fields
    assert not hasattr(render, "backend")
    assert render.width == 512
    assert remote.engine_settings() == local.engine_settings()
    assert remote.engine_settings().model_dump_json() == local.engine_settings().model_dump_json()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_worker_help_explains_redis_url_and_name():
    done = run_cli("worker", "--help")
    assert done.returncode == 0, done.stderr
    assert "REDIS_URL" in done.stdout
    assert "--name" in done.stdout


def test_the_top_level_help_lists_the_worker_command():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\s+worker\s+draw boards", done.stdout, re.MULTILINE), done.stdout


def test_a_redis_url_from_the_environment_that_is_not_redis_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, {"REDIS_URL": "http://admin:topsecretpw@redis:6379/0"})
    assert "REDIS_URL: expected a redis://" in str(err.value)
    assert "topsecretpw" not in str(err.value)


def test_redaction_keeps_an_ipv6_host_and_the_host_name_as_written():
    assert redacted_url("redis://:pw123456@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redacted_url("rediss://app:pw123456@Redis.Internal:6380/2") == "rediss://app:***@Redis.Internal:6380/2"
