"""Configuration: config.toml + environment, validated once into ``AppConfig``.

* Every tunable lives in config.toml with a comment; the embedded defaults below are
  the same values, so a fresh machine runs with no file at all.
* Unknown keys are errors that name the key; ranges are checked and reported.
* Secrets come only from the environment (``OPENAI_API_KEY``, ``DISCORD_TOKEN``,
  ``TELEGRAM_TOKEN``) and are never written to a file or a log.
* Any setting can be overridden from the environment as ``ALDAR__SECTION__KEY``,
  e.g. ``ALDAR__QUEUE__MAX_QUEUED_PER_USER=3``; values are read as TOML literals.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from engine.limits import MAX_FRAMES, MIN_FRAMES, Aspect, Mode
from engine.settings import (
    ExportSettings,
    EngineSettings,
    GridSettings,
    PickSettings,
    PlannerSettings,
    PromptSettings,
    RenderSettings,
    TrainSettings,
    ValidateSettings,
)

ENV_PREFIX = "ALDAR__"
CONFIG_ENV = "ALDAR_CONFIG"
SECRET_ENV = {"openai_api_key": "OPENAI_API_KEY", "discord_token": "DISCORD_TOKEN", "telegram_token": "TELEGRAM_TOKEN",
              "redis_url": "REDIS_URL"}
# Keys that people put in config files by mistake; named so the error can point to the env var.
_SECRET_KEYS = {"token", "api_key", "openai_api_key", "discord_token", "telegram_token", "bot_token", "secret", "password"}


class ConfigError(ValueError):
    """A bad config; the message names each offending key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorySettings(_Section):
    max_chars: int = Field(default=2000, ge=1, le=20_000)
    default_frames: int = Field(default=8, ge=MIN_FRAMES, le=MAX_FRAMES)
    default_mode: Mode = "simple"
    default_aspect: Aspect = "1:1"
    banned_terms: tuple[str, ...] = ()
    max_picture_mb: float = Field(default=10.0, gt=0.0, le=50.0)  # a user's character picture, as sent


class QueueSettings(_Section):
    max_queued_per_user: int = Field(default=5, ge=1, le=1000)
    max_queued_per_chat: int = Field(default=20, ge=1, le=100_000)
    max_queued_total: int = Field(default=200, ge=1, le=1_000_000)  # every user together; moderators too
    jobs_per_day: int = Field(default=30, ge=0, le=100_000)  # per user, rolling 24 h; 0 = no cap
    regen_renders_per_day: int = Field(default=300, ge=0, le=1_000_000)  # worst-case renders; 0 = no cap
    moderators_exempt: bool = True  # the per-user, per-chat and daily caps skip moderators
    resend_cooldown_s: float = Field(default=60.0, ge=0.0, le=86_400.0)  # "Full resolution" per user; 0 = none
    max_running_per_user: int = Field(default=1, ge=1, le=16)
    lease_seconds: float = Field(default=120.0, ge=1.0, le=3600.0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    poll_interval_s: float = Field(default=1.0, ge=0.01, le=60.0)
    cancel_poll_s: float = Field(default=0.5, ge=0.05, le=60.0)
    delivery_retry_s: float = Field(default=30.0, ge=0.1, le=3600.0)
    delivery_attempts: int = Field(default=5, ge=1, le=100)


class RolesSettings(_Section):
    # "platform:user_id", e.g. "telegram:12345", "discord:998877", "console:local"
    moderators: tuple[str, ...] = ("console:local",)
    # "platform:role_id": members holding one of these roles are moderators, e.g. "discord:1234"
    moderator_roles: tuple[str, ...] = ()

    @field_validator("moderators", "moderator_roles")
    @classmethod
    def _platform_prefixed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if ":" not in m or not m.split(":", 1)[1]]
        if bad:
            raise ValueError(f"each moderator must look like 'platform:user_id', got {bad}")
        return value


