"""The statistics of an eval: per-group summaries of the board metrics, and paired comparisons
of two runs (``python -m bot eval --compare``).

A board contributes one value per metric; a group is one ``system/mode``. Intervals are
percentile bootstraps of the mean, seeded, so the same boards always give the same numbers.
Everything returned is plain JSON (Python floats rounded to 4 decimals, lists, None).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# the summary metric keys, in the order the tables show them
METRICS: tuple[str, ...] = (
    "clip_i",
    "clip_i_pairwise",
    "clip_i_crop",
    "crop_found_rate",
    "face_similarity",
    "face_found_rate",
    "clip_t",
    "copy_paste_rate",
    "copy_gap",
    "cast_consistency",
    "rerolls_per_frame",
    "accepted_rate",
    "seconds_per_board",
)

DECIMALS = 4
UNPAIRED = "unpaired"  # the key in paired_deltas' result that is not a group (groups always hold a "/")

BoardKey = tuple[str, str, str, int | None]


def summarise(values: Sequence[float | None], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean, sample std, bootstrap 95% interval of the mean and count of the values that are not None."""
    kept = _present(values)
    if kept.size == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    std = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
    lo, hi = _bootstrap_interval(kept, resamples=resamples, seed=seed)
    return {"mean": _rounded(kept.mean()), "std": _rounded(std), "ci95": [_rounded(lo), _rounded(hi)],
            "n": int(kept.size)}


