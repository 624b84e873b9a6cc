"""Where each job's progress is shown: the adapter's acknowledgement, held in memory.

The adapter that acknowledged a job and the worker that reports on it run in one process, so the
reference goes from one to the other here, and accepting a ``/story`` costs no SQLite write for
it. The worker writes it to the job row with its next lease renewal, so a restart mid-job still
edits that message (one that restarts while the job is still queued posts a new one instead).
"""

from __future__ import annotations


class StatusRefs:
    def __init__(self) -> None:
        self._refs: dict[int, str] = {}

    def put(self, job_id: int, ref: str) -> None:
        self._refs[job_id] = ref

    def get(self, job_id: int) -> str | None:
        return self._refs.get(job_id)

    def forget(self, job_id: int) -> None:
        """The job's last message is out (or will never be): nothing edits it again."""
        self._refs.pop(job_id, None)
