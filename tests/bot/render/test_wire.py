"""bot/render/wire.py: what a board request, its progress and its result look like after a trip through Redis.

No Redis here: every message goes through the same ``dumps``/``loads`` arq uses, and the boards
are real ones drawn by the engine with the preview renderer. Hostile results are real boards
with their report or files changed the way a compromised worker could change them.
"""

from __future__ import annotations

import asyncio
import io
import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from bot.render import wire
from bot.render.port import ResultTooLarge
from bot.render.wire import BadResult, RemoteCancelled, RemoteError, ResultBounds, WireError
from engine.board_files import REPORT_FILE, Storyboard, load_saved_board
from engine.build import build_engine
from engine.errors import InvalidRequest
from engine.storyboard import BoardRequest, ProgressEvent

STORY = "Aldar Kose tricks a greedy merchant at the bazaar. He rides away across the steppe at sunset."
LIMIT = 64 * 2**20


@pytest.fixture
def engine(make_config):
    return build_engine(make_config(engine={"width": 96, "height": 96}).engine_settings())


REQUEST = BoardRequest(story=STORY, frames=3, seed=7)


@pytest.fixture
def board(engine, tmp_path) -> Storyboard:
    return engine.run(REQUEST, tmp_path / "drawn")


@pytest.fixture
def bounds(engine) -> ResultBounds:
    return ResultBounds.for_request(REQUEST, engine.settings)


def through_redis(message):
    return wire.loads(wire.dumps(message))


def pixels(image: Image.Image) -> tuple:
    return image.mode, image.size, image.tobytes()


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


# -- request ------------------------------------------------------------------------------------------------
def test_a_request_with_a_plan_and_kept_frames_arrives_unchanged_on_the_worker(board, tmp_path):
    saved = load_saved_board(board.out_dir)
    sent = BoardRequest(story=STORY, mode="simple", frames=3, seed=11, plan=saved.plan,
                        keep={1: saved.frames[1], 3: saved.frames[3]})
    folder = tmp_path / "worker"  # the worker's scratch folder for the job; it exists already
    folder.mkdir()

    got = wire.decode_request(through_redis(wire.encode_request(sent)), folder)

    assert (got.story, got.mode, got.frames, got.seed) == (STORY, "simple", 3, 11)
    assert got.plan == saved.plan
    assert sorted(got.keep) == [1, 3]
    for index, frame in got.keep.items():
        original = saved.frames[index]
        assert (frame.index, frame.seed, frame.prompt) == (original.index, original.seed, original.prompt)
        assert pixels(frame.image) == pixels(original.image)


def test_a_decoded_request_redraws_only_the_frames_that_were_not_kept(engine, board, tmp_path):
    saved = load_saved_board(board.out_dir)
    sent = BoardRequest(story=STORY, frames=3, seed=99, plan=saved.plan, keep={2: saved.frames[2]})
    folder = tmp_path / "worker"
    folder.mkdir()

    redrawn = engine.run(wire.decode_request(through_redis(wire.encode_request(sent)), folder), folder)

    assert [frame.reused for frame in redrawn.frames] == [False, True, False]
    assert pixels(redrawn.frames[1].image) == pixels(saved.frames[2].image)
    assert redrawn.plan.title == saved.plan.title


def test_a_request_without_a_plan_arrives_without_one(tmp_path):
    sent = BoardRequest(story=STORY, frames=None, seed=0)
    got = wire.decode_request(through_redis(wire.encode_request(sent)), tmp_path)
    assert got == sent


def test_a_request_of_another_wire_version_is_refused_naming_the_version(tmp_path):
    data = wire.encode_request(BoardRequest(story=STORY)) | {"v": 99}
    with pytest.raises(InvalidRequest, match="99"):
        wire.decode_request(data, tmp_path)


