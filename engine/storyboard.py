"""StoryEngine: story in, storyboard out. The one entry point of the engine.

``StoryEngine.run`` works in numbered stages, each a method:

1. check inputs
2. plan
3. prompts
4. render each frame, validating it (5.) and re-rolling a failing frame with a new seed
6. grid
7. report

Everything it produces lands in one output folder: ``frame_01.png`` …, ``grid.<ext>`` and
``report.json``. While it works it also leaves checkpoints there (``plan.json`` and
``frame_NN.json``), so a run that died half-way can be resumed with the frames it had.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image

from engine.board_files import (
    CHARACTER_FILE,
    PLAN_FILE,
    REPORT_FILE,
    FrameResult,
    Storyboard,
    remove_checkpoints,
    write_bytes,
    write_checkpoint,
    write_json,
)
from engine.errors import Cancelled, InvalidRequest
from engine.identity.validate import Attempt, RetryPolicy, Validator
from engine.images import png_bytes
from engine.limits import (
    ASPECTS,
    MAX_FRAMES,
    MIN_FRAMES,
    MODES,
    SEED_SPACE,
    Aspect,
    Mode,
    allowed_aspects,
    allowed_frames,
    allowed_modes,
    frame_size,
)
from engine.planning.base import Planner, PlanResult
from engine.rendering.base import FrameRequest, ModeOff, Renderer
from engine.rendering.grid import EncodedGrid, GridPanel, compose_grid, encode_grid
from engine.rendering.poses import PoseLibrary, PoseTemplate, pose_image
from engine.rendering.prompts import Prompt, build_prompt
from engine.settings import EngineSettings, RenderSettings
from engine.shots import Shot, ShotList, hero_in, with_hero_look, with_hero_opening

log = logging.getLogger(__name__)


def frame_seed(board_seed: int, index: int, attempt: int) -> int:
    """Seed of one attempt at one frame: reproducible from the board seed alone."""
    return (board_seed + index * 7919 + attempt * 104_729) % SEED_SPACE


@dataclass(frozen=True)
class BoardRequest:
    story: str
    mode: Mode = "simple"
    frames: int | None = None  # None: the planner picks within its configured range
    seed: int = 0
    plan: ShotList | None = None  # reuse a plan (regenerating a frame, resuming)
    keep: Mapping[int, FrameResult] = field(default_factory=dict)  # frames reused as they are
    # the user's own character picture (RGB): the identity reference of every frame, frame 1
    # included, and what IP-Adapter sees in ref-guided mode
    character_image: Image.Image | None = None
    lora: bool = True  # False: no trigger token and no character LoRA (a character of the user's own)
    aspect: Aspect = "1:1"  # the frames' shape; their size is engine.limits.frame_size for this renderer
    # what the caller wants report.json to say besides (e.g. which GPU worker drew it), written
    # with the rest in the report's one write
    report_extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressEvent:
    """``frame``..``last_frame`` are the frames a renderer batch covers; ``step`` of ``steps``
    is the denoising step just finished (stage ``step``)."""

    stage: Literal["planning", "rendering", "step", "validating", "composing", "done"]
    frame: int | None = None
    total: int | None = None
    attempt: int | None = None
    last_frame: int | None = None
    step: int | None = None
    steps: int | None = None


ProgressCallback = Callable[[ProgressEvent], None]
# what a user's picture does: guides IP-Adapter (and the check); is only what frames are checked
# against (simple mode, or no IP-Adapter loaded); is shown as an inset (the preview renderer)
PictureUse = Literal["guides", "checks", "checks_no_ip_adapter", "inset"]
CancelCheck = Callable[[], bool]


class StoryEngine:
    """Turns a story into a storyboard with the planner, renderer and validator it is given."""

    def __init__(
        self,
        *,
        planner: Planner,
        renderer: Renderer,
        validator: Validator,
        settings: EngineSettings,
        reasons: Mapping[str, str] | None = None,
        models: ModelInfo | None = None,
        poses: PoseLibrary | None = None,
        modes_off: Sequence[ModeOff] = (),
    ) -> None:
        self.planner = planner
        self.poses = poses or PoseLibrary()
        self.renderer = renderer
        self.validator = validator
        self.settings = settings
        self.reasons = dict(reasons or {})
        self.models = models
        self._modes_off = {off.mode: off for off in modes_off}
        validation = settings.validation
        self.policy = RetryPolicy(validation.threshold, validation.max_retries, validation.copy_ceiling,
                                  validation.face_threshold)
        self.config_hash = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]

    def mode_off(self, mode: str) -> ModeOff | None:
        """Why this engine cannot draw ``mode``, or None when it can."""
        if mode in self.renderer.modes:
            return None
        return self._modes_off.get(mode, ModeOff(mode))

    def picture_use(self, mode: str) -> PictureUse:
        """What a user's character picture does on a board drawn in ``mode`` by this engine."""
        if self.renderer.name == "preview":
            return "inset"  # a sketch draws nobody's face: the picture is shown, not checked
        if mode == "ref-guided" and mode in self.renderer.modes:
            return "guides"
        return "checks" if "ref-guided" in self.renderer.modes else "checks_no_ip_adapter"

    def run(
        self,
        request: BoardRequest,
        out_dir: Path,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Storyboard:
        progress = on_progress or (lambda event: None)
        cancelled = should_cancel or (lambda: False)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        loads_before = self.models.loads if self.models else 0

        # 1. check inputs
        self._check_request(request)
        out_dir.mkdir(parents=True, exist_ok=True)
        if request.character_image is not None:
            write_bytes(out_dir / CHARACTER_FILE, png_bytes(request.character_image))

        # 2. plan
        progress(ProgressEvent("planning"))
        with _timed(timings, "plan"):
            planned = self._plan(request, out_dir)
        plan = planned.plan

        # 3. prompts
        with _timed(timings, "prompts"):
            prompts = [self.renderer.fit_prompt(build_prompt(shot, self.settings.prompt, plan, lora=request.lora)) for shot in plan.shots]

        # 4. render, with 5. validate and re-roll inside each frame
        frames = self._render_frames(request, plan, prompts, out_dir, timings, progress, cancelled)

        # 6. grid
        progress(ProgressEvent("composing"))
        with _timed(timings, "grid"):
            grid = self._compose(plan, frames, out_dir)

        # 7. report
        with _timed(timings, "report"):
            report = self._report(request, planned, frames, grid)
        timings["total"] = time.perf_counter() - started
        report["timings"] = {name: round(seconds, 4) for name, seconds in timings.items()}
        report["timings"]["model_loads"] = (self.models.loads if self.models else 0) - loads_before
        for key, value in request.report_extra.items():
            report.setdefault(key, value)  # never in place of what the engine itself records
        write_json(out_dir / REPORT_FILE, report)
        remove_checkpoints(out_dir)  # report.json now holds everything they did
        progress(ProgressEvent("done", total=len(frames)))
        log.info("board done: %d frames in %.2fs -> %s", len(frames), timings["total"], out_dir)
        return Storyboard(plan=plan, frames=tuple(frames), grid=grid, report=report, out_dir=out_dir)

    # -- 1. check inputs -------------------------------------------------------------
    def _check_request(self, request: BoardRequest) -> None:
        if not request.story or not request.story.strip():
            raise InvalidRequest("story is empty")
        if request.mode not in MODES:
            raise InvalidRequest(f"mode must be one of {allowed_modes()}, got {request.mode!r}")
        off = self.mode_off(request.mode)
        if off is not None:
            raise InvalidRequest(off.describe())
        if request.frames is not None and not MIN_FRAMES <= request.frames <= MAX_FRAMES:
            raise InvalidRequest(f"frames must be within {allowed_frames()}, got {request.frames}")
        if request.seed < 0:
            raise InvalidRequest(f"seed must be >= 0, got {request.seed}")
        if request.aspect not in ASPECTS:
            raise InvalidRequest(f"aspect must be one of {allowed_aspects()}, got {request.aspect!r}")
        if request.character_image is not None and request.character_image.mode != "RGB":
            raise InvalidRequest(f"the character picture must be RGB, got {request.character_image.mode}")
        if request.plan is not None:
            try:
                request.plan.check_numbering()
            except ValueError as exc:
                raise InvalidRequest(f"the given plan is not usable: {exc}") from exc
            if request.frames is not None and len(request.plan.shots) != request.frames:
                raise InvalidRequest(
                    f"the given plan has {len(request.plan.shots)} shots but {request.frames} frames were asked for"
                )
        n_shots = len(request.plan.shots) if request.plan else MAX_FRAMES
        stray = [i for i in request.keep if not 1 <= i <= n_shots]
        if stray:
            raise InvalidRequest(f"kept frames {stray} are outside the plan's 1..{n_shots}")
        if request.keep and request.plan is None:
            raise InvalidRequest("kept frames need the plan they belong to")
        misplaced = [key for key, frame in request.keep.items() if frame.index != key]
        if misplaced:
            raise InvalidRequest(f"kept frames {misplaced} are filed under the wrong frame number")

    # -- 2. plan -----------------------------------------------------------------------
    def _plan(self, request: BoardRequest, out_dir: Path) -> PlanResult:
        if request.plan is not None:
            result = PlanResult(plan=request.plan, planner="reused")
        else:
            result = self.planner.make_plan(request.story, shots=request.frames, seed=request.seed)
        result = self._with_hero(result)
        result.plan.check_numbering()
        write_json(out_dir / PLAN_FILE, result.plan.model_dump(mode="json"))
        log.info("plan: %d shots, language=%s, planner=%s%s", len(result.plan.shots), result.plan.language,
                 result.planner, f" (fallback: {result.fallback_reason})" if result.fallback_reason else "")
        return result

    def _with_hero(self, result: PlanResult) -> PlanResult:
        """The rules of the hero, whichever planner wrote the plan: his look is [prompt] character,
        and he is in shot 1, the identity reference."""
        plan = with_hero_look(result.plan, self.settings.prompt.character)
        opened = with_hero_opening(plan)
        repairs = result.repairs + (("shot 1: Aldar Kose added, frame 1 is the identity reference",)
                                    if opened is not plan else ())
        return replace(result, plan=opened, repairs=repairs)

    # -- 4. render + 5. validate ---------------------------------------------------------
    def _render_frames(
        self,
        request: BoardRequest,
        plan: ShotList,
        prompts: list[Prompt],
        out_dir: Path,
        timings: dict[str, float],
        progress: ProgressCallback,
        cancelled: CancelCheck,
    ) -> list[FrameResult]:
        for stage in ("render", "validate", "validate_wait", "checkpoint"):
            timings.setdefault(stage, 0.0)
        done = {index: replace(frame, reused=True) for index, frame in request.keep.items()}
        todo = [(shot, prompt) for shot, prompt in zip(plan.shots, prompts, strict=True) if shot.index not in done]
        run = _FrameRun(self, request, out_dir, timings, progress, cancelled, total=len(plan.shots), done=done)
        if todo and todo[0][0].index == 1:
            # Frame 1 is drawn alone, in every mode and at any batch size: it is the identity
            # reference, and a batch of one is a batch it can always be drawn in again, so how it
            # is computed never depends on the mode, the batch size or the validator (README: seeds).
            run.render_group(todo[:1])
            todo = todo[1:]
        if todo:
            run.render_group(todo)
        return [done[shot.index] for shot in plan.shots]

    # -- 6. grid -------------------------------------------------------------------------
    def _compose(self, plan: ShotList, frames: list[FrameResult], out_dir: Path) -> EncodedGrid:
        for frame in frames:
            if frame.reused:
                frame.image.save(out_dir / frame.file_name)
        panels = [GridPanel(image=f.image, number=f.index, caption=f.shot.caption, dialogue=plan.spoken_line(f.shot))
                  for f in frames]
        image = compose_grid(panels, self.settings.grid, title=plan.title)
        grid = encode_grid(image, self.settings.grid)
        for stale in out_dir.glob("grid.*"):
            stale.unlink()
        write_bytes(out_dir / f"grid.{grid.extension}", grid.data)
        return grid

    # -- 7. report -----------------------------------------------------------------------
    def _ref_guided_report(self, request: BoardRequest) -> dict | None:
        if request.mode != "ref-guided":
            return None
        render = self.settings.render
        return {
            "ip_adapter_scale": render.ip_adapter_scale,
            "controlnet_scale": render.controlnet_scale,
            "control_guidance": [render.control_guidance_start, render.control_guidance_end],
            # the user's picture, when the board has one, is all IP-Adapter sees
            "ip_adapter_reference": "character_image" if request.character_image is not None
            else render.ip_adapter_reference,
        }

    def _report(
        self,
        request: BoardRequest,
        planned: PlanResult,
        frames: list[FrameResult],
        grid: EncodedGrid,
    ) -> dict:
        plan = planned.plan
        return {
            "story": request.story,
            "title": plan.title,
            "language": plan.language,
            "cast": [member.model_dump(mode="json") for member in plan.cast],
            "places": [place.model_dump(mode="json") for place in plan.places],
            "mode": request.mode,
            "seed": request.seed,
            "aspect": request.aspect,
            "frame_size": {"width": frames[0].image.width, "height": frames[0].image.height},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "character_image": CHARACTER_FILE if request.character_image is not None else None,
            "lora": request.lora,
            "planner": planned.planner,
            "planner_fallback": planned.fallback_reason,
            "plan_repairs": list(planned.repairs),
            "renderer": self.renderer.name,
            "validator": self.validator.name,
            "backend_reasons": dict(self.reasons),
            "config_hash": self.config_hash,
            "validation": {
                "threshold": self.policy.threshold,
                "max_retries": self.policy.max_retries,
                "copy_ceiling": self.policy.copy_ceiling,
                "face_threshold": self.policy.face_threshold,
            },
            "models": self.models.report() if self.models else {},
            "ref_guided": self._ref_guided_report(request),
            "grid": {
                "file": f"grid.{grid.extension}",
                "format": grid.format,
                "width": grid.width,
                "height": grid.height,
                "bytes": len(grid.data),
            },
            "frames": [frame.to_json() for frame in frames],
            "timings": {},  # filled in by run() once the report stage itself is timed
        }


class _FrameRun:
    """Stages 4 and 5 for one board: render in batches, validate, re-roll what fails.

    A frame is final (and checkpointed, by the check thread) as soon as its check passes or it
    runs out of attempts, so a crash loses at most the batch in flight and the one being checked.
    """

    def __init__(
        self,
        engine: StoryEngine,
        request: BoardRequest,
        out_dir: Path,
        timings: dict[str, float],
        progress: ProgressCallback,
        cancelled: CancelCheck,
        *,
        total: int,
        done: dict[int, FrameResult],
    ) -> None:
        self.engine, self.request, self.out_dir = engine, request, out_dir
        self.timings, self.progress, self.cancelled = timings, progress, cancelled
        self.total, self.done = total, done
        self.poses: dict[int, tuple[PoseTemplate, str, Image.Image]] = {}
        self.width, self.height = board_frame_size(engine.settings.render, request)
        picture = request.character_image
        # the user's picture replaces the configured pictures and frame 1 as what frames are checked against
        self.validator = engine.validator.with_pictures([picture]) if picture is not None else engine.validator

    def render_group(self, items: list[tuple[Shot, Prompt]]) -> None:
        """Each round renders the pending frames in batches. A rendered batch is checked, and its
        passing frames kept, on the check thread while the next batch renders (the face check
        is CPU work the GPU need not wait for)."""
        picture = self.request.character_image
        reference = picture if picture is not None else (self.done[1].image if 1 in self.done else None)
        attempts: dict[int, list[Attempt]] = {shot.index: [] for shot, _ in items}
        images: dict[int, list[Image.Image]] = {shot.index: [] for shot, _ in items}
        pending = list(items)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-check") as checker:
            for attempt_no in range(self.engine.policy.max_attempts):
                round_ = _Round(self, attempt_no, reference, attempts, images)
                checks: list[Future] = []
                try:
                    for chunk in _chunks(pending, self.engine.renderer.batch_size):
                        _raise_a_failed_check(checks)  # no more renders for a board that cannot be checked
                        requests, rendered = self._render(chunk, attempt_no, reference)
                        self.progress(ProgressEvent("validating", **self._event(chunk, attempt_no)))
                        # in this thread's context: the check's log lines name the job too
                        context = contextvars.copy_context()
                        checks.append(checker.submit(context.run, round_.check, chunk, requests, rendered))
                except BaseException:
                    _let_checks_finish(checks)  # they keep what was drawn: a crash loses only the batch in flight
                    raise
                with _timed(self.timings, "validate_wait"):
                    for check in checks:
                        check.result()
                pending = round_.still_failing
                if not pending:
                    return

    def _render(
        self, chunk: list[tuple[Shot, Prompt]], attempt_no: int, reference: Image.Image | None,
    ) -> tuple[list[FrameRequest], list[Image.Image]]:
        first = chunk[0][0].index
        if self.cancelled():
            raise Cancelled(f"cancelled before frame {first}")
        render_reference = reference if self.request.mode == "ref-guided" else None
        requests = [
            FrameRequest(shot, prompt, frame_seed(self.request.seed, shot.index, attempt_no),
                         self.width, self.height, render_reference,
                         self._pose(shot) if render_reference is not None else None,
                         picture=self.request.character_image, lora=self.request.lora)
            for shot, prompt in chunk
        ]
        event = self._event(chunk, attempt_no)
        self.progress(ProgressEvent("rendering", **event))

        def on_step(step: int, steps: int) -> None:
            self.progress(ProgressEvent("step", step=step, steps=steps, **event))

        with _timed(self.timings, "render"):
            rendered = self.engine.renderer.render(requests, on_step=on_step, should_cancel=self.cancelled)
        return requests, rendered

    def _event(self, chunk: list[tuple[Shot, Prompt]], attempt_no: int) -> dict[str, int]:
        return {"frame": chunk[0][0].index, "last_frame": chunk[-1][0].index, "total": self.total,
                "attempt": attempt_no + 1}

    def _pose(self, shot: Shot) -> Image.Image:
        """The shot's pose skeleton for ControlNet (drawn once per frame, saved beside it)."""
        if shot.index not in self.poses:
            template, source = self.engine.poses.lookup(shot.pose)
            _, image = pose_image(template, shot.framing, self.width, self.height)
            self.poses[shot.index] = (template, source, image)
        return self.poses[shot.index][2]

    def _finalise(self, shot: Shot, prompt: Prompt, attempts: list[Attempt], images: list[Image.Image]) -> None:
        policy = self.engine.policy
        chosen = policy.best(attempts)
        pose = self.poses.get(shot.index)
        frame = FrameResult(
            index=shot.index,
            shot=shot,
            prompt=prompt,
            attempts=tuple(attempts),
            chosen=chosen,
            accepted=policy.passes(attempts[chosen].scores),
            picture=images[chosen],
            pose_template=pose[0].name if pose else None,
            pose_source=pose[1] if pose else None,
        )
        if pose is not None:
            pose[2].save(self.out_dir / frame.pose_file_name)
        if len(attempts) > 1 or not frame.accepted:
            log.info("frame %d: %d attempt(s), kept #%d (%s)", shot.index, len(attempts), chosen + 1,
                     attempts[chosen].verdict)
        with _timed(self.timings, "checkpoint"):
            write_checkpoint(frame, self.out_dir)
        self.done[shot.index] = frame


def board_frame_size(render: RenderSettings, request: BoardRequest) -> tuple[int, int]:
    """A board's frame size: its aspect at the renderer's pixel count ([engine] width x height),
    or, when frames are kept (one frame regenerated), the kept frames' own size, so the new
    frame matches its board even if the renderer's size was changed since."""
    kept = next(iter(request.keep.values()), None)
    return kept.image.size if kept is not None else frame_size(request.aspect, render.width * render.height)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class _Round:
    """One attempt at every pending frame; ``check`` runs on the check thread, one batch at a time."""

    run: _FrameRun
    attempt_no: int
    reference: Image.Image | None
    attempts: dict[int, list[Attempt]]
    images: dict[int, list[Image.Image]]
    still_failing: list[tuple[Shot, Prompt]] = field(default_factory=list)

    def check(self, chunk: list[tuple[Shot, Prompt]], requests: list[FrameRequest], rendered: list[Image.Image]) -> None:
        """Score a rendered batch; keep (and checkpoint) each frame that passes or is out of attempts."""
        engine = self.run.engine
        checked = [i for i, (shot, _) in enumerate(chunk) if hero_in(shot)]  # nobody to compare the others with
        with _timed(self.run.timings, "validate"):
            scores = self.run.validator.score(
                [rendered[i] for i in checked], texts=[chunk[i][0].description for i in checked],
                reference=self.reference, framings=[chunk[i][0].framing for i in checked],
            ) if checked else []
        by_frame = dict(zip(checked, scores, strict=True))
        last_try = self.attempt_no == engine.policy.max_attempts - 1
        for i, ((shot, prompt), req, image) in enumerate(zip(chunk, requests, rendered, strict=True)):
            score = by_frame.get(i)
            verdict = engine.policy.verdict(score) if score is not None else "not_in_shot"
            self.attempts[shot.index].append(Attempt.of(req.seed, score, verdict))
            self.images[shot.index].append(image)
            if score is None or engine.policy.passes(score) or last_try:
                self.run._finalise(shot, prompt, self.attempts[shot.index], self.images[shot.index])
            else:
                self.still_failing.append((shot, prompt))


def _raise_a_failed_check(checks: list[Future]) -> None:
    for check in checks:
        if check.done():
            check.result()


def _let_checks_finish(checks: list[Future]) -> None:
    """Wait for the checks under way while another error is raised; theirs are logged, not lost."""
    for check in checks:
        error = check.exception()
        if error is not None:
            log.error("a frame check failed as well", exc_info=error)


class ModelInfo(Protocol):
    """What the model loader tells a report: how many loads so far, and what was loaded how."""

    @property
    def loads(self) -> int: ...

    def report(self) -> dict: ...


class _timed:
    """Add the block's wall time to ``timings[name]`` (accumulates across frames)."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start
