"""The round-robin order, replayed in Python: the tests' oracle for ``Store.claim`` and
``Store.queue_position``.

The user served least recently (never-served users first, then by oldest job) gets the next
job; after being served a user goes to the back. Tests check that the order it predicts is
the order ``claim`` really takes, and that ``queue_position`` (counts in SQL) agrees with it.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable

from bot.store.records import QueuedEntry


def round_robin_order(entries: Iterable[QueuedEntry]) -> list[int]:
    """Job ids in the order a single worker would claim them, given no new submissions."""
    jobs_by_user: dict[int, deque[int]] = defaultdict(deque)
    last_claimed: dict[int, float | None] = {}
    for entry in sorted(entries, key=lambda e: e.job_id):
        jobs_by_user[entry.user_id].append(entry.job_id)
        last_claimed[entry.user_id] = entry.user_last_claimed_at

    # Same sort key as the SQL: (served before?, when, oldest job id).
    heap = [
        (last_claimed[user] is not None, last_claimed[user] or 0.0, jobs[0], user)
        for user, jobs in jobs_by_user.items()
    ]
    heapq.heapify(heap)
    order: list[int] = []
    turn = 0
    while heap:
        _, _, _, user = heapq.heappop(heap)
        jobs = jobs_by_user[user]
        order.append(jobs.popleft())
        turn += 1
        if jobs:
            # Served "now": later than any real timestamp, in serving order.
            heapq.heappush(heap, (True, float("inf"), turn, user))
    return order