def test_a_kept_frame_with_a_path_for_a_name_is_refused_and_not_written(board, tmp_path):
    saved = load_saved_board(board.out_dir)
    data = wire.encode_request(BoardRequest(story=STORY, plan=saved.plan, keep={1: saved.frames[1]}))
    data["keep"][0]["meta"]["file"] = "../evil.png"
    folder = tmp_path / "worker"
    folder.mkdir()

    with pytest.raises(InvalidRequest):
        wire.decode_request(data, folder)
    assert not (tmp_path / "evil.png").exists()


# -- result -------------------------------------------------------------------------------------------------
def test_a_finished_board_is_rebuilt_identically_on_the_bot_host(board, bounds, tmp_path):
    other = tmp_path / "bot-host"

    got = wire.decode_result(through_redis(wire.encode_board(board, max_bytes=LIMIT)), other, bounds)

    assert got.out_dir == other
    assert got.plan.title == board.plan.title
    assert len(got.frames) == len(board.frames) == 3
    assert got.grid_path.read_bytes() == board.grid_path.read_bytes()
    assert json.loads(got.report_path.read_text()) == json.loads(board.report_path.read_text())
    assert [pixels(f.image) for f in got.frames] == [pixels(f.image) for f in board.frames]
    assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in board.out_dir.iterdir())


def test_the_bot_host_stores_a_board_without_decoding_a_frame(board, bounds, tmp_path, monkeypatch):
    """The bot only stores and posts the files: their pixels are read only if something asks."""
    decoded = []
    monkeypatch.setattr(Image.Image, "convert", lambda image, *a, **kw: decoded.append(image) or image)

    got = wire.decode_result(through_redis(wire.encode_board(board, max_bytes=LIMIT)), tmp_path / "bot-host", bounds)

    assert decoded == [] and len(got.frames) == 3
    assert [f.image.size for f in got.frames] == [f.image.size for f in board.frames] and len(decoded) == 3


def test_a_rebuilt_board_loads_again_from_its_folder(board, bounds, tmp_path):
    other = tmp_path / "bot-host"
    wire.decode_result(wire.encode_board(board, max_bytes=LIMIT), other, bounds)

    again = wire.load_board(other, bounds)

    assert again.plan == board.plan
    assert again.grid.data == board.grid.data
    assert [f.seed for f in again.frames] == [f.seed for f in board.frames]


def test_a_board_over_the_result_limit_is_refused_naming_its_size_and_the_setting(board):
    total = sum(p.stat().st_size for p in board.out_dir.iterdir() if p.is_file())

    with pytest.raises(ResultTooLarge) as err:
        wire.encode_board(board, max_bytes=total - 1)

    assert wire.size_text(total) in str(err.value)
    assert "[arq] max_result_mb" in str(err.value)


def test_a_board_exactly_at_the_result_limit_is_sent(board):
    total = sum(p.stat().st_size for p in board.out_dir.iterdir() if p.is_file())
    assert wire.encode_board(board, max_bytes=total)["ok"] is True


@pytest.mark.parametrize("name", ["../evil.png", "a/b.png", ".hidden", "/tmp/evil.png", ""])
def test_a_result_file_with_an_unsafe_name_is_refused_and_nothing_lands_outside(board, bounds, tmp_path, name):
    result = wire.encode_board(board, max_bytes=LIMIT)
    result["files"][name] = b"not a picture"
    out = tmp_path / "jobs" / "out"
    before = files_under(tmp_path)

    with pytest.raises(BadResult, match="refusing a file"):
        wire.decode_result(through_redis(result), out, bounds)

    assert all(out in path.parents for path in files_under(tmp_path) - before)
    assert not (tmp_path / "jobs" / "evil.png").exists()


def test_a_result_file_that_is_not_bytes_is_refused(board, bounds, tmp_path):
    result = wire.encode_board(board, max_bytes=LIMIT)
    result["files"]["frame_01.png"] = "a string, not bytes"
    with pytest.raises(BadResult):
        wire.decode_result(through_redis(result), tmp_path / "out", bounds)


