"""What both ends of the Redis queue agree on: how to connect, and the names of the keys and
channels beside arq's own. The bot host (``arq_client``) and the GPU worker (``arq_worker``) both
import it; neither imports the other.
"""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import RedisError

from bot.config import ArqSettings
from bot.render import wire

REDIS_DOWN = (RedisError, OSError)  # connection refused/reset and timeouts included


def connect(settings: ArqSettings, url: str) -> ArqRedis:
    """A Redis client for arq with msgpack envelopes and bounded timeouts. Connects lazily: it
    never blocks or fails here, and reconnects by itself once Redis is back."""
    parsed = RedisSettings.from_dsn(url)
    return ArqRedis(
        host=parsed.host, port=parsed.port, db=parsed.database, username=parsed.username,
        password=parsed.password, ssl=parsed.ssl, unix_socket_path=parsed.unix_socket_path,
        socket_connect_timeout=settings.connect_timeout_s, socket_timeout=settings.command_timeout_s,
        job_serializer=wire.dumps, job_deserializer=wire.loads, default_queue_name=settings.queue_name,
    )


def health_key(settings: ArqSettings, worker_name: str) -> str:
    """Each worker's own arq health-check key; the bot counts live workers by them."""
    return f"{settings.queue_name}:health-check:{worker_name}"


def progress_channel(settings: ArqSettings, arq_job_id: str) -> str:
    return f"{settings.queue_name}:progress:{arq_job_id}"


async def live_workers(redis: ArqRedis, settings: ArqSettings) -> int:
    """Workers whose health-check key has not expired (each lasts ``health_check_interval_s`` + 1 s)."""
    count = 0
    async for _ in redis.scan_iter(match=health_key(settings, "*"), count=100):
        count += 1
    return count