class StorageSettings(_Section):
    database: Path = Path("data/bot.sqlite3")
    outputs: Path = Path("outputs")
    keep_days: float = Field(default=30.0, ge=0.0, le=36_500.0)  # finished boards and their rows; 0 = forever
    min_free_mb: int = Field(default=2048, ge=0, le=10_000_000)  # below this on the outputs disk no job starts


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"  # one line per event either way; json for log collectors


class ObservabilitySettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to let Prometheus scrape from elsewhere
    port: int = Field(default=9464, ge=0, le=65535)  # 0 = any free port
    worker_stale_s: float = Field(default=120.0, ge=1.0, le=3600.0)
    loop_lag_limit_s: float = Field(default=5.0, ge=0.1, le=600.0)
    db_timeout_s: float = Field(default=5.0, ge=0.1, le=120.0)


class EngineSection(RenderSettings):
    """``[engine]``: the renderer's settings, plus where the renderer runs (the bot's concern, not the engine's)."""

    backend: Literal["local", "arq"] = "local"  # local: this process's GPU; arq: GPU workers through Redis


class ArqSettings(_Section):
    """``[arq]``: the Redis queue between the bot host and the GPU workers (``engine.backend = "arq"``)."""

    # no password here: a URL with one belongs in the REDIS_URL environment variable, which wins over this
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = Field(default="aldar:render", min_length=1, pattern=r"^[A-Za-z0-9:_.-]+$")
    max_in_flight: int = Field(default=0, ge=0, le=256)  # jobs rendering at once; 0 = the number of live workers
    job_timeout_s: float = Field(default=900.0, ge=1.0, le=86_400.0)  # one board, on one worker, at most
    worker_lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)  # a dead worker's job is retried after this
    max_tries: int = Field(default=3, ge=1, le=20)  # runs of one job, counting retries after a worker died
    keep_result_s: float = Field(default=3600.0, ge=10.0, le=7 * 86_400.0)  # results wait this long in Redis
    max_result_mb: float = Field(default=64.0, gt=0.0, le=512.0)  # a board's files, encoded; larger is refused
    poll_interval_s: float = Field(default=0.2, ge=0.01, le=10.0)  # result polling (bot) and queue polling (worker)
    health_check_interval_s: float = Field(default=5.0, ge=0.5, le=3600.0)  # a worker counts as live this long
    shutdown_grace_s: float = Field(default=30.0, ge=0.0, le=3600.0)  # SIGTERM: the job in hand may finish
    connect_timeout_s: float = Field(default=2.0, ge=0.1, le=60.0)
    command_timeout_s: float = Field(default=10.0, ge=0.1, le=600.0)  # one Redis command, at most

    @field_validator("redis_url")
    @classmethod
    def _url_without_password(cls, value: str) -> str:
        if urlsplit(_check_redis_url(value)).password:
            raise ValueError("a Redis password belongs in the REDIS_URL environment variable, never in a file")
        return value


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs, errors and start-up lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url if "@" not in url else "<a URL that does not parse>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _check_redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


class ConsoleSettings(_Section):
    user_id: str = Field(default="local", min_length=1)
    language: Literal["en", "ru", "kk"] = "en"


class TelegramSettings(_Section):
    # a self-hosted Bot API server, or a test fake; env TELEGRAM_BASE_URL / TELEGRAM_BASE_FILE_URL override
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    edit_interval_s: float = Field(default=2.0, ge=0.0, le=60.0)
    poll_timeout_s: float = Field(default=10.0, ge=0.0, le=60.0)
    rate_limit_retries: int = Field(default=3, ge=0, le=10)
    overall_max_rate: float = Field(default=30.0, ge=0.0, le=1000.0)  # requests/s for the whole bot; 0 = no cap
    group_max_rate: float = Field(default=20.0, ge=0.0, le=1000.0)  # requests/min per group; 0 = no cap
    concurrent_updates: int = Field(default=32, ge=1, le=512)  # updates handled at once