def test_a_result_without_a_report_is_refused(bounds, tmp_path):
    with pytest.raises(BadResult, match="report.json"):
        wire.decode_result({"v": wire.WIRE_VERSION, "ok": True, "files": {"grid.png": b"x"}}, tmp_path / "out",
                           bounds)
    assert not (tmp_path / "out" / "grid.png").exists()


def test_a_result_of_another_wire_version_is_refused(bounds, tmp_path):
    with pytest.raises(BadResult):
        wire.decode_result({"v": 2, "ok": True, "files": {}}, tmp_path / "out", bounds)


# -- hostile results: refused from their report and picture headers, before a pixel is decoded -------------
def flat_png(width: int, height: int) -> bytes:
    """A one-colour picture of any size in a few KB, made without ever holding it as RGB."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def tampered(board: Storyboard, change) -> dict:
    """The board's result after the trip through Redis, with ``change(report, files)`` applied."""
    result = through_redis(wire.encode_board(board, max_bytes=LIMIT))
    report = json.loads(result["files"][REPORT_FILE])
    change(report, result["files"])
    result["files"][REPORT_FILE] = json.dumps(report).encode()
    return result


@pytest.fixture
def decoded(monkeypatch) -> list[tuple[int, int]]:
    """The size of every picture whose pixels get decoded (PIL decodes in ``ImageFile.load``)."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(image):
        sizes.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def test_forty_frames_pointing_at_one_huge_picture_are_refused_before_any_pixel_is_decoded(
        board, bounds, tmp_path, decoded):
    def forty_copies_of_one_picture(report, files):
        report["frames"] = [dict(report["frames"][0], index=1, file="frame_01.png") for _ in range(40)]
        files["frame_01.png"] = flat_png(4000, 4000)

    result = tampered(board, forty_copies_of_one_picture)
    assert sum(len(data) for data in result["files"].values()) < 1_000_000  # a small message...

    with pytest.raises(BadResult, match="the board has 40 frames; the job asked for 3"):
        wire.decode_result(result, tmp_path / "out", bounds)  # ...that decoded would be 1.9 GB of RGB

    assert decoded == []


def test_a_9400x9400_picture_for_a_frame_is_refused_from_its_header_alone(board, bounds, tmp_path, decoded):
    def huge_second_frame(report, files):
        files["frame_02.png"] = flat_png(9400, 9400)  # just under PIL's own decompression-bomb limit

    with pytest.raises(BadResult, match=r"frame 2 is 9400x9400 pixels; the engine draws 96x96 \(\[engine\] width"):
        wire.decode_result(tampered(board, huge_second_frame), tmp_path / "out", bounds)

    assert decoded == []


def test_a_picture_past_pils_decompression_bomb_limit_is_a_bad_result(board, bounds, tmp_path, decoded):
    def bomb(report, files):
        files["frame_01.png"] = flat_png(14000, 14000)  # 196 Mpx: PIL refuses it on opening

    with pytest.raises(BadResult, match="DecompressionBombError"):
        wire.decode_result(tampered(board, bomb), tmp_path / "out", bounds)

    assert decoded == []


def test_a_frame_number_given_twice_is_refused(board, bounds, tmp_path):
    def duplicate_first(report, files):
        report["frames"][1] = dict(report["frames"][0])

    with pytest.raises(BadResult, match=r"numbered \[1, 1, 3\], not 1..3 in order"):
        wire.decode_result(tampered(board, duplicate_first), tmp_path / "out", bounds)


def test_two_frames_naming_one_file_are_refused(board, bounds, tmp_path):
    def share_a_file(report, files):
        report["frames"][2]["file"] = "frame_01.png"

    with pytest.raises(BadResult, match="frame 3 names the file 'frame_01.png', not its own 'frame_03.png'"):
        wire.decode_result(tampered(board, share_a_file), tmp_path / "out", bounds)


def test_more_frames_than_the_job_asked_for_are_refused(board, bounds, tmp_path):
    def one_more(report, files):
        report["frames"].append(dict(report["frames"][2], index=4, file="frame_04.png"))
        files["frame_04.png"] = files["frame_03.png"]

    with pytest.raises(BadResult, match="the board has 4 frames; the job asked for 3"):
        wire.decode_result(tampered(board, one_more), tmp_path / "out", bounds)


def test_without_a_frame_count_asked_for_a_board_still_has_at_most_twelve(board, engine, tmp_path):
    def thirteen(report, files):
        report["frames"] = [dict(report["frames"][0], index=i, file=f"frame_{i:02d}.png") for i in range(1, 14)]
        files.update({f"frame_{i:02d}.png": files["frame_01.png"] for i in range(1, 14)})

    planner_picks = ResultBounds.for_request(BoardRequest(story=STORY, frames=None, seed=7), engine.settings)
    with pytest.raises(BadResult, match="the board has 13 frames; a board has 1..12"):
        wire.decode_result(tampered(board, thirteen), tmp_path / "out", planner_picks)


@pytest.mark.parametrize("chosen", ["past the end", -1, True, "0"])
def test_a_chosen_attempt_outside_the_frames_attempts_is_refused(board, bounds, tmp_path, chosen):
    def choose(report, files):
        frame = report["frames"][0]
        frame["chosen_attempt"] = len(frame["attempts"]) if chosen == "past the end" else chosen

    with pytest.raises(BadResult, match="frame 1 keeps attempt"):
        wire.decode_result(tampered(board, choose), tmp_path / "out", bounds)


def test_more_attempts_than_the_retries_allow_are_refused(board, bounds, tmp_path):
    assert bounds.max_attempts == 3  # 1 + [validation] max_retries = 2

    def four_attempts(report, files):
        frame = report["frames"][1]
        frame["attempts"] = [frame["attempts"][0]] * 4

    with pytest.raises(BadResult, match=r"frame 2 lists 4 attempts; at most 3 are made \(1 \+ \[validation\]"):
        wire.decode_result(tampered(board, four_attempts), tmp_path / "out", bounds)


def test_a_frame_with_no_attempts_is_refused(board, bounds, tmp_path):
    def none(report, files):
        report["frames"][0]["attempts"] = []

    with pytest.raises(BadResult, match="frame 1 lists 0 attempts"):
        wire.decode_result(tampered(board, none), tmp_path / "out", bounds)


def test_kept_frames_are_held_to_their_own_size_and_attempts_and_new_ones_to_the_engines(
        board, make_config, tmp_path):
    saved = load_saved_board(board.out_dir)
    bigger_now = make_config(engine={"width": 128, "height": 128}, validation={"max_retries": 0}).engine_settings()
    kept = {1: replace(saved.frames[1], attempts=saved.frames[1].attempts * 3), 3: saved.frames[3]}
    regen = BoardRequest(story=STORY, frames=3, seed=7, plan=saved.plan, keep=kept)

    def kept_frame_one_tried_three_times(report, files):
        report["frames"][0]["attempts"] = report["frames"][0]["attempts"] * 3

    result = tampered(board, kept_frame_one_tried_three_times)
    with pytest.raises(BadResult, match="frame 2 is 96x96 pixels; the engine draws 128x128"):
        wire.decode_result(result, tmp_path / "out", ResultBounds.for_request(regen, bigger_now))

    all_kept = replace(regen, keep={**kept, 2: saved.frames[2]})
    got = wire.decode_result(result, tmp_path / "out-2", ResultBounds.for_request(all_kept, bigger_now))
    assert [len(frame.attempts) for frame in got.frames] == [3, 1, 1]


def test_a_grid_whose_picture_is_not_the_size_its_report_says_is_refused(board, bounds, tmp_path, decoded):
    def other_grid(report, files):
        report["grid"].update(file="grid.png", format="png")
        files["grid.png"] = flat_png(3000, 3000)

    with pytest.raises(BadResult, match="the grid is 3000x3000 pixels; report.json says"):
        wire.decode_result(tampered(board, other_grid), tmp_path / "out", bounds)

    assert decoded == []


def test_a_grid_past_the_grid_limits_is_refused(board, bounds, tmp_path, decoded):
    def huge_grid(report, files):
        report["grid"].update(file="grid.png", format="png", width=6000, height=6000)
        files["grid.png"] = flat_png(6000, 6000)

    with pytest.raises(BadResult, match=r"the grid is 6000x6000 pixels, outside \[grid\] max_dimension_sum 10000"):
        wire.decode_result(tampered(board, huge_grid), tmp_path / "out", bounds)

    assert decoded == []


def test_a_grid_naming_a_file_that_is_not_its_own_is_refused(board, bounds, tmp_path):
    def grid_under_a_frames_name(report, files):
        grid = report["grid"]
        files["frame_09.png"] = files[grid["file"]]
        grid["file"] = "frame_09.png"

    with pytest.raises(BadResult, match="the grid names the file 'frame_09.png', not grid."):
        wire.decode_result(tampered(board, grid_under_a_frames_name), tmp_path / "out", bounds)


def test_a_report_over_its_size_limit_is_refused_before_it_is_parsed(board, bounds, tmp_path):
    result = through_redis(wire.encode_board(board, max_bytes=LIMIT))
    result["files"][REPORT_FILE] = b"[" + b"{}," * (wire.MAX_REPORT_BYTES // 3) + b"{}]"

    with pytest.raises(BadResult, match="report.json is 1.0 MB, over the limit of 1.0 MB"):
        wire.decode_result(result, tmp_path / "out", bounds)


# -- failures ------------------------------------------------------------------------------------------------
def test_a_worker_side_invalid_request_is_raised_as_the_same_error_on_the_bot(bounds, tmp_path):
    result = through_redis(wire.encode_failure(InvalidRequest("bad mode")))
    with pytest.raises(InvalidRequest, match="^bad mode$"):
        wire.decode_result(result, tmp_path / "out", bounds)
    assert not (tmp_path / "out").exists()


def test_an_unknown_worker_failure_is_a_remote_error_carrying_its_type(bounds, tmp_path):
    with pytest.raises(RemoteError) as err:
        wire.decode_result(through_redis(wire.encode_failure(MemoryError("oom"))), tmp_path / "out", bounds)
    assert err.value.error_type == "MemoryError"
    assert str(err.value) == "oom"


def test_a_result_too_large_on_the_worker_is_the_bots_result_too_large(bounds, tmp_path):
    failure = through_redis(wire.encode_failure(ResultTooLarge("the board's files are 80.0 MB")))
    with pytest.raises(ResultTooLarge, match="80.0 MB"):
        wire.decode_result(failure, tmp_path / "out", bounds)


# -- arq envelopes -------------------------------------------------------------------------------------------
def test_an_aborted_job_in_an_arq_envelope_reads_as_remote_cancelled():
    got = through_redis({"r": asyncio.CancelledError(), "s": False})
    assert isinstance(got["r"], RemoteCancelled)
    assert got["s"] is False


def test_an_exception_in_an_arq_envelope_reads_as_a_remote_error_with_its_type_and_message():
    got = through_redis({"r": ValueError("x")})["r"]
    assert type(got) is RemoteError
    assert (got.error_type, str(got)) == ("ValueError", "x")


def test_objects_that_are_not_plain_data_cannot_be_sent():
    with pytest.raises(TypeError, match="Path"):
        wire.dumps({"folder": Path("/tmp")})


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickled_message_is_refused(protocol):
    with pytest.raises(WireError):
        wire.loads(pickle.dumps({"t": 1, "f": "render_board", "a": [], "k": {}}, protocol=protocol))


def leave_mark(path: str) -> None:
    Path(path).write_text("code ran", encoding="utf-8")


class Booby:
    """Unpickling this calls ``leave_mark``: stands in for ``os.system`` in a hostile payload."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return leave_mark, (self.path,)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_hostile_pickle_is_refused_without_running_its_code(tmp_path, protocol):
    mark = tmp_path / "mark"
    payload = pickle.dumps({"r": Booby(mark)}, protocol=protocol)
    pickle.loads(payload)  # the payload is live: plain pickle would run it
    assert mark.exists()
    mark.unlink()

    with pytest.raises(WireError):
        wire.loads(payload)

    assert not mark.exists()


