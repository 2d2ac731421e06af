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

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import read_test_features, write_power
from analysis.dcase import unit_words
from analysis.io import Progress, log
from analysis.localization.clip_level import calibrate_clip_level, detect_regions
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
from analysis.workers import process_pool, resolve_n_jobs

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


def id_references(
    normal_by_id: dict[str, np.ndarray], loc: dict[str, Any], seed: int
) -> dict[str, IdReference]:
    """Split every ID's normal clips in a reference and a spiked half (alternate files)."""
    out = {}
    for mid, x in normal_by_id.items():
        first, second = alternate_halves(x.shape[0])
        normal = x[first]
        maps = {L: scale_maps(normal, loc["smooth_bins"], L) for L in time_scales(loc, x.shape[2])}
        m = null_group_size(normal.shape[0], second.size)
        out[mid] = IdReference(
            normal, x[second], maps, permutation_null(maps, m, loc["n_permutations"], seed)
        )
    return out


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


def evaluate_type(
    normal_by_id: dict[str, np.ndarray],
    loc: dict[str, Any],
    deltas: list[float],
    seed: int,
    frames_per_second: float,
) -> list[dict[str, Any]]:
    """Power rows of one machine type from its IDs' normal clips (see the module docstring)."""
    refs = id_references(normal_by_id, loc, seed)
    # Calibrate the clip level on the normal halves only, exactly as localize does.
    calibration = calibrate_clip_level({mid: r.normal for mid, r in refs.items()}, loc)
    levels = (calibration.threshold, calibration.cell_level, calibration.profile_levels)
    false_rate = float(np.concatenate(list(calibration.flagged.values())).mean())
    rows = []
    for p_index, pattern in enumerate(PATTERNS):
        for delta in deltas:
            hits, ious, id_hits, id_ious = [], [], [], []
            for mid, ref in refs.items():
                rng = np.random.default_rng([seed, zlib.crc32(mid.encode()), p_index])
                signed = truth_pattern(pattern, ref.normal.shape[1:], rng, frames_per_second)
                clip_hits, clip_ious, found, id_iou = spike_one_id(
                    ref, signed, delta, loc, levels, seed
                )
                hits += clip_hits
                ious += clip_ious
                id_hits.append(found)
                id_ious.append(id_iou)
            rows.append(
                {
                    "pattern": pattern,
                    "delta": float(delta),
                    "n_ids": len(normal_by_id),
                    "n_spiked": len(hits),
                    "clip_recall": float(np.mean(hits)) if hits else None,
                    "clip_iou": float(np.mean(ious)) if ious else None,
                    "clip_false_region_rate": false_rate,
                    "id_found_share": float(np.mean(id_hits)) if id_hits else None,
                    "id_iou": float(np.mean(id_ious)) if id_ious else None,
                }
            )
    return rows


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


def _type_task(task: tuple) -> tuple[str, list[dict[str, Any]] | str]:
    machine_type, features_dir, loc, deltas, seed, frames_per_second = task
    test = read_test_features(features_dir)
    normal_by_id = {}
    for mid in test.machine_ids():
        # Real frames only, as localize sees them: a spike-in never lands in the padding.
        real = int(test.n_frames[test.machine_id == mid].min())
        x = test.logmel[test.pick(mid, 0), :, :real].astype(np.float64)
        if x.shape[0] >= 2 * loc["min_normal_clips"]:
            normal_by_id[mid] = x
    if not normal_by_id:
        return machine_type, (
            f"fewer than {2 * loc['min_normal_clips']} normal test clips in every "
            f"{unit_words(test.machine_ids()).short}: "
            "too few to split into a normal and a spiked half"
        )
    return machine_type, evaluate_type(normal_by_id, loc, deltas, seed, frames_per_second)


def power_stage(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Measure detection power per machine type; write ``build/power.{csv,json}``.

    Parameters
    ----------
    params
        Validated params; reads ``power.*``, ``localization.*`` and ``data.machine_types``.
    """
    build_dir = Path(build_dir)
    cfg, loc = params["power"], params["localization"]
    frames_per_second = 1 / MelGeometry.from_params(params).seconds_per_frame
    tasks = [
        (t, build_dir / "features" / t, loc, cfg["deltas"], cfg["seed"], frames_per_second)
        for t in params["data"]["machine_types"]
    ]
    progress = Progress("power: machine types", len(tasks))
    rows, summary = [], {}
    with process_pool(resolve_n_jobs(cfg["n_jobs"])) as pool:
        for machine_type, result in pool.map(_type_task, tasks):
            progress.advance()
            if isinstance(result, str):
                summary[machine_type] = {"status": f"not measured: {result}"}
                continue
            rows += [{"machine_type": machine_type, **r} for r in result]
            summary[machine_type] = {"status": "ok", "detection_limits": detection_limits(result)}
    progress.close()
    write_power(
        build_dir,
        rows,
        {
            "deltas": cfg["deltas"],
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