class DiscordSettings(_Section):
    # a proxy or a test fake; env DISCORD_API_BASE / DISCORD_GATEWAY_URL override
    api_base: str = ""  # "" = discord.py's default, https://discord.com/api/v10
    gateway_url: str = ""  # "" = discord.py's default
    guild_ids: tuple[str, ...] = ()  # sync slash commands to these guilds (instant); () = globally
    edit_interval_s: float = Field(default=2.0, ge=0.0, le=60.0)
    interaction_lifetime_s: float = Field(default=840.0, ge=1.0, le=900.0)  # tokens last 15 min; keep a margin
    attachment_limit_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=500 * 1024 * 1024)
    guild_ready_timeout_s: float = Field(default=2.0, ge=0.0, le=60.0)  # discord.py's wait for guilds at start-up


class Secrets(BaseModel):
    """Secrets from the environment only. ``SecretStr`` keeps them out of reprs and logs."""

    model_config = ConfigDict(frozen=True)

    openai_api_key: SecretStr | None = None
    discord_token: SecretStr | None = None
    telegram_token: SecretStr | None = None
    redis_url: SecretStr | None = None  # the whole URL: it may carry the Redis password

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                _check_redis_url(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"REDIS_URL: {exc}") from None
        return value

    def openai_key(self) -> str | None:
        return self.openai_api_key.get_secret_value() if self.openai_api_key is not None else None

    def values(self) -> list[str]:
        """The raw secret values, for the log mask; never log or print these."""
        values = [s.get_secret_value() for s in (self.openai_api_key, self.discord_token, self.telegram_token)
                  if s is not None]
        password = urlsplit(self.redis_url.get_secret_value()).password if self.redis_url is not None else None
        return values + ([password] if password else [])

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets:
        return cls(**{field: env[var] for field, var in SECRET_ENV.items() if env.get(var, "").strip()})


