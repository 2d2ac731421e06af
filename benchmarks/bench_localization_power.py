"""Benchmark: the localization's power curve on synthetic clips with known anomalies.

For each machine type (default: fan, a stationary type, and ToyCar, a toy machine with an
active window), each anomaly strength (0.25x, 0.5x, 1x, 2x and 4x the calibrated, realistic
``synthetic.strength``) and each number of clips per ID (8, 32, 128 normal and as many
anomalous), the synthesizer's clips go through the project's own log-mel, normalization and
both levels of localization with the params in ``params.yaml``. Printed per row:

* clip level: recall (share of anomalous clips whose region overlaps their injected truth), mean
  IoU with the truth, and the false-region rate on normal clips judged by a threshold set without
  their fold (the negative control);
* ID level: share of IDs whose pooled region overlaps the union of their clips' truth (p below
  ``id_level_alpha``), its mean IoU, and the share of IDs whose negative control (half of the
  normal clips posing as anomalous) found a region.

Usage: python benchmarks/bench_localization_power.py [--types fan,ToyCar] [--ids 2]
       [--clips 8,32,128] [--strengths 0.25,0.5,1,2,4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.audio import STD_FLOOR_DB, normalize_clip  # noqa: E402
from analysis.dcase import MACHINE_IDS  # noqa: E402
from analysis.localization.clip_level import calibrate_clip_level, detect_regions  # noqa: E402
from analysis.localization.id_level import pooled_evidence  # noqa: E402
from analysis.localization.maps import iou, truth_map  # noqa: E402
from analysis.mel import MelGeometry  # noqa: E402
from analysis.params import load_params  # noqa: E402
from analysis.synthesize import ClipJob, render_clip  # noqa: E402
from analysis.workers import process_pool, resolve_n_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def features_of(task: tuple) -> tuple[np.ndarray, list[dict]]:
    """Log-mel (dB, uncropped) and ground-truth rows of one synthetic clip."""
    job, geometry = task
    samples, rows = render_clip(job)
    return geometry.log_mel(samples.astype(np.float32) / 32768.0), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="fan,ToyCar")
    parser.add_argument("--ids", type=int, default=2)
    parser.add_argument("--clips", default="8,32,128")
    parser.add_argument("--strengths", default="0.25,0.5,1,2,4")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    loc, seed = params["localization"], params["synthetic"]["seed"]
    geometry = MelGeometry.from_params(params)
    sizes = [int(x) for x in args.clips.split(",")]
    strengths = [float(x) for x in args.strengths.split(",")]
    n_max, n_train = max(sizes), 6
    print(
        f"params.yaml localization: clip_false_region_rate {loc['clip_false_region_rate']}, "
        f"id_level_alpha {loc['id_level_alpha']}, {loc['n_permutations']} permutations"
    )
    header = (
        f"{'type':12s} {'strength':>8s} {'clips/ID':>8s} | {'clip recall':>11s} {'clip IoU':>8s} "
        f"{'false rate':>10s} | {'ID found':>8s} {'ID IoU':>6s} {'neg. ctrl':>9s}"
    )
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    with process_pool(resolve_n_jobs(0)) as pool:
        for machine_type in args.types.split(","):
            ids = MACHINE_IDS[machine_type][: args.ids]
            normal, anomalous, truth = {}, {}, {}
            for mid in ids:
                jobs = [
                    ClipJob(machine_type, mid, "train", 0, i, seed, 1.0) for i in range(n_train)
                ]
                jobs += [ClipJob(machine_type, mid, "test", 0, i, seed, 1.0) for i in range(n_max)]
                out = list(pool.map(features_of, [(j, geometry) for j in jobs], chunksize=4))
                train = np.concatenate([x for x, _ in out[:n_train]], axis=1)
                mean, std = train.mean(axis=1), np.maximum(train.std(axis=1), STD_FLOOR_DB)
                normalized = [
                    normalize_clip(x, geometry, "train_per_bin", mean, std)
                    for x, _ in out[n_train:]
                ]
                normal[mid] = np.stack(normalized).astype(np.float64)
                for strength in strengths:
                    jobs = [
                        ClipJob(machine_type, mid, "test", 1, i, seed, strength)
                        for i in range(n_max)
                    ]
                    out = list(pool.map(features_of, [(j, geometry) for j in jobs], chunksize=4))
                    anomalous[mid, strength] = np.stack(
                        [normalize_clip(x, geometry, "train_per_bin", mean, std) for x, _ in out]
                    ).astype(np.float64)
                    truth[mid, strength] = [truth_map(rows, geometry) for _, rows in out]
            for n in sizes:
                calibration = calibrate_clip_level({mid: normal[mid][:n] for mid in ids}, loc)
                threshold, cell_level = calibration.threshold, calibration.cell_level
                false_rate = np.concatenate(list(calibration.flagged.values())).mean()
                for strength in strengths:
                    hits, ious, id_found, id_ious, controls = [], [], [], [], []
                    for mid in ids:
                        clips = anomalous[mid, strength][:n]
                        truths = truth[mid, strength][:n]
                        regions, crit = detect_regions(
                            normal[mid][:n], clips, threshold, loc, cell_level
                        )
                        for region, level, t in zip(regions, crit, truths, strict=True):
                            found = level > threshold
                            hits.append(bool(found and (region & t).any()))
                            ious.append(iou(region, t) if found else 0.0)
                        union = np.any(truths, axis=0)
                        pooled = pooled_evidence(normal[mid][:n], clips, loc, seed=n)
                        found = pooled["p_value"] < loc["id_level_alpha"] and bool(
                            (pooled["region"] & union).any()
                        )
                        id_found.append(found)
                        id_ious.append(iou(pooled["region"], union) if found else 0.0)
                        x = normal[mid][:n]
                        if x.shape[0] >= 4:
                            control = pooled_evidence(x[1::2], x[0::2], loc, seed=n + 1)
                            controls.append(
                                control["p_value"] < loc["id_level_alpha"]
                                and control["region"].any()
                            )
                    print(
                        f"{machine_type:12s} {strength:7.2f}x {n:8d} | {np.mean(hits):11.2f} "
                        f"{np.mean(ious):8.2f} {false_rate:10.1%} | {np.mean(id_found):8.2f} "
                        f"{np.mean(id_ious):6.2f} {np.mean(controls) if controls else float('nan'):9.2f}",
                        flush=True,
                    )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
