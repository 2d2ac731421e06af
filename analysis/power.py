"""Stage ``power``: what the localization can and cannot detect, on this data's own normal clips.

Per machine type and ID, the normal test clips are split in two (alternate
files): one half stays normal, the other half gets a known anomaly added in
the feature domain, at strength ``delta`` in units of the ID's within-ID cell
standard deviation (real anomalies are mostly below 1: below one clip's
noise). Three patterns, after what real anomalies look like:

* ``stationary band``: 6 mel bins raised over the whole clip (fan, pump);
* ``lines in a window``: three 2-bin lines over the middle 75 % of the clip
  (toy machines), two raised and one lowered;
* ``short segments``: 6 mel bins raised in three segments of 0.5–1 s (what a
  band-times-segments mask draws; valve clicks, rail hits).

Only the clips' real frames are used (never the padding to ``target_T``).

Both levels of evidence then run exactly as ``localize`` runs them, with the
same params: the clip-level threshold calibrated out of fold on the normal
half (pooled over the type's IDs), and the ID-level permutation test. Per
pattern and delta this gives the clip-level recall (share of spiked clips
whose region *locates* the truth: IoU at least ``LOCATED_IOU``), their IoU, the
false-region rate on the normal half, and the share of IDs whose ID-level region
locates the truth, with its IoU. Any overlap is not enough: a region of a few
cells on the edge of the truth does not say where the anomaly is. The *detection limit* is the smallest delta at which
the clip level finds at least half of the spiked clips, or the ID level at
least ``ID_LEVEL_DETECTED`` of the IDs.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import read_test_features, write_power
from analysis.dcase import unit_words
from analysis.io import Progress, log
from analysis.localization.clip_level import detect_regions, out_of_fold_levels, pool_calibration
from analysis.localization.id_level import (
    null_group_size,
    permutation_null,
    pooled_test,
    region_found,
    scale_maps,
    time_scales,
)
from analysis.localization.maps import alternate_halves, iou
from analysis.mel import MelGeometry
from analysis.workers import parallel_map, resolve_n_jobs, return_freed_memory

PATTERNS = ("stationary band", "lines in a window", "short segments")
CLIP_LEVEL_DETECTED = 0.5  # clip-level recall at which a delta counts as detected
ID_LEVEL_DETECTED = 0.75  # share of IDs whose pooled region locates the truth
LOCATED_IOU = 0.5  # a region locates a spike-in when its IoU with the truth is at least this
SEGMENT_SECONDS = (0.5, 1.0)  # length range of the short-segments pattern's three segments


def truth_pattern(
    pattern: str, shape: tuple[int, int], rng: np.random.Generator, frames_per_second: float
) -> np.ndarray:
    """Signed (n_mels, frames) map of a spike-in pattern: +1 raised, -1 lowered, 0 untouched."""
    n_mels, T = shape
    out = np.zeros(shape)
    if pattern in ("stationary band", "short segments"):
        low = int(rng.integers(int(0.1 * n_mels), int(0.85 * n_mels)))
        rows = slice(low, low + max(1, n_mels // 21))
        if pattern == "stationary band":
            out[rows] = 1.0
            return out
        lo, hi = (max(1, round(s * frames_per_second)) for s in SEGMENT_SECONDS)
        lengths = rng.integers(lo, hi + 1, 3)
        # Three non-overlapping segments: the free frames split at random among four gaps.
        gaps = rng.multinomial(max(0, T - int(lengths.sum())), np.ones(4) / 4)
        start = 0
        for length, gap in zip(lengths, gaps[:3], strict=True):
            start += int(gap)
            out[rows, start : start + int(length)] = 1.0
            start += int(length)
        return out
    lows = np.sort(
        rng.choice(np.arange(int(0.1 * n_mels), int(0.9 * n_mels), 12), 3, replace=False)
    )
    t0, t1 = T // 8, T - T // 8
    for sign, low in zip((1.0, -1.0, 1.0), lows, strict=True):
        out[low : low + max(1, n_mels // 64), t0:t1] = sign
    return out


@dataclass(frozen=True)
class IdReference:
    """One ID's normal half (the reference), its spiked half (clips that get the pattern), and
    the normal half's maps and permutation null for the ID-level test."""

    normal: np.ndarray
    spiked: np.ndarray
    maps: dict[int, np.ndarray]
    null: dict[int, np.ndarray]