class AppConfig(_Section):
    story: StorySettings = StorySettings()
    queue: QueueSettings = QueueSettings()
    roles: RolesSettings = RolesSettings()
    storage: StorageSettings = StorageSettings()
    logging: LoggingSettings = LoggingSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    console: ConsoleSettings = ConsoleSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    planner: PlannerSettings = PlannerSettings()
    prompt: PromptSettings = PromptSettings()
    engine: EngineSection = EngineSection()
    validation: ValidateSettings = ValidateSettings()
    grid: GridSettings = GridSettings()
    export: ExportSettings = ExportSettings()
    train: TrainSettings = TrainSettings()
    pick: PickSettings = PickSettings()
    arq: ArqSettings = ArqSettings()
    secrets: Secrets = Field(default=Secrets(), exclude=True)

    @field_validator("engine", mode="before")
    @classmethod
    def _render_settings_are_an_engine_section(cls, value: Any) -> Any:
        """``AppConfig(engine=RenderSettings(...))`` keeps working: the backend is then "local"."""
        if isinstance(value, RenderSettings) and not isinstance(value, EngineSection):
            return value.model_dump()
        return value

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            planner=self.planner,
            prompt=self.prompt,
            render=RenderSettings.model_validate(self.engine.model_dump(exclude={"backend"})),
            validation=self.validation,
            grid=self.grid,
            export=self.export,
        )


    def redis_url(self) -> str:
        """The Redis URL in use: ``REDIS_URL`` from the environment, else ``[arq] redis_url``."""
        secret = self.secrets.redis_url
        return secret.get_secret_value() if secret is not None else self.arq.redis_url


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Load, override from ``env`` and validate. Raises ``ConfigError`` with a readable message.

    ``path`` None means ``$ALDAR_CONFIG``, else ``./config.toml`` if present, else the defaults.
    Relative storage paths are resolved against the config file's folder.
    """
    env = dict(env if env is not None else {})
    path = _pick_path(path, env)
    raw = _read_toml(path) if path else {}
    _reject_secrets(raw, source=str(path))
    _apply_env_overrides(raw, env)
    _apply_named_env(raw, env)
    try:
        raw["secrets"] = Secrets.from_env(env)
        config = AppConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source=str(path or "defaults"))) from None
    return _resolve_paths(config, base=path.parent if path else Path.cwd())


def with_overrides(config: AppConfig, section: str, values: Mapping[str, Any]) -> AppConfig:
    """A copy of ``config`` with ``[section]`` keys replaced (CLI flags), validated like the file."""
    if not values:
        return config
    data = config.model_dump()
    data[section] = {**data[section], **values}
    data["secrets"] = config.secrets
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source="command line")) from None


def _pick_path(path: Path | None, env: Mapping[str, str]) -> Path | None:
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is None:
        default = Path("config.toml")
        return default.resolve() if default.is_file() else None
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path.resolve()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _reject_secrets(raw: Mapping[str, Any], source: str, prefix: str = "") -> None:
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _reject_secrets(value, source, prefix=f"{dotted}.")
        elif key.lower() in _SECRET_KEYS:
            names = ", ".join(SECRET_ENV.values())
            raise ConfigError(f"{source}: '{dotted}' looks like a secret; secrets come only from the environment ({names})")


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in var[len(ENV_PREFIX) :].split("__")]
        if len(path) < 2 or not all(path):
            raise ConfigError(f"environment variable {var}: expected {ENV_PREFIX}SECTION__KEY")
        _reject_secrets({path[-1]: text}, source=f"environment variable {var}")
        section = raw
        for part in path[:-1]:
            section = section.setdefault(part, {})
            if not isinstance(section, dict):
                raise ConfigError(f"environment variable {var}: '{part}' is not a section")
        section[path[-1]] = _parse_literal(text)


# Environment names fixed by the adapters' contracts (deployments and checks rely on them).
NAMED_ENV = {
    "TELEGRAM_BASE_URL": ("telegram", "base_url"),
    "TELEGRAM_BASE_FILE_URL": ("telegram", "base_file_url"),
    "DISCORD_API_BASE": ("discord", "api_base"),
    "DISCORD_GATEWAY_URL": ("discord", "gateway_url"),
}


def _apply_named_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in NAMED_ENV.items():
        if env.get(var, "").strip():
            raw.setdefault(section, {})[key] = env[var].strip()


def _parse_literal(text: str) -> Any:
    """Read an override as a TOML value (numbers, booleans, arrays); fall back to a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'{_known_keys_hint(error['loc'])}")
            continue
        allowed = _allowed_range(error["loc"])
        value = error.get("input")
        if isinstance(value, str):
            value = redacted_url(value)  # a refused URL may carry a password: never echo it
        lines.append(f"  {key} = {value!r}: {error['msg']}{allowed}")
    return "\n".join(lines)


def _field_at(loc: tuple) -> Any:
    model: Any = AppConfig
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    return info


def _known_keys_hint(loc: tuple) -> str:
    parent: Any = AppConfig
    for part in loc[:-1]:
        info = getattr(parent, "model_fields", {}).get(part)
        if info is None:
            return ""
        parent = info.annotation
    fields = getattr(parent, "model_fields", None)
    return f" (known keys: {', '.join(sorted(fields))})" if fields else ""


def _allowed_range(loc: tuple) -> str:
    info = _field_at(loc)
    if info is None:
        return ""
    low = high = step = None
    for item in info.metadata:
        if isinstance(item, (Ge, Gt)):
            low = getattr(item, "ge", None) if isinstance(item, Ge) else f">{item.gt}"
        elif isinstance(item, (Le, Lt)):
            high = getattr(item, "le", None) if isinstance(item, Le) else f"<{item.lt}"
        elif isinstance(item, MultipleOf):
            step = item.multiple_of
    if low is None and high is None:
        return ""
    text = f" (allowed range: {low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
    return text + (f", a multiple of {step})" if step else ")")


def _resolve_paths(config: AppConfig, base: Path) -> AppConfig:
    storage = config.storage
    resolved = storage.model_copy(
        update={
            "database": storage.database if storage.database.is_absolute() else base / storage.database,
            "outputs": storage.outputs if storage.outputs.is_absolute() else base / storage.outputs,
        }
    )
    return config.model_copy(update={"storage": resolved})
