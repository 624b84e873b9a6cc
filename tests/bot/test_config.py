"""config.toml + environment -> one validated AppConfig, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import AppConfig, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_shipped_config_toml_equals_the_embedded_defaults():
    shipped = load_config(REPO / "config.toml", {})
    defaults = AppConfig()
    assert shipped.model_dump(exclude={"storage"}) == defaults.model_dump(exclude={"storage"})
    assert shipped.storage.database == REPO / "data" / "bot.sqlite3"


def test_every_shipped_key_has_a_comment():
    for number, line in enumerate((REPO / "config.toml").read_text(encoding="utf-8").splitlines(), 1):
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"config.toml line {number} has no comment: {line!r}"


def test_no_file_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config.story.default_frames == 8
    assert (config.planner.min_shots, config.planner.max_shots) == (6, 10)
    assert config.storage.database == tmp_path / "data" / "bot.sqlite3"


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "[queue]\nmax_queud_per_user = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    message = str(err.value)
    assert "unknown key 'queue.max_queud_per_user'" in message
    assert "max_queued_per_user" in message  # the hint lists the real keys


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'rendr'"):
        load_config(write(tmp_path, "[rendr]\nwidth = 512\n"), {})


@pytest.mark.parametrize(
    ("body", "key", "allowed"),
    [
        ("[story]\ndefault_frames = 20\n", "story.default_frames = 20", "allowed range: 1..12"),
        ("[validation]\nthreshold = 1.5\n", "validation.threshold = 1.5", "allowed range: 0.0..1.0"),
        ("[engine]\nwidth = 1001\n", "engine.width = 1001", "a multiple of 8"),
    ],
)
def test_out_of_range_value_names_key_and_range(tmp_path, body, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, body), {})
    assert key in str(err.value)
    assert allowed in str(err.value)


def test_min_shots_above_max_shots_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="min_shots"):
        load_config(write(tmp_path, "[planner]\nmin_shots = 9\nmax_shots = 7\n"), {})


def test_cpu_offload_with_a_compiled_unet_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[engine]\ncpu_offload = true\ncompile_unet = true\n"), {})
    assert "cpu_offload and compile_unet cannot both be on" in str(err.value)
    assert "choose one" in str(err.value)


def test_a_secret_in_the_file_points_to_the_environment(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[telegram]\ntoken = "123:abc"\n'), {})
    assert "telegram.token" in str(err.value)
    assert "TELEGRAM_TOKEN" in str(err.value)


def test_secrets_come_from_the_environment_and_never_show(tmp_path):
    config = load_config(write(tmp_path, ""), {"OPENAI_API_KEY": "sk-secret-value", "TELEGRAM_TOKEN": " "})
    assert config.secrets.openai_api_key.get_secret_value() == "sk-secret-value"
    assert config.secrets.telegram_token is None  # blank means unset
    assert "sk-secret-value" not in repr(config)
    assert "sk-secret-value" not in config.model_dump_json()


def test_environment_overrides_a_value(tmp_path):
    env = {"ALDAR__QUEUE__MAX_QUEUED_PER_USER": "3", "ALDAR__STORY__BANNED_TERMS": '["curse"]'}
    config = load_config(write(tmp_path, "[queue]\nmax_queued_per_user = 9\n"), env)
    assert config.queue.max_queued_per_user == 3
    assert config.story.banned_terms == ("curse",)


def test_bad_environment_override_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"queue.max_queued_per_user = 0.*allowed range: 1..1000"):
        load_config(write(tmp_path, ""), {"ALDAR__QUEUE__MAX_QUEUED_PER_USER": "0"})


def test_config_path_from_environment_and_missing_file(tmp_path):
    path = write(tmp_path, "[story]\ndefault_frames = 6\n")
    assert load_config(None, {"ALDAR_CONFIG": str(path)}).story.default_frames == 6
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", {})


def test_invalid_toml_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[story\n"), {})


def test_relative_storage_paths_follow_the_config_file(tmp_path):
    path = write(tmp_path, '[storage]\ndatabase = "db/x.sqlite3"\noutputs = "/abs/out"\n')
    config = load_config(path, {})
    assert config.storage.database == tmp_path / "db" / "x.sqlite3"
    assert config.storage.outputs == Path("/abs/out")


def test_telegram_endpoints_come_from_config_or_their_fixed_env_names(tmp_path):
    path = write(tmp_path, '[telegram]\nbase_url = "http://bots.local/bot"\n')
    assert load_config(path, {}).telegram.base_url == "http://bots.local/bot"
    env = {"TELEGRAM_BASE_URL": "http://127.0.0.1:8081/bot", "TELEGRAM_BASE_FILE_URL": "http://127.0.0.1:8081/file/bot",
           "TELEGRAM_TOKEN": "123:abc"}
    config = load_config(path, env)
    assert (config.telegram.base_url, config.telegram.base_file_url) == (
        "http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/file/bot")
    assert config.secrets.telegram_token.get_secret_value() == "123:abc"


def test_discord_endpoints_come_from_their_fixed_env_names(tmp_path):
    env = {"DISCORD_API_BASE": "http://127.0.0.1:9000/api/v10", "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9000/gw"}
    config = load_config(write(tmp_path, ""), env)
    assert (config.discord.api_base, config.discord.gateway_url) == (env["DISCORD_API_BASE"], env["DISCORD_GATEWAY_URL"])