def capped_indices(n: int, cap: int) -> np.ndarray:
    """Which of ``n`` clips (in file order) to use when at most ``cap`` may be: all of them, or
    ``cap`` evenly spaced over the file order (a long recording is sampled over its whole
    length, not only its start)."""
    if n <= cap:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, cap)).astype(np.int64)


def id_reference(
    x: np.ndarray, loc: dict[str, Any], seed: int, null: dict[int, np.ndarray] | None = None
) -> IdReference:
    """Split one ID's normal clips in a reference and a spiked half (alternate files); the
    reference's permutation null is computed unless given (it depends on the reference only)."""
    first, second = alternate_halves(x.shape[0])
    normal = x[first]
    maps = {L: scale_maps(normal, loc["smooth_bins"], L) for L in time_scales(loc, x.shape[2])}
    if null is None:
        m = null_group_size(normal.shape[0], second.size)
        null = permutation_null(maps, m, loc["n_permutations"], seed)
    return IdReference(normal, x[second], maps, null)


def spike_one_id(
    ref: IdReference,
    signed: np.ndarray,
    delta: float,
    loc: dict[str, Any],
    calibration: tuple[float, float, np.ndarray],
    seed: int,
) -> tuple[list[bool], list[float], bool, float]:
    """Add ``delta`` within-ID SDs of a signed pattern to the spiked half and localize it.

    Returns per spiked clip whether its region overlaps the truth and its IoU, and whether
    the ID-level test found a region on the truth, with its IoU.
    """
    truth = signed != 0
    sd = float(np.std(ref.normal - ref.normal.mean(axis=0)))
    anomalous = ref.spiked + delta * sd * signed
    threshold, cell_level, band_levels = calibration
    # Regions are empty for clips not detected, so a hit is overlap with the truth.
    regions, _ = detect_regions(
        ref.normal, anomalous, threshold, loc, cell_level, False, band_levels
    )
    ious = [iou(region, truth) if region.any() else 0.0 for region in regions]
    hits = [value >= LOCATED_IOU for value in ious]
    maps = {L: scale_maps(anomalous, loc["smooth_bins"], L) for L in ref.maps}
    pooled = pooled_test(ref.maps, maps, signed.shape, loc, seed, ref.null)
    found = region_found(pooled["p_value"], pooled["region"], loc["id_level_alpha"])
    pooled_iou = iou(pooled["region"], truth) if found else 0.0
    return hits, ious, found and pooled_iou >= LOCATED_IOU, pooled_iou


