"""Prometheus metrics for the bot: what an operator watches on a dashboard.

One ``Metrics`` object per process owns its own registry (tests build many). The worker
reports each finished board (stage durations, re-rolls and identity per frame, model loads),
each job's outcome and each delivery; the queue depth by status is read from SQLite at
scrape time, so it is always the truth rather than a counter that can drift.

    aldar_queue_jobs{status}                 gauge      jobs in SQLite by status
    aldar_jobs_total{platform,outcome}       counter    done | failed | cancelled
    aldar_stage_seconds{stage}               histogram  plan, render (per frame), validate (per frame), deliver
    aldar_frame_retries                      histogram  re-rolls per frame
    aldar_identity_score                     histogram  identity of each kept frame
    aldar_model_loads_total                  counter    model loads (start-up and any during boards)
    aldar_engine_errors_total{type}          counter    failed jobs by exception type
    aldar_deliveries_interrupted_total       counter    posts cut off by a crash and sent again
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.store.schema import JOB_STATUSES

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
IDENTITY_BUCKETS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
RETRY_BUCKETS = (0, 1, 2, 3, 4, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.queue_jobs = Gauge("aldar_queue_jobs", "Jobs in the database by status", ["status"], registry=registry)
        self.jobs = Counter("aldar_jobs", "Jobs ended, by platform and outcome", ["platform", "outcome"],
                            registry=registry)
        self.stage_seconds = Histogram("aldar_stage_seconds", "Time per stage: plan and deliver per job, render "
                                       "and validate per frame drawn", ["stage"], buckets=STAGE_BUCKETS,
                                       registry=registry)
        self.frame_retries = Histogram("aldar_frame_retries", "Re-rolls per frame", buckets=RETRY_BUCKETS,
                                       registry=registry)
        self.identity = Histogram("aldar_identity_score", "Identity score of each kept frame",
                                  buckets=IDENTITY_BUCKETS, registry=registry)
        self.model_loads = Counter("aldar_model_loads", "Model loads", registry=registry)
        self.engine_errors = Counter("aldar_engine_errors", "Failed jobs by error type", ["type"], registry=registry)
        self.interrupted = Counter("aldar_deliveries_interrupted", "Deliveries cut off mid-send by a crash and "
                                   "posted again (the chat may show them twice)", registry=registry)
        self.in_flight = Gauge("aldar_jobs_in_flight", "Jobs being drawn now", registry=registry)
        self.engine_slots = Gauge("aldar_engine_slots", "Jobs the engine may draw at once now (arq: live workers "
                                  "or max_in_flight); 0 while it is unreachable", registry=registry)
        for status in JOB_STATUSES:
            self.queue_jobs.labels(status=status).set(0)

    # -- what the worker reports -------------------------------------------------------------
    def started(self, model_loads: int) -> None:
        """The engine's start-up loads (0 for the preview renderer)."""
        self.model_loads.inc(model_loads)

    def board_done(self, report: Mapping) -> None:
        """Stage durations, re-rolls and identity from a board's report.json."""
        timings = report.get("timings", {})
        frames = report.get("frames", [])
        drawn = sum(len(frame.get("attempts", [])) for frame in frames if not frame.get("reused"))
        if "plan" in timings:
            self.stage_seconds.labels(stage="plan").observe(timings["plan"])
        for stage in ("render", "validate"):
            if drawn and stage in timings:
                per_frame = timings[stage] / drawn
                for _ in range(drawn):
                    self.stage_seconds.labels(stage=stage).observe(per_frame)
        for frame in frames:
            if frame.get("reused"):
                continue
            attempts = frame.get("attempts", [])
            self.frame_retries.observe(max(0, len(attempts) - 1))
            chosen = attempts[frame.get("chosen_attempt", 0)] if attempts else {}
            identity = chosen.get("scores", {}).get("identity")
            if identity is not None:
                self.identity.observe(identity)
        self.model_loads.inc(timings.get("model_loads", 0) or 0)

    def job_ended(self, platform: str, outcome: str, error_type: str | None = None) -> None:
        self.jobs.labels(platform=platform, outcome=outcome).inc()
        if outcome == "failed" and error_type:
            self.engine_errors.labels(type=error_type).inc()

    def delivery_interrupted(self) -> None:
        self.interrupted.inc()

    def delivered(self, seconds: float) -> None:
        self.stage_seconds.labels(stage="deliver").observe(seconds)

    # -- scrape ---------------------------------------------------------------------------------
    def set_queue(self, counts: Mapping[str, int]) -> None:
        for status in set(JOB_STATUSES) | set(counts):
            self.queue_jobs.labels(status=status).set(counts.get(status, 0))

    def set_engine(self, in_flight: int, slots: int) -> None:
        self.in_flight.set(in_flight)
        self.engine_slots.set(slots)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

