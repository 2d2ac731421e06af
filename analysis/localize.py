"""Stage ``localize@TYPE``: where real anomalies sit in the log-mel spectrogram.

Per machine ID, over the normalized test features:

* the seed notebook's maps: mean normal, mean anomaly, their difference, and
  ``dev`` = mean over anomaly clips of |anomaly - mean normal|;
* ``excess`` = ``dev`` minus the same measure on normal clips, each normal
  clip compared with the mean of the *other* normal clips (leave-one-out), so
  that ordinary clip-to-clip variability does not count as anomaly; with its
  frequency profile (mean over time) and time profile (mean over mel);
* per anomaly clip, a region: a z-map against the ID's normal clips (per-bin
  scale from leave-one-out normal residuals), smoothed, thresholded at the
  level that only ``normal_pixel_pass_rate`` of normal pixels pass, with
  small pieces removed; measured by :func:`analysis.regions.region_features`.
  Where ground truth exists (the synthetic default), each region is scored
  against it (IoU, band-centre error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from analysis.io import load_npz, log, read_csv, save_npz, write_csv, write_json
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features

REGION_COLUMNS = (
    "file",
    "machine_id",
    "found",
    *FEATURE_COLUMNS,
    "band_centre_hz",
    "truth_kind",
    "iou",
    "centre_error_bins",
)


def loo_means(normal: np.ndarray) -> np.ndarray:
    """For each normal clip, the mean of all the other normal clips."""
    n = normal.shape[0]
    return (normal.sum(axis=0, keepdims=True) - normal) / (n - 1)


def localization_maps(normal: np.ndarray, anomaly: np.ndarray) -> dict[str, np.ndarray]:
    """The seed's maps plus the excess over normal variability, with profiles.

    Parameters
    ----------
    normal, anomaly
        (n, n_mels, T) normalized log-mels of one machine ID (n_normal >= 2).
    """
    mean_norm = normal.mean(axis=0)
    mean_anom = anomaly.mean(axis=0)
    dev = np.abs(anomaly - mean_norm).mean(axis=0)
    dev_normal = np.abs(normal - loo_means(normal)).mean(axis=0)
    excess = dev - dev_normal
    return {
        "mean_norm": mean_norm,
        "mean_anom": mean_anom,
        "diff": mean_anom - mean_norm,
        "dev": dev,
        "dev_normal": dev_normal,
        "excess": excess,
        "excess_freq_profile": excess.mean(axis=1),
        "excess_time_profile": excess.mean(axis=0),
    }


def z_maps(
    normal: np.ndarray, clips: np.ndarray, smooth: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed |z| of ``clips`` and of the normal clips (leave-one-out) against the normals.

    The scale is per mel bin: the RMS of leave-one-out normal residuals over
    clips and frames (per-pixel scales are too noisy with ~100 normal clips).
    Smoothing is a box mean of the signed z, so consistent shifts (a tone that
    is lost, a band that rises) survive and isolated noisy pixels do not.
    """
    normal_residual = normal - loo_means(normal)
    scale = np.sqrt(np.mean(normal_residual**2, axis=(0, 2)))[None, :, None] + 1e-6
    size = (1, *smooth)
    z_clips = np.abs(
        ndimage.uniform_filter((clips - normal.mean(axis=0)) / scale, size=size, mode="nearest")
    )
    z_normal = np.abs(ndimage.uniform_filter(normal_residual / scale, size=size, mode="nearest"))
    return z_clips, z_normal


