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
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from bot.quotas import CapFigures, Caps, Refused, first_cap_broken
from bot.store.records import Delivery, Finished, FrameRow, Job, NewJob, QueuedEntry, Sighting, User, row_to
from bot.store.schema import MIGRATIONS, SCHEMA_VERSION, split_sql

log = logging.getLogger(__name__)


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
                for statement in split_sql(script):
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
        return row_to(cls, rows[0]) if rows else None

    async def _all(self, cls: type, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return [row_to(cls, row) for row in await self._run(sql, params)]

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
            refused = first_cap_broken(job.kind, job.renders, caps, figures)
            if refused is not None:
                return refused
            job_id = await self._scalar(
                """
                INSERT INTO jobs (user_id, platform, chat_id, language, kind, parent_id, redo_frame,
                                  story, mode, frames, seed, out_dir, created_at, source_ref, renders,
                                  character_image, lora, aspect)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                """,
                (
                    job.user_id, job.platform, job.chat_id, job.language, job.kind, job.parent_id,
                    job.redo_frame, job.story, job.mode, job.frames, job.seed, job.out_dir, now, job.source_ref,
                    job.renders, job.character_image, int(job.lora), job.aspect,
                ),
            )
            await self._run(
                "UPDATE users SET jobs_submitted = jobs_submitted + 1 WHERE id = ?", (job.user_id,)
            )
        return job_id

    async def _cap_figures(self, job: NewJob, caps: Caps) -> CapFigures:
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
        return CapFigures(*rows[0])

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

    async def named_pictures(self) -> set[str]:
        """Every character picture a job row still names (stored paths)."""
        rows = await self._run("SELECT DISTINCT character_image FROM jobs WHERE character_image IS NOT NULL")
        return {row[0] for row in rows}

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


def _params(params: Iterable[Any] | Mapping[str, Any]) -> tuple[Any, ...] | Mapping[str, Any]:
    """Named parameters stay a mapping; positional ones become a tuple."""
    return params if isinstance(params, Mapping) else tuple(params)
