"""SQLite store (aiosqlite): users, jobs, frames and deliveries, plus the durable queue.

One connection, in autocommit mode; every write runs inside ``_write()``, which holds an
asyncio lock and a ``BEGIN IMMEDIATE`` transaction, so a read followed by a write never
races and never fails with "database is locked" half-way.

Queue semantics:
* a job row is written (``queued``) before the user hears about it;
* ``claim`` is one ``UPDATE … RETURNING`` that takes the next job round-robin over users
  (the user served least recently goes first) and stamps a lease;
* a ``running`` job whose lease expired (its worker died) is claimable again, until it has
  used ``max_attempts``;
* a finished job gets a ``deliveries`` row in the same transaction; it is marked ``sent``
  only after the chat accepted it, so an undelivered result is found again after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiosqlite

from bot.quotas import DAY_S, Caps, Refused

log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE users (
        id               INTEGER PRIMARY KEY,
        platform         TEXT NOT NULL,
        platform_user_id TEXT NOT NULL,
        display_name     TEXT NOT NULL DEFAULT '',
        locale           TEXT,
        first_seen       REAL NOT NULL,
        last_seen        REAL NOT NULL,
        last_claimed_at  REAL,
        jobs_submitted   INTEGER NOT NULL DEFAULT 0,
        boards_delivered INTEGER NOT NULL DEFAULT 0,
        refusals         INTEGER NOT NULL DEFAULT 0,
        banned           INTEGER NOT NULL DEFAULT 0,
        ban_reason       TEXT,
        UNIQUE (platform, platform_user_id)
    );
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY,
        user_id          INTEGER NOT NULL REFERENCES users(id),
        platform         TEXT NOT NULL,
        chat_id          TEXT NOT NULL,
        language         TEXT NOT NULL DEFAULT 'en',
        kind             TEXT NOT NULL CHECK (kind IN ('story', 'regen_board', 'regen_frame')),
        parent_id        INTEGER REFERENCES jobs(id),
        redo_frame       INTEGER,
        story            TEXT NOT NULL,
        mode             TEXT NOT NULL,
        frames           INTEGER,
        seed             INTEGER NOT NULL,
        out_dir          TEXT,
        status           TEXT NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts         INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_expires_at REAL,
        created_at       REAL NOT NULL,
        started_at       REAL,
        finished_at      REAL,
        title            TEXT,
        grid_path        TEXT,
        report_path      TEXT,
        error_type       TEXT,
        error_message    TEXT
    );
    CREATE INDEX jobs_status ON jobs(status, id);
    CREATE INDEX jobs_user_status ON jobs(user_id, status);
    CREATE TABLE frames (
        job_id    INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx       INTEGER NOT NULL,
        path      TEXT NOT NULL,
        seed      INTEGER NOT NULL,
        prompt    TEXT NOT NULL,
        attempts  INTEGER NOT NULL,
        identity  REAL,
        accepted  INTEGER NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE deliveries (
        id         INTEGER PRIMARY KEY,
        job_id     INTEGER NOT NULL UNIQUE REFERENCES jobs(id),
        platform   TEXT NOT NULL,
        chat_id    TEXT NOT NULL,
        status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL,
        sent_at    REAL
    );
    """,
    # 2: where a job's progress is shown (an adapter's own reference, e.g. "chat_id:message_id")
    """
    ALTER TABLE jobs ADD COLUMN status_ref TEXT;
    """,
    # 3: the chat message a job came from (a platform redelivers after a crash: one job, not two),
    #    and deliveries interrupted mid-send (the post may have gone out: counted, said, re-sent)
    """
    ALTER TABLE jobs ADD COLUMN source_ref TEXT;
    CREATE UNIQUE INDEX jobs_source_ref ON jobs (platform, source_ref) WHERE source_ref IS NOT NULL;
    ALTER TABLE deliveries ADD COLUMN sending_since REAL;
    ALTER TABLE deliveries ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: cost caps and queue positions in SQL. Triggers keep each user's queued count and oldest
    #    queued job on the users row, whatever changes a job's status, and queue_depths[d] = how
    #    many users have at least d jobs waiting; so a queue position is a few counts, not a replay
    #    of the whole queue. A user's count moves by one per job row changed (row triggers), which
    #    is why the depth trigger only ever needs to add the row for the new depth.
    """
    ALTER TABLE jobs ADD COLUMN renders INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN first_queued INTEGER;
    CREATE INDEX jobs_user_queued ON jobs (user_id, id) WHERE status = 'queued';
    CREATE INDEX jobs_chat_queued ON jobs (platform, chat_id) WHERE status = 'queued';
    CREATE INDEX jobs_user_created ON jobs (user_id, created_at);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX users_in_queue ON users (last_claimed_at, first_queued, queued) WHERE queued > 0;
    CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs WHEN NEW.status = 'queued' BEGIN
        UPDATE users SET queued = queued + 1, first_queued = COALESCE(MIN(first_queued, NEW.id), NEW.id)
        WHERE id = NEW.user_id;
    END;
    CREATE TRIGGER jobs_queued_update AFTER UPDATE OF status ON jobs
    WHEN (OLD.status = 'queued') <> (NEW.status = 'queued') BEGIN
        UPDATE users SET
            queued = (SELECT COUNT(*) FROM jobs WHERE user_id = NEW.user_id AND status = 'queued'),
            first_queued = (SELECT MIN(id) FROM jobs WHERE user_id = NEW.user_id AND status = 'queued')
        WHERE id = NEW.user_id;
    END;
    CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs WHEN OLD.status = 'queued' BEGIN
        UPDATE users SET
            queued = (SELECT COUNT(*) FROM jobs WHERE user_id = OLD.user_id AND status = 'queued'),
            first_queued = (SELECT MIN(id) FROM jobs WHERE user_id = OLD.user_id AND status = 'queued')
        WHERE id = OLD.user_id;
    END;
    UPDATE users SET
        queued = (SELECT COUNT(*) FROM jobs WHERE user_id = users.id AND status = 'queued'),
        first_queued = (SELECT MIN(id) FROM jobs WHERE user_id = users.id AND status = 'queued');
    CREATE TABLE queue_depths (depth INTEGER PRIMARY KEY, users INTEGER NOT NULL DEFAULT 0);
    WITH RECURSIVE d(depth) AS (SELECT 1 UNION ALL SELECT depth + 1 FROM d
                                WHERE depth < (SELECT MAX(queued) FROM users))
    INSERT INTO queue_depths (depth, users)
        SELECT depth, (SELECT COUNT(*) FROM users WHERE queued >= depth) FROM d WHERE EXISTS (SELECT 1 FROM users WHERE queued > 0);
    CREATE TRIGGER users_queue_depths AFTER UPDATE OF queued ON users WHEN NEW.queued <> OLD.queued BEGIN
        INSERT OR IGNORE INTO queue_depths (depth) SELECT NEW.queued WHERE NEW.queued > 0;
        UPDATE queue_depths SET users = users + 1 WHERE depth > OLD.queued AND depth <= NEW.queued;
        UPDATE queue_depths SET users = users - 1 WHERE depth > NEW.queued AND depth <= OLD.queued;
    END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class User:
    id: int
    platform: str
    platform_user_id: str
    display_name: str
    locale: str | None
    first_seen: float
    last_seen: float
    jobs_submitted: int
    boards_delivered: int
    refusals: int
    banned: bool
    ban_reason: str | None

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.platform_user_id}"

    @classmethod
    def unseen(cls, sighting: Sighting) -> User:
        """Someone with no row yet: id 0 (SQLite's ids start at 1) owns no job and counts nothing."""
        return cls(id=0, platform=sighting.platform, platform_user_id=sighting.platform_user_id,
                   display_name=sighting.display_name, locale=sighting.locale, first_seen=0.0, last_seen=0.0,
                   jobs_submitted=0, boards_delivered=0, refusals=0, banned=False, ban_reason=None)