def summarise_boards(boards: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """``{"system/mode": {metric: summarise(...)}}`` for every metric in METRICS, groups in the order they first appear."""
    grouped: dict[str, list[dict]] = {}
    for board in boards:
        grouped.setdefault(group_of(board), []).append(board)
    _warn_unknown_metrics(boards)
    return {group: {metric: summarise([_metric(board, metric) for board in members]) for metric in METRICS}
            for group, members in grouped.items()}


def group_of(board: dict) -> str:
    """The ``system/mode`` a board is summarised under."""
    return f"{board['system']}/{board['mode']}"


def board_key(board: dict) -> BoardKey:
    """What pairs a board with the same story and seed in another run."""
    return board["system"], board["mode"], board["story_id"], board["seed"]


def paired_deltas(a_boards: Sequence[dict], b_boards: Sequence[dict], *, resamples: int = 2000,
                  seed: int = 0) -> dict:
    """Per group and metric, the mean paired difference b − a with its bootstrap 95% interval.

    Boards pair by (system, mode, story_id, seed): the same story and seed drawn by both runs,
    so story difficulty cancels out. A pair counts for a metric when both boards have it.
    ``"unpaired"`` lists the boards only one run has, with the side (``"a"`` or ``"b"``) they are in.
    """
    a_by_key, b_by_key = _by_key(a_boards, "a"), _by_key(b_boards, "b")
    b_groups = {group_of(board) for board in b_boards}
    shared_groups = [group for group in dict.fromkeys(group_of(board) for board in a_boards) if group in b_groups]
    pairs = [(a_by_key[key], b_by_key[key]) for key in a_by_key if key in b_by_key]
    result: dict = {}
    for group in shared_groups:
        members = [(a, b) for a, b in pairs if group_of(a) == group]
        result[group] = {metric: _paired_delta(members, metric, resamples=resamples, seed=seed) for metric in METRICS}
    result[UNPAIRED] = _unpaired(a_by_key, b_by_key)
    if result[UNPAIRED]:
        log.info("%d boards have no partner in the other run and are left out of the comparison",
                    len(result[UNPAIRED]))
    return result


def format_compare(deltas: dict) -> str:
    """The lines ``--compare`` prints: one per group and metric, columns aligned, then the significant ones."""
    rows = [(group, metric, delta) for group, metrics in deltas.items() if group != UNPAIRED
            for metric, delta in metrics.items()]
    if not rows:
        return "no system/mode is in both runs: nothing to compare"
    lines = _aligned([[group, metric, *_delta_cells(delta)] for group, metric, delta in rows])
    lines.append(_significant_line(rows))
    unpaired = deltas.get(UNPAIRED) or []
    if unpaired:
        boards = "1 board" if len(unpaired) == 1 else f"{len(unpaired)} boards"
        lines.append(f"{boards} without a partner in the other run left out (listed under \"{UNPAIRED}\")")
    return "\n".join(lines)


def _present(values: Sequence[float | None]) -> np.ndarray:
    """The values that are not None, as floats; a NaN or infinity is a metric bug, so it is refused here."""
    kept = np.asarray([float(v) for v in values if v is not None], dtype=float)
    if not np.all(np.isfinite(kept)):
        raise ValueError(f"{int(np.sum(~np.isfinite(kept)))} of the values are NaN or infinite: a metric bug, "
                         "not a measurement (use None for a value that could not be measured)")
    return kept


def _bootstrap_interval(values: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean: ``resamples`` resamplings drawn at once.

    A fresh generator per call keeps each interval reproducible whatever was computed before it.
    The (resamples, n) index array is n boards wide, so it stays small for any realistic eval.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[indices].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    # the mean of a resampling of equal values can differ from them in the last bit; keep the interval honest
    return max(float(lo), float(values.min())), min(float(hi), float(values.max()))


def _rounded(value: float) -> float:
    # adding 0.0 turns a rounded -0.0 into 0.0, which reads better in the JSON and in the tables
    return round(float(value), DECIMALS) + 0.0


def _metric(board: dict, metric: str) -> float | None:
    return (board.get("metrics") or {}).get(metric)


def _warn_unknown_metrics(boards: Sequence[dict]) -> None:
    """A misspelt metric name would otherwise only show as an empty column."""
    unknown = sorted({name for board in boards for name in (board.get("metrics") or {}) if name not in METRICS})
    if unknown:
        log.warning("metrics not in the summary are ignored: %s", ", ".join(unknown))


def _by_key(boards: Sequence[dict], side: str) -> dict[BoardKey, dict]:
    """Boards by pairing key; a key given twice would make the pairing ambiguous, so it is refused."""
    found: dict[BoardKey, dict] = {}
    for board in boards:
        key = board_key(board)
        if key in found:
            raise ValueError(f"run {side} has two boards for system/mode/story/seed {key}: pairing is ambiguous")
        found[key] = board
    return found


def _paired_delta(pairs: Sequence[tuple[dict, dict]], metric: str, *, resamples: int, seed: int) -> dict:
    diffs = np.asarray([_metric(b, metric) - _metric(a, metric) for a, b in pairs
                        if _metric(a, metric) is not None and _metric(b, metric) is not None], dtype=float)
    if diffs.size == 0:
        return {"delta": None, "ci95": None, "n": 0, "significant": False}
    if not np.all(np.isfinite(diffs)):
        raise ValueError(f"{metric}: a paired difference is NaN or infinite: a metric bug")
    if not np.any(diffs):
        # identical runs: the answer is exact, and no resampling can say otherwise
        return {"delta": 0.0, "ci95": [0.0, 0.0], "n": int(diffs.size), "significant": False}
    lo, hi = (_rounded(bound) for bound in _bootstrap_interval(diffs, resamples=resamples, seed=seed))
    # decided on the rounded interval, so the verdict agrees with the numbers printed beside it
    significant = diffs.size >= 2 and (lo > 0.0 or hi < 0.0)
    return {"delta": _rounded(diffs.mean()), "ci95": [lo, hi], "n": int(diffs.size), "significant": significant}


def _unpaired(a_by_key: dict[BoardKey, dict], b_by_key: dict[BoardKey, dict]) -> list[dict]:
    def entry(key: BoardKey, side: str) -> dict:
        system, mode, story_id, seed = key
        return {"system": system, "mode": mode, "story_id": story_id, "seed": seed, "side": side}

    return ([entry(key, "a") for key in a_by_key if key not in b_by_key]
            + [entry(key, "b") for key in b_by_key if key not in a_by_key])


def _delta_cells(delta: dict) -> list[str]:
    verdict = "significant" if delta["significant"] else "not significant"
    if delta["delta"] is None:
        return ["delta –", "95% CI –", f"n={delta['n']}", verdict]
    lo, hi = delta["ci95"]
    return [f"delta {delta['delta']:+.4f}", f"95% CI [{lo:+.4f}, {hi:+.4f}]", f"n={delta['n']}", verdict]


def _aligned(table: Sequence[Sequence[str]]) -> list[str]:
    """Each column padded to its widest cell (the last left as is), two spaces between columns."""
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in table]


def _significant_line(rows: Sequence[tuple[str, str, dict]]) -> str:
    found = [f"{group} {metric} ({delta['delta']:+.4f})" for group, metric, delta in rows if delta["significant"]]
    if not found:
        return "significant: none (no interval excludes 0)"
    return "significant: " + ", ".join(found)

