"""Stage ``power``: what the localization can and cannot detect, on this data's own normal clips.

Per machine type and ID, the normal test clips are split in two (alternate
files): one half stays normal, the other half gets a known anomaly added in
the feature domain, at strength ``delta`` in units of the ID's within-ID cell
standard deviation (real anomalies are mostly below 1: below one clip's
noise). Two patterns, after what real anomalies look like:

* ``stationary band``: 6 mel bins raised over the whole clip (fan, pump);
* ``lines in a window``: three 2-bin lines over the middle 75 % of the clip
  (toy machines), two raised and one lowered.

Both levels of evidence then run exactly as ``localize`` runs them, with the
same params: the clip-level threshold calibrated out of fold on the normal
half (pooled over the type's IDs), and the ID-level permutation test. Per
pattern and delta this gives the clip-level recall (share of spiked clips
whose region overlaps the truth), their IoU, the false-region rate on the
normal half, and the share of IDs with an ID-level region overlapping the
truth, with its IoU. The *detection limit* is the smallest delta at which
the clip level finds at least half of the spiked clips, or the ID level at
least ``ID_LEVEL_DETECTED`` of the IDs.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from analysis.io import Progress, load_npz, log, write_csv, write_json
from analysis.localize import (
    alternate_halves,
    calibrate_clip_level,
    detect_regions,
    iou,
    null_group_size,
    permutation_null,
    pooled_test,
    scale_maps,
    time_scales,
)
from analysis.workers import process_pool, resolve_n_jobs

PATTERNS = ("stationary band", "lines in a window")
CLIP_LEVEL_DETECTED = 0.5  # clip-level recall at which a delta counts as detected
ID_LEVEL_DETECTED = 0.75  # share of IDs with a pooled region on the truth
POWER_COLUMNS = (
    "machine_type",
    "pattern",
    "delta",
    "n_ids",
    "n_spiked",
    "clip_recall",
    "clip_iou",
    "clip_false_region_rate",
    "id_found_share",
    "id_iou",
)


def truth_pattern(pattern: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Signed (n_mels, T) map of a spike-in pattern: +1 raised, -1 lowered, 0 untouched."""
    n_mels, T = shape
    out = np.zeros(shape)
    if pattern == "stationary band":
        low = int(rng.integers(int(0.1 * n_mels), int(0.85 * n_mels)))
        out[low : low + max(1, n_mels // 21)] = 1.0
        return out
    lows = np.sort(
        rng.choice(np.arange(int(0.1 * n_mels), int(0.9 * n_mels), 12), 3, replace=False)
    )
    t0, t1 = T // 8, T - T // 8
    for sign, low in zip((1.0, -1.0, 1.0), lows, strict=True):
        out[low : low + max(1, n_mels // 64), t0:t1] = sign
    return out


def evaluate_type(
    normal_by_id: dict[str, np.ndarray], loc: dict[str, Any], deltas: list[float], seed: int
) -> list[dict[str, Any]]:
    """Power rows of one machine type from its IDs' normal clips (see the module docstring)."""
    halves = {mid: alternate_halves(x.shape[0]) for mid, x in normal_by_id.items()}
    # Calibrate the clip level on the normal halves only, exactly as localize does.
    calibration = calibrate_clip_level(
        {mid: x[halves[mid][0]] for mid, x in normal_by_id.items()}, loc
    )
    threshold, cell_level = calibration.threshold, calibration.cell_level
    false_rate = float(np.concatenate(list(calibration.flagged.values())).mean())
    scales = time_scales(loc, next(iter(normal_by_id.values())).shape[2])
    normal_maps, nulls = {}, {}
    for mid, x in normal_by_id.items():
        normal, n_spiked = x[halves[mid][0]], halves[mid][1].size
        normal_maps[mid] = {L: scale_maps(normal, loc["smooth_bins"], L) for L in scales}
        m = null_group_size(normal.shape[0], n_spiked)
        nulls[mid] = permutation_null(normal_maps[mid], m, loc["n_permutations"], seed)
    rows = []
    for p_index, pattern in enumerate(PATTERNS):
        for delta in deltas:
            hits, ious, id_hits, id_ious, n_spiked = [], [], [], [], 0
            for mid, x in normal_by_id.items():
                normal, spiked = x[halves[mid][0]], x[halves[mid][1]]
                rng = np.random.default_rng([seed, zlib.crc32(mid.encode()), p_index])
                signed = truth_pattern(pattern, x.shape[1:], rng)
                truth = signed != 0
                sd = float(np.std(normal - normal.mean(axis=0)))
                anomalous = spiked + delta * sd * signed
                # Regions are empty for clips not detected, so a hit is overlap with the truth.
                regions, _ = detect_regions(
                    normal, anomalous, threshold, loc, cell_level, with_levels=False
                )
                n_spiked += len(regions)
                for region in regions:
                    hits.append(bool((region & truth).any()))
                    ious.append(iou(region, truth) if region.any() else 0.0)
                pooled = pooled_test(
                    normal_maps[mid],
                    {L: scale_maps(anomalous, loc["smooth_bins"], L) for L in scales},
                    x.shape[1:],
                    loc,
                    seed,
                    nulls[mid],
                )
                found = pooled["p_value"] < loc["id_level_alpha"] and bool(
                    (pooled["region"] & truth).any()
                )
                id_hits.append(found)
                id_ious.append(iou(pooled["region"], truth) if found else 0.0)
            rows.append(
                {
                    "pattern": pattern,
                    "delta": float(delta),
                    "n_ids": len(normal_by_id),
                    "n_spiked": n_spiked,
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
    machine_type, features_path, loc, deltas, seed = task
    data = load_npz(features_path)
    normal_by_id = {}
    for mid in sorted(set(data["machine_id"].tolist())):
        x = data["logmel"][(data["machine_id"] == mid) & (data["label"] == 0)].astype(np.float64)
        if x.shape[0] >= 2 * loc["min_normal_clips"]:
            normal_by_id[mid] = x
    if not normal_by_id:
        return machine_type, (
            f"fewer than {2 * loc['min_normal_clips']} normal test clips in every ID: "
            "too few to split into a normal and a spiked half"
        )
    return machine_type, evaluate_type(normal_by_id, loc, deltas, seed)


def power_stage(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Measure detection power per machine type; write ``build/power.{csv,json}``.

    Parameters
    ----------
    params
        Validated params; reads ``power.*``, ``localization.*`` and ``data.machine_types``.
    """
    build_dir = Path(build_dir)
    cfg, loc = params["power"], params["localization"]
    tasks = [
        (t, build_dir / "features" / t / "test.npz", loc, cfg["deltas"], cfg["seed"])
        for t in params["data"]["machine_types"]
    ]
    progress = Progress("power: machine types", len(tasks))
    rows, summary = [], {}
    with process_pool(resolve_n_jobs(0)) as pool:
        for machine_type, result in pool.map(_type_task, tasks):
            progress.advance()
            if isinstance(result, str):
                summary[machine_type] = {"status": f"not measured: {result}"}
                continue
            rows += [{"machine_type": machine_type, **r} for r in result]
            summary[machine_type] = {"status": "ok", "detection_limits": detection_limits(result)}
    progress.close()
    write_csv(build_dir / "power.csv", rows, POWER_COLUMNS)
    write_json(
        build_dir / "power.json",
        {
            "deltas": cfg["deltas"],
            "clip_level_detected": CLIP_LEVEL_DETECTED,
            "id_level_detected": ID_LEVEL_DETECTED,
            "types": summary,
            "rows": rows,
        },
    )
    for machine_type, s in summary.items():
        log(f"power {machine_type}: {s.get('detection_limits', s['status'])}")
    return build_dir / "power.csv"