def test_garbage_bytes_are_a_wire_error():
    with pytest.raises(WireError):
        wire.loads(b"\xc1\xc1\xc1")


# -- progress ------------------------------------------------------------------------------------------------
def test_a_progress_event_survives_the_trip():
    event = ProgressEvent("step", frame=2, total=3, attempt=1, last_frame=3, step=5, steps=20)
    assert wire.decode_progress(wire.encode_progress(event)) == event


def test_a_progress_message_from_a_newer_worker_keeps_the_fields_this_bot_knows():
    message = wire.dumps({"stage": "rendering", "frame": 1, "total": 3, "eta_s": 4.5, "gpu": "h100"})
    assert wire.decode_progress(message) == ProgressEvent("rendering", frame=1, total=3)


def test_a_progress_message_that_is_not_a_map_is_a_wire_error():
    with pytest.raises(WireError):
        wire.decode_progress(wire.dumps(["rendering", 1]))


@pytest.mark.parametrize("field", ["grid", "frame"])
def test_a_report_naming_a_file_outside_the_board_is_refused(board, bounds, tmp_path, field):
    result = through_redis(wire.encode_board(board, max_bytes=2**24))
    report = json.loads(result["files"]["report.json"])
    if field == "grid":
        report["grid"]["file"] = "/etc/hostname"
    else:
        report["frames"][0]["file"] = "../../etc/hostname"
    result["files"]["report.json"] = json.dumps(report).encode()

    with pytest.raises(BadResult, match="outside the board's folder"):
        wire.decode_result(result, tmp_path / "received", bounds)


