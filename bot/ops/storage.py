"""What the bot keeps on disk, and for how long: each job's folder, the free-space floor and
the retention sweep (``[storage] keep_days``, ``min_free_mb``), which also removes the users'
character pictures (``bot.pictures``) once no job names them.

One place decides where a job's board lives (``job_folder``), so the worker that draws it,
the sweep that expires it and a moderator's ``/purge`` all reach the same folder. Only folders
under ``[storage] outputs`` are ever deleted: a board the CLI drew into a folder the user
named stays the user's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bot.config import StorageSettings
from bot.pictures import PICTURE_FOLDER
from bot.quotas import DAY_S
from bot.store.records import Job
from bot.store.store import Store

log = logging.getLogger(__name__)

MB = 2**20
PICTURE_GRACE_S = 3600.0
_JOB_FOLDER = re.compile(r"^job-(\d{6,})$")


def job_folder(outputs: Path, job: Job) -> Path:
    """Where a job's frames, grid and report.json are written."""
    return Path(job.out_dir) if job.out_dir else outputs / f"job-{job.id:06d}"


def owned_folder(outputs: Path, job: Job) -> Path | None:
    """The job's folder if the bot owns it (under ``outputs``), else None: never delete the user's."""
    folder = job_folder(outputs, job)
    return folder if folder.resolve().parent == outputs.resolve() else None


@dataclass(frozen=True)
class DiskSpace:
    """The free-space floor under which no job is claimed (a full disk would fail it half-way)."""

    outputs: Path
    min_free_mb: int

    @classmethod
    def of(cls, settings: StorageSettings) -> DiskSpace:
        return cls(settings.outputs, settings.min_free_mb)

    def free_mb(self) -> int:
        path = self.outputs
        while not path.exists() and path != path.parent:  # not made yet: the disk it will be on
            path = path.parent
        return shutil.disk_usage(path).free // MB

    def shortfall(self, free_mb: int | None = None) -> str | None:
        """None while there is room, else why not, for logs and /healthz (``free_mb``: already read)."""
        if not self.min_free_mb:
            return None
        free = self.free_mb() if free_mb is None else free_mb
        if free >= self.min_free_mb:
            return None
        return f"{free} MB free on the outputs disk, under [storage] min_free_mb = {self.min_free_mb}"


def remove_folder(folder: Path | None) -> None:
    """Delete a board's folder (on a worker thread: it can hold a dozen large files)."""
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder)


class Retention:
    """Deletes boards older than ``keep_days``: rows first, in one transaction, then the folders.
    A crash between the two leaves folders with no row; the sweep removes those once they are as
    old. A VACUUM after a sweep that removed rows, at most once a day, gives the space back."""

    def __init__(self, store: Store, settings: StorageSettings, *, batch: int = 500) -> None:
        self.store = store
        self.settings = settings
        self.batch = batch
        self._last_vacuum = float("-inf")

    async def sweep(self) -> int:
        """One pass; returns how many jobs were removed."""
        if not self.settings.keep_days:
            return 0
        cutoff = self.store.now() - self.settings.keep_days * DAY_S
        removed = 0
        while expired := await self.store.expired_jobs(before=cutoff, limit=self.batch):
            await self.store.delete_jobs([job.id for job in expired])
            for job in expired:
                await asyncio.to_thread(remove_folder, owned_folder(self.settings.outputs, job))
            removed += len(expired)
        users = await self.store.delete_idle_users(before=cutoff)
        orphans = await self._remove_orphans(cutoff)
        pictures = await self._remove_unnamed_pictures()
        if removed or users or orphans or pictures:
            log.info("retention: removed %d job(s), %d idle user(s) and %d stray folder(s) older than %g days, "
                     "and %d character picture(s) no job names", removed, users, orphans, self.settings.keep_days,
                     pictures)
            await self._vacuum_now_and_then()
        return removed

    async def _remove_orphans(self, cutoff: float) -> int:
        old = await asyncio.to_thread(_old_job_folders, self.settings.outputs, cutoff)
        known = await self.store.existing_job_ids(list(old))
        for job_id, folder in old.items():
            if job_id not in known:
                log.info("retention: removing %s, which no job row names any more", folder)
                await asyncio.to_thread(remove_folder, folder)
        return len(old.keys() - known)

    async def _remove_unnamed_pictures(self) -> int:
        """Character pictures no job names: their jobs expired or were purged, or the job was
        refused after the picture was stored. One younger than ``PICTURE_GRACE_S`` may belong to
        a /story being queued right now, so it stays until the next sweep."""
        named = await self.store.named_pictures()
        return await asyncio.to_thread(_remove_pictures, self.settings.outputs, named,
                                       self.store.now() - PICTURE_GRACE_S)

    async def _vacuum_now_and_then(self) -> None:
        if time.monotonic() - self._last_vacuum < DAY_S:
            return
        self._last_vacuum = time.monotonic()
        await self.store.vacuum()


def _remove_pictures(outputs: Path, named: set[str], cutoff: float) -> int:
    """Delete the stored pictures not in ``named`` last changed before ``cutoff``; how many."""
    folder = outputs / PICTURE_FOLDER
    if not folder.is_dir():
        return 0
    keep = {Path(path).resolve() for path in named}
    unnamed = [path for path in folder.glob("*.png") if path.resolve() not in keep and path.stat().st_mtime < cutoff]
    for path in unnamed:
        path.unlink(missing_ok=True)
    return len(unnamed)


def _old_job_folders(outputs: Path, cutoff: float) -> dict[int, Path]:
    """``job-NNNNNN`` folders under ``outputs`` last changed before ``cutoff``, by job id."""
    if not outputs.is_dir():
        return {}
    found = {}
    for folder in outputs.iterdir():
        match = _JOB_FOLDER.match(folder.name)
        if match and folder.is_dir() and folder.stat().st_mtime < cutoff:
            found[int(match.group(1))] = folder
    return found