def detection_limits(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per pattern: the smallest delta detected at each level (None: not within the deltas)."""
    out: dict[str, dict[str, float | None]] = {}
    for pattern in PATTERNS:
        mine = sorted((r for r in rows if r["pattern"] == pattern), key=lambda r: r["delta"])
        clip = [r["delta"] for r in mine if (r["clip_recall"] or 0) >= CLIP_LEVEL_DETECTED]
        pooled = [r["delta"] for r in mine if (r["id_found_share"] or 0) >= ID_LEVEL_DETECTED]
        out[pattern] = {
            "clip_level": clip[0] if clip else None,
            "id_level": pooled[0] if pooled else None,
        }
    return out


@dataclass(frozen=True)
class IdPowerTask:
    """One ID of one machine type, as a pool worker reads it (its clips come from the
    memory-mapped features in the worker, so the task itself is small)."""

    machine_type: str
    machine_id: str
    features_dir: Path
    loc: dict[str, Any]
    seed: int
    max_normal_clips: int


def id_normal_clips(task: IdPowerTask) -> tuple[np.ndarray, int]:
    """The ID's normal test clips used (at most ``max_normal_clips``, :func:`capped_indices`),
    real frames only as localize sees them (a spike-in never lands in the padding), float64;
    and how many it has."""
    test = read_test_features(task.features_dir)
    real = int(test.n_frames[test.machine_id == task.machine_id].min())
    normal = np.flatnonzero(test.pick(task.machine_id, 0))
    used = normal[capped_indices(normal.size, task.max_normal_clips)]
    return test.logmel[used, :, :real].astype(np.float64), int(normal.size)


def measure_id(task: IdPowerTask) -> tuple[int, dict[int, np.ndarray] | None, tuple | None]:
    """Pass 1 of the power stage for one ID: its normal clips, the reference half's
    permutation null and out-of-fold critical levels (for the type's pooled calibration).
    Null and levels are None when the ID has too few normal clips to split."""
    x, n_normal = id_normal_clips(task)
    if x.shape[0] < 2 * task.loc["min_normal_clips"]:
        return n_normal, None, None
    ref = id_reference(x, task.loc, task.seed)
    measured, null = out_of_fold_levels(ref.normal, task.loc), ref.null
    del x, ref
    return_freed_memory()
    return n_normal, null, measured


def spike_id(
    task: IdPowerTask,
    null: dict[int, np.ndarray],
    calibration: tuple[float, float, np.ndarray],
    deltas: list[float],
    frames_per_second: float,
) -> list[tuple[list[bool], list[float], bool, float]]:
    """Pass 2 for one ID: :func:`spike_one_id` for every pattern and delta (patterns outer),
    the pattern drawn once per ID and pattern as the seed and ID say."""
    x, _ = id_normal_clips(task)
    ref = id_reference(x, task.loc, task.seed, null)
    out = []
    for p_index, pattern in enumerate(PATTERNS):
        rng = np.random.default_rng([task.seed, zlib.crc32(task.machine_id.encode()), p_index])
        signed = truth_pattern(pattern, ref.normal.shape[1:], rng, frames_per_second)
        out += [spike_one_id(ref, signed, d, task.loc, calibration, task.seed) for d in deltas]
    del x, ref
    return_freed_memory()
    return out


def type_rows(
    results_by_id: dict[str, list[tuple]], deltas: list[float], false_rate: float
) -> list[dict[str, Any]]:
    """Power rows of one machine type from its IDs' :func:`spike_id` results (in ID order)."""
    rows = []
    for p_index, pattern in enumerate(PATTERNS):
        for d_index, delta in enumerate(deltas):
            hits, ious, id_hits, id_ious = [], [], [], []
            for results in results_by_id.values():
                clip_hits, clip_ious, found, id_iou = results[p_index * len(deltas) + d_index]
                hits += clip_hits
                ious += clip_ious
                id_hits.append(found)
                id_ious.append(id_iou)
            rows.append(
                {
                    "pattern": pattern,
                    "delta": float(delta),
                    "n_ids": len(results_by_id),
                    "n_spiked": len(hits),
                    "clip_recall": float(np.mean(hits)) if hits else None,
                    "clip_iou": float(np.mean(ious)) if ious else None,
                    "clip_false_region_rate": false_rate,
                    "id_found_share": float(np.mean(id_hits)) if id_hits else None,
                    "id_iou": float(np.mean(id_ious)) if id_ious else None,
                }
            )
    return rows


def id_tasks(params: dict[str, Any], build_dir: Path) -> list[IdPowerTask]:
    """One task per machine type and ID with normal test clips, types in params order."""
    cfg = params["power"]
    tasks = []
    for machine_type in params["data"]["machine_types"]:
        features_dir = build_dir / "features" / machine_type
        test = read_test_features(features_dir)
        tasks += [
            IdPowerTask(
                machine_type,
                mid,
                features_dir,
                params["localization"],
                cfg["seed"],
                cfg["max_normal_clips_per_id"],
            )
            for mid in test.machine_ids()
        ]
    return tasks


def measure_types(
    machine_types: list[str],
    tasks: list[IdPowerTask],
    measured: list[tuple],
    cap: int,
    loc: dict[str, Any],
) -> tuple[dict[str, tuple], dict[str, dict[str, Any]]]:
    """Pool pass 1 per type: the clip-level calibration on the reference halves (as localize
    calibrates, pooled over the type's IDs), its false-region rate, and each type's summary
    (its status, how many IDs had more normal clips than ``cap``)."""
    by_type: dict[str, dict[str, tuple]] = {t: {} for t in machine_types}
    capped = dict.fromkeys(machine_types, 0)
    for task, (n_normal, _null, levels) in zip(tasks, measured, strict=True):
        capped[task.machine_type] += int(n_normal > cap)
        if levels is not None:
            by_type[task.machine_type][task.machine_id] = levels
    calibrations, summary = {}, {}
    for machine_type, levels_by_id in by_type.items():
        if not levels_by_id:
            unit = unit_words(t.machine_id for t in tasks if t.machine_type == machine_type)
            summary[machine_type] = {
                "status": f"not measured: fewer than {2 * loc['min_normal_clips']} normal test "
                f"clips in every {unit.short}: too few to split into a normal and a spiked half"
            }
            continue
        calibration = pool_calibration(levels_by_id, loc)
        false_rate = float(np.concatenate(list(calibration.flagged.values())).mean())
        calibrations[machine_type] = (
            (calibration.threshold, calibration.cell_level, calibration.profile_levels),
            false_rate,
        )
        summary[machine_type] = {"status": "ok", "n_ids_capped": capped[machine_type]}
    return calibrations, summary


def power_rows(summary, by_type, calibrations, deltas) -> list[dict[str, Any]]:
    """The power table's rows, per machine type that was spiked, in the summary's order; each
    such type's summary gains its detection limits."""
    rows = []
    for machine_type in summary:
        if machine_type in by_type:
            result = type_rows(by_type[machine_type], deltas, calibrations[machine_type][1])
            rows += [{"machine_type": machine_type, **r} for r in result]
            summary[machine_type]["detection_limits"] = detection_limits(result)
    return rows


def power_stage(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Measure detection power per machine type; write ``build/power.{csv,json}``.

    Each ID is one pool task, twice: pass 1 measures its reference half (null, out-of-fold
    levels); the type's calibration is pooled from those; pass 2 spikes its other half.

    Parameters
    ----------
    params
        Validated params; reads ``power.*``, ``localization.*`` and ``data.machine_types``.
    """
    build_dir = Path(build_dir)
    cfg, loc = params["power"], params["localization"]
    frames_per_second = 1 / MelGeometry.from_params(params).seconds_per_frame
    tasks = id_tasks(params, build_dir)
    progress = Progress("power: machine IDs (measure, spike)", 2 * len(tasks))
    with contextlib.ExitStack() as stack:
        mapper = parallel_map(stack, max(1, min(resolve_n_jobs(cfg["n_jobs"]), len(tasks))))
        measured = []
        for result in mapper(measure_id, tasks):
            measured.append(result)
            progress.advance()
        calibrations, summary = measure_types(
            params["data"]["machine_types"], tasks, measured, cfg["max_normal_clips_per_id"], loc
        )
        spiked = [(task, null) for task, (_, null, _) in zip(tasks, measured, strict=True) if null]
        results = mapper(
            spike_id,
            [task for task, _ in spiked],
            [null for _, null in spiked],
            [calibrations[task.machine_type][0] for task, _ in spiked],
            [cfg["deltas"]] * len(spiked),
            [frames_per_second] * len(spiked),
        )
        by_type: dict[str, dict[str, list]] = {}
        for (task, _), result in zip(spiked, results, strict=True):
            by_type.setdefault(task.machine_type, {})[task.machine_id] = result
            progress.advance()
    progress.close()
    rows = power_rows(summary, by_type, calibrations, cfg["deltas"])
    write_power(
        build_dir,
        rows,
        {
            "deltas": cfg["deltas"],
            "max_normal_clips_per_id": cfg["max_normal_clips_per_id"],
            "n_ids_capped": sum(s.get("n_ids_capped", 0) for s in summary.values()),
            "clip_level_detected": CLIP_LEVEL_DETECTED,
            "id_level_detected": ID_LEVEL_DETECTED,
            "located_iou": LOCATED_IOU,
            "segment_seconds": list(SEGMENT_SECONDS),
            "types": summary,
        },
    )
    for machine_type, s in summary.items():
        log(f"power {machine_type}: {s.get('detection_limits', s['status'])}")
    return build_dir / "power.csv"