def test_a_progress_message_missing_its_stage_is_a_wire_error():
    with pytest.raises(WireError):
        wire.decode_progress(wire.dumps({"frame": 1}))


def test_a_map_with_an_unhashable_key_is_a_wire_error():
    map_keyed_by_a_list = b"\x81\x91\x01\xa1x"  # msgpack for {[1]: "x"}
    with pytest.raises(WireError):
        wire.loads(map_keyed_by_a_list)


def test_a_message_of_a_million_tiny_values_is_refused_before_it_is_built():
    """1 MB of msgpack, well under [arq] max_result_mb, that would be a million Python objects."""
    import tracemalloc

    hostile = wire.dumps([[{} for _ in range(4000)] for _ in range(250)])
    tracemalloc.start()
    try:
        with pytest.raises(wire.WireError, match="more than 100000 values"):
            wire.loads(hostile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20  # built whole, the million dicts take over 60 MB
    with pytest.raises(wire.WireError):
        wire.loads(wire.dumps(["x"] * (wire.MAX_CONTAINER_LEN + 1)))


def test_a_real_board_request_fits_the_value_budget_with_room(board):
    request = wire.encode_request(BoardRequest(story="s", mode="simple", frames=12, seed=1, plan=board.plan,
                                               keep=dict(enumerate(board.frames, 1))))
    budget = wire._ValueBudget(wire.MAX_VALUES)
    wire.msgpack.unpackb(wire.dumps(request), raw=False, object_hook=budget.on_map, list_hook=budget.on_list)
    assert wire.MAX_VALUES - budget.left < wire.MAX_VALUES // 20


def test_a_users_picture_and_no_lora_travel_to_the_worker(tmp_path):
    picture = Image.new("RGB", (60, 80), (12, 200, 120))
    sent = BoardRequest(story=STORY, frames=2, seed=4, character_image=picture, lora=False)
    got = wire.decode_request(through_redis(wire.encode_request(sent)), tmp_path)
    assert got.lora is False and pixels(got.character_image) == pixels(picture)
    assert wire.decode_request(through_redis(wire.encode_request(BoardRequest(story=STORY))), tmp_path).lora is True