@dataclass(frozen=True)
class Sighting:
    """Who sent a command, as the platform names them: written to ``users`` with the job it queues."""

    platform: str
    platform_user_id: str
    display_name: str = ""
    locale: str | None = None


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    platform: str
    chat_id: str
    language: str
    kind: str
    parent_id: int | None
    redo_frame: int | None
    story: str
    mode: str
    frames: int | None
    seed: int
    out_dir: str | None
    status: str
    cancel_requested: bool
    attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    title: str | None
    grid_path: str | None
    report_path: str | None
    error_type: str | None
    error_message: str | None
    status_ref: str | None = None
    source_ref: str | None = None


@dataclass(frozen=True)
class NewJob:
    user_id: int  # 0 when enqueue is given the requester's Sighting: it fills this in
    platform: str
    chat_id: str
    language: str
    kind: str
    story: str
    mode: str
    frames: int | None
    seed: int
    parent_id: int | None = None
    redo_frame: int | None = None
    out_dir: str | None = None
    source_ref: str | None = None  # the platform's id of the message that asked for it
    renders: int = 0  # the most SDXL renders it may cost (bot.quotas), for the daily caps


@dataclass(frozen=True)
class FrameRow:
    idx: int
    path: str
    seed: int
    prompt: str
    attempts: int
    identity: float | None
    accepted: bool