def clean_region(mask: np.ndarray, min_cells: int) -> np.ndarray:
    """Drop connected pieces (8-connectivity) smaller than ``min_cells``."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_cells
    keep[0] = False
    return keep[labels]


def detect_regions(
    normal: np.ndarray,
    anomaly: np.ndarray,
    pass_rate: float,
    smooth: tuple[int, int],
    min_cells: int,
) -> tuple[np.ndarray, float]:
    """Per-clip anomaly regions, (n_anomaly, n_mels, T) bool, and the threshold used."""
    z_anom, z_normal = z_maps(normal, anomaly, smooth)
    threshold = float(np.quantile(z_normal, 1.0 - pass_rate))
    regions = np.stack([clean_region(z > threshold, min_cells) for z in z_anom])
    return regions, threshold


def truth_map(rows: list[dict[str, str]], geometry: MelGeometry) -> np.ndarray:
    """Ground-truth rectangles (Hz, seconds) of one clip rasterized on (n_mels, T)."""
    out = np.zeros(geometry.spectrogram_shape, dtype=bool)
    for row in rows:
        lo, hi = geometry.bins_for_band(float(row["f_lo_hz"]), float(row["f_hi_hz"]))
        t0 = int(np.floor(geometry.seconds_to_frame(float(row["t_start_s"]))))
        t1 = int(np.ceil(geometry.seconds_to_frame(float(row["t_end_s"]))))
        out[lo : hi + 1, max(t0, 0) : min(t1 + 1, geometry.target_T)] = True
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else float("nan")


def classify_pattern(features: dict[str, np.ndarray], T: int) -> str:
    """A plain-words label for a set of regions, from their median features."""
    if features["time_coverage"].size == 0 or np.all(np.isnan(features["time_coverage"])):
        return "none found"
    coverage = float(np.nanmedian(features["time_coverage"]))
    segments = float(np.nanmedian(features["n_segments"]))
    mean_len = float(np.nanmedian(features["mean_seg_len_frames"]))
    band = float(np.nanmedian(features["band_fraction"]))
    bands = float(np.nanmedian(features["n_bands"]))
    width = "narrow" if band <= 0.12 else "broad"
    if coverage >= 0.8 and segments <= 2:
        kind = "stationary"
    elif mean_len <= 0.05 * T:
        kind = "transient"
    else:
        kind = "windowed"
    lines = ", several lines" if bands >= 2 else ""
    return f"{kind}, {width} band{lines}"


def localize(
    params: dict[str, Any],
    machine_type: str,
    features_dir: str | Path | None = None,
    out_dir: str | Path = "build/localization",
) -> Path:
    """Localize the real anomalies of one machine type; write ``build/localization/TYPE.*``.

    Parameters
    ----------
    params
        Validated params; reads ``localization.*`` and the mel geometry in ``features.*``.
    """
    loc = params["localization"]
    geometry = MelGeometry.from_params(params)
    features_dir = Path(features_dir or f"build/features/{machine_type}")
    data = load_npz(features_dir / "test.npz")
    truth_rows = read_csv(features_dir / "ground_truth.csv")
    truth_by_file: dict[str, list[dict[str, str]]] = {}
    for row in truth_rows:
        truth_by_file.setdefault(row["file"], []).append(row)
    smooth = (loc["smooth_bins"], loc["smooth_frames"])

    arrays: dict[str, np.ndarray] = {}
    region_rows: list[dict[str, Any]] = []
    all_regions: list[np.ndarray] = []
    region_files: list[str] = []
    per_id: dict[str, Any] = {}
    for machine_id in sorted(set(data["machine_id"].tolist())):
        pick = data["machine_id"] == machine_id
        normal = data["logmel"][pick & (data["label"] == 0)].astype(np.float64)
        anomaly = data["logmel"][pick & (data["label"] == 1)].astype(np.float64)
        files = data["file"][pick & (data["label"] == 1)].tolist()
        summary: dict[str, Any] = {
            "n_normal": int(normal.shape[0]),
            "n_anomaly": int(anomaly.shape[0]),
        }
        per_id[machine_id] = summary
        if normal.shape[0] < loc["min_normal_clips"] or anomaly.shape[0] == 0:
            summary["status"] = (
                f"not enough evidence: {normal.shape[0]} normal and {anomaly.shape[0]} anomalous test clips "
                f"(needs at least {loc['min_normal_clips']} normal and 1 anomalous)"
            )
            log(f"localize {machine_type}: {machine_id}: {summary['status']}")
            continue
        maps = localization_maps(normal, anomaly)
        arrays.update({f"{machine_id}__{k}": v.astype(np.float32) for k, v in maps.items()})
        regions, threshold = detect_regions(
            normal, anomaly, loc["normal_pixel_pass_rate"], smooth, loc["min_region_cells"]
        )
        feats = region_features(regions)
        found = ~np.isnan(feats["area_fraction"])
        ious, centre_errors = [], []
        for i, file in enumerate(files):
            row = {"file": file, "machine_id": machine_id, "found": int(found[i])}
            row.update({c: feats[c][i] for c in FEATURE_COLUMNS})
            row["band_centre_hz"] = (
                float(geometry.bin_to_hz(feats["band_centre_bin"][i])) if found[i] else None
            )
            if file in truth_by_file:
                truth = truth_map(truth_by_file[file], geometry)
                row["truth_kind"] = truth_by_file[file][0]["kind"]
                row["iou"] = iou(regions[i], truth) if found[i] else 0.0
                ious.append(row["iou"])
                if found[i]:
                    truth_centre = region_features(truth)["band_centre_bin"][0]
                    row["centre_error_bins"] = abs(feats["band_centre_bin"][i] - truth_centre)
                    centre_errors.append(row["centre_error_bins"])
            region_rows.append(row)
        all_regions.append(regions)
        region_files.extend(files)
        dev, excess = maps["dev"], maps["excess"]
        dev_peak = np.unravel_index(np.argmax(dev), dev.shape)
        excess_peak = np.unravel_index(np.argmax(excess), excess.shape)
        summary.update(
            {
                "status": "ok",
                "dev_peak_mel": int(dev_peak[0]),
                "dev_peak_frame": int(dev_peak[1]),
                "dev_peak_hz": float(geometry.bin_to_hz(dev_peak[0])),
                "excess_peak_mel": int(excess_peak[0]),
                "excess_peak_frame": int(excess_peak[1]),
                "excess_peak_hz": float(geometry.bin_to_hz(excess_peak[0])),
                "excess_max": float(excess.max()),
                "diff_min": float(maps["diff"].min()),
                "diff_max": float(maps["diff"].max()),
                "threshold_abs_z": threshold,
                "n_regions_found": int(found.sum()),
                "no_region_share": float(1 - found.mean()),
                "pattern": classify_pattern(
                    {k: v[found] for k, v in feats.items()}, geometry.target_T
                ),
                "mean_iou": float(np.mean(ious)) if ious else None,
                "median_centre_error_bins": float(np.median(centre_errors))
                if centre_errors
                else None,
            }
        )
    found_rows = [r for r in region_rows if r["found"]]
    type_feats = {c: np.array([r[c] for r in found_rows], dtype=float) for c in FEATURE_COLUMNS}
    ious = [r["iou"] for r in region_rows if r.get("iou") is not None]
    type_summary = {
        "machine_type": machine_type,
        "n_anomaly": len(region_rows),
        "n_regions_found": len(found_rows),
        "no_region_share": float(1 - len(found_rows) / len(region_rows)) if region_rows else None,
        "pattern": classify_pattern(type_feats, geometry.target_T),
        "has_ground_truth": bool(truth_rows),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "ids": per_id,
    }
    out_dir = Path(out_dir)
    regions = (
        np.concatenate(all_regions)
        if all_regions
        else np.zeros((0, *geometry.spectrogram_shape), bool)
    )
    save_npz(
        out_dir / f"{machine_type}.npz",
        regions=regions,
        region_files=np.array(region_files, dtype=str),
        **arrays,
    )
    write_csv(out_dir / f"{machine_type}.regions.csv", region_rows, REGION_COLUMNS)
    write_json(out_dir / f"{machine_type}.json", type_summary)
    log(
        f"localize {machine_type}: regions in {len(found_rows)}/{len(region_rows)} anomaly clips"
        + (f", mean IoU with ground truth {type_summary['mean_iou']:.2f}" if ious else "")
    )
    return out_dir
