"""The SQLite schema: every migration, in order. A database is at version ``len(MIGRATIONS)``.

A migration is appended, never edited: a database made by an older release is brought up to
date by running the ones it has not seen (``Store._migrate``).
"""

from __future__ import annotations

import sqlite3

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
    # 5: the user's own character picture (a file under <outputs>/pictures) and whether the
    #    character LoRA draws the board (0: --no-lora), kept so regenerate and resume use them
    """
    ALTER TABLE jobs ADD COLUMN character_image TEXT;
    ALTER TABLE jobs ADD COLUMN lora INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX jobs_character_image ON jobs (character_image) WHERE character_image IS NOT NULL;
    """,
    # 6: the frames' shape (engine.limits.ASPECTS), kept so regenerate draws the board's shape again
    """
    ALTER TABLE jobs ADD COLUMN aspect TEXT NOT NULL DEFAULT '1:1';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def split_sql(script: str) -> list[str]:
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
