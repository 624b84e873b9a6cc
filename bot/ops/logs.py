"""Logging for the whole process: one line per event, the job id on every line logged while a
job is in hand, and no secret ever written.

- ``job_context(job_id)`` marks the current job (a contextvar: it follows the job's tasks, and
  the worker copies it onto the engine thread), and every record carries ``job_id``.
- ``text`` format: ``time LEVEL logger [job=12] message``; a traceback is folded onto the same
  line. ``json`` format: one object per line with ts, level, logger, job_id, msg and exc.
- ``SecretMask`` is applied to the finished line, so a token is masked wherever it hides: in
  the message, its arguments, an exception's text, or a URL a library echoes
  (``https://api.telegram.org/bot<TOKEN>/getMe``). httpx's per-request INFO lines are turned
  down to WARNING: they are noise, and they carry that URL.
- ``configure_logging`` returns its mask, for the CLI's own output (``bot/__main__.py``), and
  ``log_uncaught`` sends the tracebacks Python would print itself, and warnings, into the log:
  a library's error text can name a token (python-telegram-bot's ``InvalidToken`` does), so no
  line leaves the process unmasked.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TextIO

MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words
_job_id: contextvars.ContextVar[int | str | None] = contextvars.ContextVar("job_id", default=None)
_CHATTY = ("httpx", "httpcore", "aiohttp.access", "fontTools")  # fontTools: a line per glyph table of each PDF


@contextlib.contextmanager
def job_context(job_id: int | str) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class SecretMask:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, MASK)
        return line


class _JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, mask: SecretMask) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job = f" [job={job_id}]" if job_id is not None else ""
        return self.mask(super().format(record).replace("\n", " | "))


class JsonFormatter(logging.Formatter):
    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "job_id": getattr(record, "job_id", None), "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.mask(json.dumps(entry, ensure_ascii=False))


def configure_logging(level: str, fmt: str, secrets: Iterable[str], *, stream: TextIO | None = None) -> SecretMask:
    """Replace the root handlers with one masked, one-line-per-event handler on ``stream`` (stderr).
    Returns the mask, so that the CLI prints through the very one the log uses."""
    mask = SecretMask(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(mask) if fmt == "json" else TextFormatter(mask))
    handler.addFilter(_JobFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return mask


def log_uncaught() -> None:
    """Uncaught exceptions (main thread and other threads) and warnings go into the log, masked,
    instead of Python's own unmasked print to stderr. For ``main`` only: it changes the process."""
    logger = logging.getLogger("bot")

    def main_hook(kind: type[BaseException], exc: BaseException, tb) -> None:
        logger.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # as Python's own hook: a thread's sys.exit() is silent
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.critical("uncaught %s in thread %s", args.exc_type.__name__, name,
                        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
    logging.captureWarnings(True)