@dataclass(frozen=True)
class Delivery:
    id: int
    job_id: int
    platform: str
    chat_id: str
    status: str
    attempts: int
    sending_since: float | None = None
    interrupted: int = 0


@dataclass(frozen=True)
class Finished:
    """A stored result: its delivery, queued in the same transaction, and who gets mentioned."""

    delivery: Delivery
    owner_id: str  # the owner's platform user id


@dataclass(frozen=True)
class QueuedEntry:
    """A queued job as the round-robin order sees it."""

    job_id: int
    user_id: int
    user_last_claimed_at: float | None


def _row_to(cls: type, row: aiosqlite.Row) -> Any:
    data = dict(row)
    for name in ("banned", "cancel_requested", "accepted"):
        if name in data:
            data[name] = bool(data[name])
    return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class Store:
    def __init__(self, conn: aiosqlite.Connection, clock=time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = asyncio.Lock()
        self.write_error: str | None = None  # why the last write failed, until one succeeds

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000, clock=time.time) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        store = cls(conn, clock=clock)
        try:
            await store._configure(busy_timeout_ms)
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    def now(self) -> float:
        """The store's clock (tests give it a fake one), for windows compared with its timestamps."""
        return self._clock()

    async def _configure(self, busy_timeout_ms: int) -> None:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
            "PRAGMA foreign_keys=ON",
        ):
            await self._run(pragma)

    async def _migrate(self) -> None:
        async with self._write():
            version = await self._scalar("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database schema v{version} is newer than this code (v{SCHEMA_VERSION})")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("migrating database to schema v%d", number)
                for statement in _split_sql(script):
                    await self._run(statement)
                await self._run(f"PRAGMA user_version={number}")

    async def schema_version(self) -> int:
        return await self._scalar("PRAGMA user_version")

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """One IMMEDIATE transaction at a time. Cancellation-safe: aiosqlite runs statements in
        order on its own thread, so a BEGIN whose await was cancelled still runs, and the
        ROLLBACK queued after it closes it; the next BEGIN never finds a transaction open."""
        async with self._lock:
            try:
                await self._run("BEGIN IMMEDIATE")
                yield
                await self._run("COMMIT")
            except BaseException as exc:  # a failed COMMIT too: never leave the transaction open for the next writer
                if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full: /healthz says so
                    self.write_error = f"{type(exc).__name__}: {exc}"
                await asyncio.shield(self._rollback())
                raise
            self.write_error = None

    async def _rollback(self) -> None:
        try:
            await self._run("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):
                raise
            log.debug("nothing to roll back: the BEGIN had failed, or the COMMIT had gone through")

    async def _run(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[aiosqlite.Row]:
        """Run one statement to its end in a single call on the connection's thread and return its
        rows. No statement is left open across an await, a cancelled caller's included, so none can
        hold back a later COMMIT ("cannot commit transaction - SQL statements in progress")."""
        return list(await self._conn.execute_fetchall(sql, _params(params)))

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self._run(sql, params)
        return rows[0][0] if rows else None

    async def _one(self, cls: type, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self._run(sql, params)
        return _row_to(cls, rows[0]) if rows else None

    async def _all(self, cls: type, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return [_row_to(cls, row) for row in await self._run(sql, params)]

    # -- users -----------------------------------------------------------------------------
    async def touch_user(self, platform: str, platform_user_id: str, display_name: str, locale: str | None) -> User:
        """Create the user on first sight; refresh name, locale and last_seen after that."""
        async with self._write():
            await self._upsert_user(Sighting(platform, platform_user_id, display_name, locale))
        return await self.get_user(platform, platform_user_id)

    async def _upsert_user(self, sighting: Sighting) -> int:
        """Inside a write transaction: the user's row made or refreshed; returns its id."""
        now = self._clock()
        return await self._scalar(
            """
            INSERT INTO users (platform, platform_user_id, display_name, locale, first_seen, last_seen)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (platform, platform_user_id) DO UPDATE SET
                display_name = excluded.display_name,
                locale = COALESCE(excluded.locale, users.locale),
                last_seen = excluded.last_seen
            RETURNING id
            """,
            (sighting.platform, sighting.platform_user_id, sighting.display_name, sighting.locale, now, now),
        )

    async def get_user(self, platform: str, platform_user_id: str) -> User | None:
        return await self._one(
            User, "SELECT * FROM users WHERE platform = ? AND platform_user_id = ?", (platform, platform_user_id)
        )

    async def user_by_id(self, user_id: int) -> User | None:
        return await self._one(User, "SELECT * FROM users WHERE id = ?", (user_id,))

    async def count_refusal(self, user: int | Sighting) -> None:
        """One more refused story for this user (a Sighting: made first if they are new)."""
        async with self._write():
            user_id = await self._upsert_user(user) if isinstance(user, Sighting) else user
            await self._run("UPDATE users SET refusals = refusals + 1 WHERE id = ?", (user_id,))

    async def set_banned(self, user_id: int, banned: bool, reason: str | None) -> int:
        """Ban or unban; a ban also cancels the user's queued jobs. Returns how many were cancelled."""
        now = self._clock()
        async with self._write():
            await self._run(
                "UPDATE users SET banned = ?, ban_reason = ? WHERE id = ?", (int(banned), reason if banned else None, user_id)
            )
            if not banned:
                return 0
            cancelled = await self._run(
                """UPDATE jobs SET status = 'cancelled', finished_at = ?, error_type = 'Banned',
                   error_message = 'user was banned' WHERE user_id = ? AND status = 'queued' RETURNING id""",
                (now, user_id),
            )
            await self._run(
                "UPDATE jobs SET cancel_requested = 1 WHERE user_id = ? AND status = 'running'", (user_id,)
            )
            return len(cancelled)

    # -- jobs --------------------------------------------------------------------------------
    async def enqueue(self, job: NewJob, *, caps: Caps, sighting: Sighting | None = None) -> int | Refused:
        """Write the job as ``queued`` unless a cap says no.

        Returns the new job id, or the cap that refused it. Check and insert share one
        IMMEDIATE transaction, so two quick submits cannot both squeeze in. A job whose
        ``source_ref`` is already known (the same chat message, redelivered after a crash) is
        not written twice: the existing job's id comes back. With ``sighting`` the requester's
        user row is made or refreshed in that same transaction and owns the job (a /story
        costs one write transaction); without it, ``job.user_id`` names an existing user.
        """
        now = self._clock()
        async with self._write():
            if sighting is not None:
                job = replace(job, user_id=await self._upsert_user(sighting))
            figures = await self._cap_figures(job, caps)  # one statement: the write lock is held briefly
            if figures.existing is not None:
                return figures.existing
            refused = _first_cap_broken(job, caps, figures)
            if refused is not None:
                return refused
            job_id = await self._scalar(
                """
                INSERT INTO jobs (user_id, platform, chat_id, language, kind, parent_id, redo_frame,
                                  story, mode, frames, seed, out_dir, created_at, source_ref, renders)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                """,
                (
                    job.user_id, job.platform, job.chat_id, job.language, job.kind, job.parent_id,
                    job.redo_frame, job.story, job.mode, job.frames, job.seed, job.out_dir, now, job.source_ref,
                    job.renders,
                ),
            )
            await self._run(
                "UPDATE users SET jobs_submitted = jobs_submitted + 1 WHERE id = ?", (job.user_id,)
            )
        return job_id

    async def _cap_figures(self, job: NewJob, caps: Caps) -> _CapFigures:
        """Everything the caps are judged on, read in one statement. No count walks the whole queue:
        the per-chat count stops at its cap, the daily one reads the cap-th newest job only."""
        rows = await self._run(
            """
            SELECT
              (SELECT id FROM jobs WHERE platform = :platform AND source_ref = :source_ref),
              (SELECT COALESCE(SUM(users), 0) FROM queue_depths),
              COALESCE((SELECT queued FROM users WHERE id = :user), 0),
              CASE WHEN :chat_cap IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM (
                  SELECT 1 FROM jobs WHERE platform = :platform AND chat_id = :chat AND status = 'queued'
                  LIMIT :chat_cap)) END,
              CASE WHEN :day_cap IS NULL THEN NULL ELSE (
                  SELECT created_at FROM jobs WHERE user_id = :user AND created_at > :since
                  ORDER BY created_at DESC LIMIT 1 OFFSET :day_cap - 1) END,
              CASE WHEN :regen_cap IS NULL OR :kind = 'story' THEN 0 ELSE (
                  SELECT COALESCE(SUM(renders), 0) FROM jobs
                  WHERE user_id = :user AND created_at > :since AND kind <> 'story') END
            """,
            {"platform": job.platform, "source_ref": job.source_ref, "user": job.user_id, "chat": job.chat_id,
             "chat_cap": caps.queued_per_chat, "day_cap": caps.jobs_per_day, "since": caps.since,
             "regen_cap": caps.regen_renders_per_day, "kind": job.kind},
        )
        return _CapFigures(*rows[0])

    async def get_job(self, job_id: int) -> Job | None:
        return await self._one(Job, "SELECT * FROM jobs WHERE id = ?", (job_id,))

    async def latest_job(self, user_id: int) -> Job | None:
        return await self._one(Job, "SELECT * FROM jobs WHERE user_id = ? ORDER BY id DESC LIMIT 1", (user_id,))

    async def count_jobs(self, *, status: str | None = None) -> int:
        if status is None:
            return await self._scalar("SELECT COUNT(*) FROM jobs")
        return await self._scalar("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))

    async def count_by_status(self) -> dict[str, int]:
        return {row[0]: row[1] for row in await self._run("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

    async def check_readable(self) -> None:
        """Read through the jobs index (raises if the database cannot be read). Never writes: an
        unauthenticated /healthz must not queue up behind, or hold back, the bot's own writes."""
        await self._scalar("SELECT COUNT(*) FROM jobs WHERE status = 'running'")

    async def count_user_jobs(self, user_id: int, status: str) -> int:
        return await self._scalar("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status = ?", (user_id, status))

    async def count_queued(self) -> int:
        """Jobs waiting, all users: the sum over depths of the users that deep is the sum of their counts."""
        return await self._scalar("SELECT COALESCE(SUM(users), 0) FROM queue_depths")

    async def count_user_jobs_since(self, user_id: int, since: float) -> int:
        """Jobs the user submitted after ``since`` (the daily cap's window; the same test as enqueue's)."""
        return await self._scalar("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND created_at > ?", (user_id, since))

    async def claim(self, worker_id: str, *, lease_seconds: float, max_running_per_user: int, max_attempts: int) -> Job | None:
        """Atomically take the next job, round-robin over users, and lease it to ``worker_id``.

        Jobs whose worker died (lease expired) come first, then the least recently served
        user's oldest queued job. An idle poll only reads: the write transaction is opened
        when there is a job to take.
        """
        now = self._clock()
        if not await self._scalar(
                """SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued'
                                  OR (status = 'running' AND lease_expires_at < ? AND attempts < ?))""",
                (now, max_attempts)):
            return None
        async with self._write():
            job = await self._one(
                Job,
                """
                UPDATE jobs SET status = 'running', lease_owner = :worker, lease_expires_at = :expires,
                                started_at = COALESCE(started_at, :now), attempts = attempts + 1
                WHERE id = (
                    SELECT j.id FROM jobs j JOIN users u ON u.id = j.user_id
                    WHERE (j.status = 'queued'
                           OR (j.status = 'running' AND j.lease_expires_at < :now AND j.attempts < :max_attempts))
                      AND (SELECT COUNT(*) FROM jobs r
                           WHERE r.user_id = j.user_id AND r.status = 'running' AND r.lease_expires_at >= :now)
                          < :max_running
                    ORDER BY j.status = 'running' DESC, u.last_claimed_at IS NOT NULL, u.last_claimed_at, j.id
                    LIMIT 1)
                RETURNING *
                """,
                {
                    "worker": worker_id,
                    "expires": now + lease_seconds,
                    "now": now,
                    "max_attempts": max_attempts,
                    "max_running": max_running_per_user,
                },
            )
            if job is not None:
                await self._run("UPDATE users SET last_claimed_at = ? WHERE id = ?", (now, job.user_id))
        return job

    async def fail_exhausted(self, *, max_attempts: int) -> list[Job]:
        """Give up on jobs whose lease expired after ``max_attempts`` tries (a job that kills workers).
        Read first: the write transaction is opened only when there is one."""
        now = self._clock()
        if not await self._scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at < ? AND attempts >= ?)",
                (now, max_attempts)):
            return []
        async with self._write():
            return await self._all(
                Job,
                """
                UPDATE jobs SET status = 'failed', finished_at = :now, error_type = 'AttemptsExhausted',
                       error_message = 'the worker stopped during this job ' || attempts || ' times',
                       lease_owner = NULL, lease_expires_at = NULL
                WHERE status = 'running' AND lease_expires_at < :now AND attempts >= :max_attempts
                RETURNING *
                """,
                {"now": now, "max_attempts": max_attempts},
            )

    async def renew_lease(self, job_id: int, worker_id: str, lease_seconds: float, *,
                          status_ref: str | None = None) -> Job | None:
        """Extend the lease, and record where the job's progress is shown when that is known;
        returns the job (for its cancel flag), or None if the lease was lost."""
        now = self._clock()
        async with self._write():
            return await self._one(
                Job,
                """UPDATE jobs SET lease_expires_at = ?, status_ref = COALESCE(?, status_ref)
                   WHERE id = ? AND status = 'running' AND lease_owner = ?
                   RETURNING *""",
                (now + lease_seconds, status_ref, job_id, worker_id),
            )

    async def release(self, job_id: int, worker_id: str) -> bool:
        """Put a running job back in the queue (graceful shutdown); its checkpoints are kept."""
        async with self._write():
            released = await self._run(
                """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL
                   WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING id""",
                (job_id, worker_id),
            )
        return len(released) == 1

    async def outstanding(self, platform: str) -> int:
        """Jobs still queued or running, plus results not yet delivered, for one platform."""
        return await self._scalar(
            """SELECT (SELECT COUNT(*) FROM jobs WHERE platform = :p AND status IN ('queued', 'running'))
                    + (SELECT COUNT(*) FROM deliveries WHERE platform = :p AND status = 'pending')""",
            {"p": platform},
        )

    async def clear_status_ref(self, job_id: int) -> None:
        """After a job's last message: its status message (and any interaction token) is not needed."""
        async with self._write():
            await self._run("UPDATE jobs SET status_ref = NULL WHERE id = ?", (job_id,))

    async def active_jobs(self) -> list[Job]:
        """Queued and running jobs, oldest first (the moderators' /queue)."""
        return await self._all(Job, "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY id")

    async def queued_entries(self) -> list[QueuedEntry]:
        return await self._all(
            QueuedEntry,
            """SELECT j.id AS job_id, j.user_id, u.last_claimed_at AS user_last_claimed_at
               FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.status = 'queued' ORDER BY j.id""",
        )

    async def queue_position(self, job_id: int) -> int | None:
        """Where a queued job stands in the round-robin order ``claim`` takes (1 = next), or None.

        Round r serves each user's r-th queued job, users in claim order (never served first, then
        least recently served, then oldest job). So the jobs ahead of a user's k-th job are every
        user's first k-1 jobs (the sum of queue_depths below k), plus the k-th jobs of the users
        ahead in that order: a count over the ``users_in_queue`` index, which holds only users with
        jobs waiting (each query says ``queued > 0`` so SQLite knows it may use that partial index).
        """
        rows = await self._run(
            """SELECT j.user_id, u.last_claimed_at, u.first_queued,
                      (SELECT COUNT(*) FROM jobs m WHERE m.user_id = j.user_id AND m.status = 'queued'
                       AND m.id <= j.id) AS k
               FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id = ? AND j.status = 'queued'""",
            (job_id,))
        if not rows:
            return None
        _, served_at, first, k = rows[0]
        earlier_rounds = await self._scalar(
            "SELECT COALESCE(SUM(users), 0) FROM queue_depths WHERE depth < ?", (k,))
        if served_at is None:
            ahead = await self._scalar(
                """SELECT COUNT(*) FROM users WHERE queued > 0 AND queued >= ? AND last_claimed_at IS NULL
                   AND first_queued < ?""", (k, first))
        else:
            ahead = await self._scalar(
                """SELECT (SELECT COUNT(*) FROM users WHERE queued > 0 AND queued >= :k AND last_claimed_at IS NULL)
                        + (SELECT COUNT(*) FROM users WHERE queued > 0 AND queued >= :k
                           AND (last_claimed_at, first_queued) < (:at, :first))""",
                {"k": k, "at": served_at, "first": first})
        return earlier_rounds + ahead + 1

    async def request_cancel(self, job_id: int) -> Job | None:
        """Cancel a queued job at once; flag a running one for the worker. Returns the updated job."""
        now = self._clock()
        async with self._write():
            job = await self._one(
                Job,
                """UPDATE jobs SET status = 'cancelled', finished_at = ?, error_type = 'Cancelled',
                   error_message = 'cancelled before it started' WHERE id = ? AND status = 'queued' RETURNING *""",
                (now, job_id),
            )
            if job is None:
                job = await self._one(
                    Job, "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running' RETURNING *", (job_id,)
                )
        return job

    async def finish(self, job_id: int, worker_id: str, *, title: str, grid_path: str, report_path: str,
                     frames: list[FrameRow]) -> Finished | None:
        """Store the result and queue its delivery, in one transaction. None if the lease was lost."""
        now = self._clock()
        async with self._write():
            job = await self._one(
                Job,
                """UPDATE jobs SET status = 'done', finished_at = ?, title = ?, grid_path = ?, report_path = ?,
                          lease_owner = NULL, lease_expires_at = NULL
                   WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING *""",
                (now, title, grid_path, report_path, job_id, worker_id),
            )
            if job is None:
                return None
            await self._conn.executemany(
                """INSERT OR REPLACE INTO frames (job_id, idx, path, seed, prompt, attempts, identity, accepted)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [(job_id, f.idx, f.path, f.seed, f.prompt, f.attempts, f.identity, int(f.accepted)) for f in frames],
            )
            delivery = await self._one(
                Delivery,
                """INSERT INTO deliveries (job_id, platform, chat_id, created_at) VALUES (?, ?, ?, ?)
                   RETURNING id, job_id, platform, chat_id, status, attempts, sending_since, interrupted""",
                (job_id, job.platform, job.chat_id, now),
            )
            owner = await self._scalar("SELECT platform_user_id FROM users WHERE id = ?", (job.user_id,))
        return Finished(delivery, owner or "")

    async def fail(self, job_id: int, worker_id: str, *, status: str, error_type: str, error_message: str) -> bool:
        """End a running job as ``failed`` or ``cancelled`` with its error recorded on the row."""
        if status not in ("failed", "cancelled"):
            raise ValueError(f"status must be failed or cancelled, got {status!r}")
        now = self._clock()
        async with self._write():
            ended = await self._run(
                """UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ?,
                          lease_owner = NULL, lease_expires_at = NULL
                   WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING id""",
                (status, now, error_type, error_message[:2000], job_id, worker_id),
            )
        return len(ended) == 1

    async def frames(self, job_id: int) -> list[FrameRow]:
        return await self._all(FrameRow, "SELECT * FROM frames WHERE job_id = ? ORDER BY idx", (job_id,))

    # -- retention -----------------------------------------------------------------------------
    async def expired_jobs(self, *, before: float, limit: int) -> list[Job]:
        """Finished jobs older than ``before`` that nothing waits on: no pending post, no queued or
        running regeneration of them."""
        return await self._all(
            Job,
            """SELECT * FROM jobs j WHERE j.finished_at < ? AND j.status IN ('done', 'failed', 'cancelled')
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id AND d.status = 'pending')
                 AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.status IN ('queued', 'running'))
               ORDER BY j.finished_at LIMIT ?""",
            (before, limit))

    async def delete_jobs(self, job_ids: list[int]) -> int:
        """Remove jobs with their frames and deliveries; regenerations of them keep their own rows."""
        if not job_ids:
            return 0
        marks = ",".join("?" * len(job_ids))
        async with self._write():
            await self._run(f"UPDATE jobs SET parent_id = NULL WHERE parent_id IN ({marks})", job_ids)
            await self._run(f"DELETE FROM deliveries WHERE job_id IN ({marks})", job_ids)
            await self._run(f"DELETE FROM frames WHERE job_id IN ({marks})", job_ids)
            return len(await self._run(f"DELETE FROM jobs WHERE id IN ({marks}) RETURNING id", job_ids))

    async def delete_idle_users(self, *, before: float) -> int:
        """Users with no jobs left who were last seen before ``before``; a banned user is kept (the ban
        must outlive the rows)."""
        async with self._write():
            return len(await self._run(
                """DELETE FROM users WHERE last_seen < ? AND banned = 0
                     AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.user_id = users.id) RETURNING id""",
                (before,)))

    async def existing_job_ids(self, job_ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(job_ids), 500):  # SQLite caps the parameters of one statement
            chunk = job_ids[start:start + 500]
            rows = await self._run(f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            found.update(row[0] for row in rows)
        return found

    async def vacuum(self) -> None:
        """Give deleted pages back to the disk. VACUUM cannot run in a transaction: the write lock
        alone keeps other writers out meanwhile."""
        async with self._lock:
            await self._run("VACUUM")

    # -- deliveries ----------------------------------------------------------------------------
    async def pending_deliveries(self) -> list[Delivery]:
        return await self._all(Delivery, "SELECT * FROM deliveries WHERE status = 'pending' ORDER BY id")

    async def delivery_for(self, job_id: int) -> Delivery | None:
        return await self._one(Delivery, "SELECT * FROM deliveries WHERE job_id = ?", (job_id,))

    async def mark_sending(self, delivery_id: int) -> bool:
        """Take the post, just before it is sent: False when it is already sent or being sent. If the
        process dies now, the mark stays, and the next start knows the post may be out."""
        async with self._write():
            taken = await self._run(
                """UPDATE deliveries SET sending_since = ?
                   WHERE id = ? AND status = 'pending' AND sending_since IS NULL RETURNING id""",
                (self._clock(), delivery_id))
        return len(taken) == 1

    async def mark_interrupted(self, delivery_id: int) -> None:
        """A pending delivery found mid-send at start-up: count it and clear the mark before the re-send."""
        async with self._write():
            await self._run(
                """UPDATE deliveries SET interrupted = interrupted + 1, sending_since = NULL
                   WHERE id = ? AND status = 'pending' AND sending_since IS NOT NULL""", (delivery_id,))

    async def mark_delivered(self, delivery_id: int) -> None:
        now = self._clock()
        async with self._write():
            job_id = await self._scalar(
                """UPDATE deliveries SET status = 'sent', sent_at = ?, attempts = attempts + 1, sending_since = NULL
                   WHERE id = ? AND status = 'pending' RETURNING job_id""",
                (now, delivery_id),
            )
            if job_id is not None:
                await self._run(
                    """UPDATE users SET boards_delivered = boards_delivered + 1
                       WHERE id = (SELECT user_id FROM jobs WHERE id = ?)""",
                    (job_id,),
                )
                # a Discord interaction token is a credential for 15 minutes: not kept past its use
                await self._run("UPDATE jobs SET status_ref = NULL WHERE id = ?", (job_id,))

    async def record_delivery_error(self, delivery_id: int, error: str, *, give_up_after: int) -> bool:
        """Count a failed post; True when that was the last try (the delivery is marked failed)."""
        async with self._write():
            await self._run(
                """UPDATE deliveries SET attempts = attempts + 1, last_error = ?, sending_since = NULL,
                          status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END
                   WHERE id = ? AND status = 'pending'""",
                (error[:2000], give_up_after, delivery_id),
            )
            gave_up = await self._run(  # given up: nothing will edit the status message again
                """UPDATE jobs SET status_ref = NULL
                   WHERE id = (SELECT job_id FROM deliveries WHERE id = ? AND status = 'failed') RETURNING id""",
                (delivery_id,))
        return bool(gave_up)


@dataclass(frozen=True)
class _CapFigures:
    existing: int | None  # a job already made from the same chat message
    queued_total: int
    queued_by_user: int
    queued_in_chat: int  # counted up to the per-chat cap
    cap_th_newest_today: float | None  # when the user's cap-th newest job in the rolling day was made
    regen_renders_today: int


def _first_cap_broken(job: NewJob, caps: Caps, figures: _CapFigures) -> Refused | None:
    """The first cap this job would break, in the order the replies are ranked."""
    if figures.queued_total >= caps.queued_total:
        return Refused("queued_total", caps.queued_total)
    if caps.queued_per_user is not None and figures.queued_by_user >= caps.queued_per_user:
        return Refused("queued_per_user", caps.queued_per_user)
    if caps.queued_per_chat is not None and figures.queued_in_chat >= caps.queued_per_chat:
        return Refused("queued_per_chat", caps.queued_per_chat)
    if caps.jobs_per_day is not None and figures.cap_th_newest_today is not None:
        # a slot frees when that job leaves the rolling day
        return Refused("jobs_per_day", caps.jobs_per_day, retry_at=figures.cap_th_newest_today + DAY_S)
    used = figures.regen_renders_today
    if caps.regen_renders_per_day is not None and job.kind != "story" and used + job.renders > caps.regen_renders_per_day:
        return Refused("regen_renders_per_day", caps.regen_renders_per_day, used=used, cost=job.renders)
    return None


def _params(params: Iterable[Any] | Mapping[str, Any]) -> tuple[Any, ...] | Mapping[str, Any]:
    """Named parameters stay a mapping; positional ones become a tuple."""
    return params if isinstance(params, Mapping) else tuple(params)


def _split_sql(script: str) -> list[str]:
    """The statements of a migration; a trigger's body holds ";" of its own, so split where SQLite
    says a statement is complete."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \n;"):
        raise ValueError(f"incomplete SQL statement in a migration: {current.strip()[:80]}")
    return statements
