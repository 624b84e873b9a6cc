"""A real ``redis-server`` and real ``python -m bot worker`` processes, for the scale-out tests and
``bench/scale_out.py``. Everything listens on loopback ports picked at run time."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """Debian's redis-server on a free loopback port, no persistence; stop and start it again at will."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {literal(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def scale_config(folder: Path, redis_url: str, *, frame_delay_s: float, name: str = "config.toml",
                 **sections: dict[str, Any]) -> Path:
    """A config.toml shared by the bot and its workers: arq backend, preview frames with a simulated
    GPU delay per frame, short leases and polls so failures show within seconds."""
    data: dict[str, dict[str, Any]] = {
        "storage": {"database": str(folder / "bot.sqlite3"), "outputs": str(folder / "outputs")},
        "engine": {"backend": "arq", "renderer": "preview", "width": 96, "height": 96,
                   "preview_delay_s": frame_delay_s},
        "arq": {"redis_url": redis_url, "worker_lease_s": 1.5, "health_check_interval_s": 1.0,
                "poll_interval_s": 0.05, "shutdown_grace_s": 0.0, "keep_result_s": 120.0,
                "connect_timeout_s": 0.5, "command_timeout_s": 5.0},
        "queue": {"poll_interval_s": 0.05, "cancel_poll_s": 0.05},
        "observability": {"enabled": False},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = folder / name
    path.write_text(toml_text(data), encoding="utf-8")
    return path


class WorkerProcess:
    """``python -m bot worker --name NAME`` as its own process, its output in a log file."""

    def __init__(self, name: str, config_path: Path, folder: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.config_path = config_path
        self.log_path = folder / f"worker-{name}.log"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the worker writes it while it runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(self.config_path), "worker", "--name", self.name],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no clean-up, no goodbye; its board is left half drawn."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Await ``predicate()`` (sync or async) until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
