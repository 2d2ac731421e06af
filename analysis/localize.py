"""Stage ``localize@TYPE``: where real anomalies sit in the log-mel spectrogram, with two
levels of evidence, each calibrated on data it does not judge.

Per machine ID, over the normalized test features:

* the seed notebook's maps: mean normal, mean anomaly, their difference, and
  ``dev`` = mean over anomaly clips of |anomaly - mean normal|, and ``excess``
  = ``dev`` minus the same measure on normal clips (leave-one-out), with its
  frequency and time profiles;
* **clip level**: per anomalous clip, a region of its z-map against the ID's
  normal clips (per-cell scale pooled over a window of frames, so active
  windows are not under-scaled), box-smoothed, above a threshold calibrated
  on normal clips only: each normal clip's *critical level* (the highest
  threshold at which it still has a region) is measured against a reference
  that excludes its fold, and the threshold is the level that at most
  ``clip_false_region_rate`` of them exceed (pooled over the type's IDs). The
  false-region rate is then measured on normal clips that took no part in
  calibrating the threshold they are judged by (cross-fitting over folds);
* **ID level (pooled)**: regions of the anomalous clips' mean over the normal
  clips' mean at several time scales, significant against a permutation null of
  normal-vs-normal splits (see :func:`pooled_evidence`), with a p-value per ID.
  This sees anomalies below one clip's noise. It is also computed on two
  halves of the anomalous clips (alternate files), so a fit can be scored on
  a half it was not fitted to, and on a negative control (half of the normal
  clips posing as anomalous), which must find nothing.

Region features come from :func:`analysis.regions.region_features`. Where
ground truth exists (the synthetic default), regions are scored against it.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from analysis.io import load_npz, log, read_csv, save_npz, write_csv, write_json
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features
from analysis.workers import parallel_map, resolve_n_jobs

REGION_COLUMNS = (
    "file",
    "machine_id",
    "found",
    *FEATURE_COLUMNS,
    "band_centre_hz",
    "critical_level",
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


# ----------------------------------------------------------------------------- clip level


def reference_stats(normal: np.ndarray, window_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean normal map and a per-cell scale from reference normal clips.

    The scale is the RMS of the normal clips' residuals per mel bin, pooled over
    clips and over a window of ``window_frames`` frames around each frame, so an
    active window (toy machines, valve clicks) gets its own, larger scale instead
    of the clip-wide one that under-scales it.
    """
    n = normal.shape[0]
    mean = normal.mean(axis=0)
    var = ((normal - mean) ** 2).mean(axis=0) * (n / max(n - 1, 1))
    var = ndimage.uniform_filter1d(
        var, size=min(window_frames, var.shape[1]), axis=1, mode="nearest"
    )
    return mean, np.sqrt(var) + 1e-6


def z_maps(
    clips: np.ndarray, mean: np.ndarray, scale: np.ndarray, smooth: tuple[int, int]
) -> np.ndarray:
    """|box-smoothed signed z| of ``clips`` against a reference (mean, scale).

    Smoothing the signed z keeps consistent shifts (a tone that is lost, a band
    that rises) and averages isolated noisy cells away.
    """
    z = (clips - mean) / scale
    return np.abs(ndimage.uniform_filter(z, size=(1, *smooth), mode="nearest"))


def clean_region(mask: np.ndarray, min_cells: int, merge_gap_frames: int = 0) -> np.ndarray:
    """Drop connected pieces (8-connectivity) smaller than ``min_cells``, then close time gaps
    shorter than ``merge_gap_frames`` between what is left, so fragments of one band become
    one segment. Small pieces go first: closing a noisy mask would join its noise."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_cells
    keep[0] = False
    mask = keep[labels]
    if merge_gap_frames > 1 and mask.any():
        padded = np.pad(mask, ((0, 0), (merge_gap_frames, merge_gap_frames)))
        closed = ndimage.binary_closing(padded, structure=np.ones((1, merge_gap_frames), bool))
        mask = closed[:, merge_gap_frames:-merge_gap_frames]
    return mask


def has_region(z: np.ndarray, threshold: float, min_cells: int) -> bool:
    """Whether ``z > threshold`` holds a connected piece of at least ``min_cells`` cells."""
    mask = z > threshold
    if np.count_nonzero(mask) < min_cells:
        return False
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    return bool(count) and int(np.bincount(labels.ravel())[1:].max()) >= min_cells


def critical_level(z: np.ndarray, min_cells: int, tol: float = 1e-3) -> float:
    """The highest threshold at which ``z`` still holds a region of ``min_cells`` cells.

    A clip has a region at threshold t exactly when its critical level exceeds t,
    so calibrating a threshold is taking a quantile of normal clips' critical
    levels. Found by bisection (the region only shrinks as t grows).
    """
    return _bisect_level(z, min_cells, tol)


def exceeds_critical_level(
    z: np.ndarray, threshold: float, min_cells: int, tol: float = 1e-3
) -> bool:
    """Exactly ``critical_level(z, min_cells, tol) > threshold``, with less work.

    No region at the threshold means the level cannot exceed it (one labelling
    instead of a bisection); otherwise the same bisection runs and stops once
    its lower end passes the threshold or its upper end falls to it, since the
    answer can then no longer change.
    """
    if threshold < 0:  # a map without any region has level 0, which exceeds a negative t
        return critical_level(z, min_cells, tol) > threshold
    if not has_region(z, threshold, min_cells):
        return False
    level = _bisect_level(z, min_cells, tol, lambda lo, hi: lo > threshold or hi <= threshold)
    return level > threshold


def _bisect_level(z: np.ndarray, min_cells: int, tol: float, stop=None) -> float:
    lo, hi = 0.0, float(z.max())
    if not has_region(z, lo, min_cells):
        return 0.0
    while hi - lo > tol * max(hi, 1.0) and not (stop and stop(lo, hi)):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if has_region(z, mid, min_cells) else (lo, mid)
    return lo


def fold_of(n: int, n_folds: int) -> np.ndarray:
    """Fold index of each of ``n`` clips (in file order), round robin."""
    return np.arange(n) % max(1, min(n_folds, n))


CELL_SAMPLE = 4096  # out-of-fold |z| cells kept per normal clip for the delineation level


def out_of_fold_levels(
    normal: np.ndarray, loc: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Critical levels of every normal clip against a reference that excludes its fold.

    Returns the levels, the fold of each clip, and an evenly spaced sample of
    every clip's out-of-fold |z| cells (for :func:`delineation_level`). No clip
    is ever part of the reference it is measured against.
    """
    normal = np.asarray(normal, dtype=np.float64)  # no copy when it already is
    smooth = (loc["smooth_bins"], loc["smooth_frames"])
    folds = fold_of(normal.shape[0], loc["n_folds"])
    levels = np.zeros(normal.shape[0])
    cells = []
    for k in np.unique(folds):
        mean, scale = reference_stats(normal[folds != k], loc["window_frames"])
        for i in np.flatnonzero(folds == k):
            z = z_maps(normal[i : i + 1], mean, scale, smooth)[0]
            levels[i] = critical_level(z, loc["min_region_cells"])
            cells.append(z.ravel()[:: max(1, z.size // CELL_SAMPLE)])
    return levels, folds, np.concatenate(cells) if cells else np.zeros(0)


def delineation_level(cells: np.ndarray, loc: dict[str, Any]) -> float:
    """The |z| that only ``region_cell_rate`` of normal cells (out of fold) pass.

    A detected clip's region is drawn at the higher of this and the detection
    threshold, so noise next to a weak anomaly does not join its region.
    """
    return float(np.quantile(cells, 1.0 - loc["region_cell_rate"])) if cells.size else 0.0


def calibrated_threshold(levels: np.ndarray, rate: float) -> float:
    """The threshold that at most ``rate`` of these normal critical levels exceed.

    The "higher" quantile, so with few clips the threshold errs on the side of
    fewer false regions.
    """
    return float(np.quantile(levels, 1.0 - rate, method="higher"))


def out_of_sample_false_rate(levels: np.ndarray, folds: np.ndarray, rate: float) -> np.ndarray:
    """Per normal clip: whether it has a region at a threshold calibrated without its fold."""
    flagged = np.zeros(levels.size, dtype=bool)
    for k in np.unique(folds):
        others = levels[folds != k]
        if others.size:
            flagged[folds == k] = levels[folds == k] > calibrated_threshold(others, rate)
    return flagged


@dataclass(frozen=True)
class ClipCalibration:
    """The clip level's calibration for one machine type (see :func:`calibrate_clip_level`)."""

    threshold: float  # a clip has a region when its critical level passes this
    cell_level: float  # a detected clip's region is drawn at max(threshold, cell_level)
    flagged: dict[str, np.ndarray]  # per ID: normal clips with a region at a threshold set
    #                                  without their fold (the out-of-sample false regions)


def calibrate_clip_level(
    normal_by_id: dict[str, np.ndarray], loc: dict[str, Any], mapper: Callable = map
) -> ClipCalibration:
    """Calibrate the clip level on a machine type's normal clips, pooled over its IDs.

    Each normal clip's critical level is measured against the other folds of its
    ID (:func:`out_of_fold_levels`); the threshold is the level at most
    ``clip_false_region_rate`` of them exceed, and each clip is judged for the
    false-region rate by a threshold set without its fold. ``mapper`` (a pool's
    ``map``) measures the IDs in parallel; results do not depend on it.
    """
    rate = loc["clip_false_region_rate"]
    levels, folds, owners, cells = [], [], [], []
    measured = mapper(partial(out_of_fold_levels, loc=loc), normal_by_id.values())
    for machine_id, (id_levels, id_folds, id_cells) in zip(normal_by_id, measured, strict=True):
        levels.append(id_levels)
        folds.append(id_folds)
        cells.append(id_cells)
        owners += [machine_id] * id_levels.size
    all_levels, all_folds = np.concatenate(levels), np.concatenate(folds)
    flagged = out_of_sample_false_rate(all_levels, all_folds, rate)
    owners_arr = np.array(owners)
    return ClipCalibration(
        threshold=calibrated_threshold(all_levels, rate),
        cell_level=delineation_level(np.concatenate(cells), loc),
        flagged={m: flagged[owners_arr == m] for m in normal_by_id},
    )


# ----------------------------------------------------------------------------- ID level


def time_scales(loc: dict[str, Any], T: int) -> list[int]:
    """The time scales (frames) of the pooled test: short, one window, the whole clip."""
    return sorted({min(loc["smooth_frames"], T), min(loc["window_frames"], T), T})


def scale_maps(clips: np.ndarray, smooth_bins: int, length: int) -> np.ndarray:
    """Per-clip maps box-averaged over ``smooth_bins`` bins and ``length`` frames, flattened
    to (n, cells); the whole-clip scale keeps one column per mel bin."""
    if length >= clips.shape[2]:
        out = ndimage.uniform_filter1d(clips.mean(axis=2), size=smooth_bins, axis=1, mode="nearest")
    else:
        out = ndimage.uniform_filter(clips, size=(1, smooth_bins, length), mode="nearest")
    return out.reshape(clips.shape[0], -1)


def welch_t(sum_a, sq_a, n_a, sum_b, sq_b, n_b) -> np.ndarray:
    """Welch's t of group a minus group b from sums and sums of squares (broadcasting)."""
    mean_a, mean_b = sum_a / n_a, sum_b / n_b
    var_a = np.maximum(sq_a - sum_a * mean_a, 0) / max(n_a - 1, 1)
    var_b = np.maximum(sq_b - sum_b * mean_b, 0) / max(n_b - 1, 1)
    return (mean_a - mean_b) / np.sqrt(var_a / n_a + var_b / n_b + 1e-12)


# Rows significant over the whole clip extend over the frames where the window-scale t agrees in
# sign and passes this pointwise level (two-sided p about 0.01 for the usual group sizes).
EXTENT_T = 2.6


def pooled_evidence(
    normal: np.ndarray, anomaly: np.ndarray, loc: dict[str, Any], seed: int
) -> dict[str, Any]:
    """ID-level regions: where the anomalous clips' mean differs from the normal clips' mean
    by more than normal-vs-normal splits of the same ID ever show.

    At each time scale (:func:`time_scales`), Welch's t per cell between the
    anomalous and the normal clips is compared with the maximum |t| of
    ``n_permutations`` random splits of the normal clips alone (a group the size
    of the anomalous group, or half the normals, against the rest). A cell is
    significant when its |t| passes the ``1 - alpha / n_scales`` quantile of its
    scale's null maxima (family-wise error over cells and scales at level
    ``id_level_alpha``). This sees anomalies far below one clip's noise, which
    no single clip's z-map shows. Rows significant over the whole clip extend
    over the frames where the window-scale t has the same sign and |t| >= ``EXTENT_T``.

    Returns
    -------
    dict
        ``region`` (n_mels, T) bool, ``p_value`` (Bonferroni over scales),
        ``thresholds`` and observed ``max_t`` per scale, ``n_permutations``.
    """
    scales = time_scales(loc, normal.shape[2])
    return pooled_test(
        {L: scale_maps(normal, loc["smooth_bins"], L) for L in scales},
        {L: scale_maps(anomaly, loc["smooth_bins"], L) for L in scales},
        normal.shape[1:],
        loc,
        seed,
    )


def null_group_size(n_normal: int, n_anomalous: int) -> int:
    """Size of the pseudo-anomalous group in the normal-vs-normal splits."""
    return max(1, min(n_anomalous, n_normal // 2))


def permutation_null(
    normal_maps: dict[int, np.ndarray], m: int, n_perm: int, seed: int
) -> dict[int, np.ndarray]:
    """Per time scale, the maximum |Welch t| over cells of ``n_perm`` random splits of the
    normal clips into ``m`` against the rest. Depends on the normal clips only."""
    n_norm = next(iter(normal_maps.values())).shape[0]
    rng = np.random.default_rng(seed)
    picks = np.zeros((n_perm, n_norm), dtype=np.float32)
    for r in range(n_perm):
        picks[r, rng.choice(n_norm, m, replace=False)] = 1.0
    return {
        length: max_abs_split_t(picks, np.asarray(x, dtype=np.float32), m)
        for length, x in normal_maps.items()
    }


def max_abs_split_t(picks: np.ndarray, x: np.ndarray, m: int, chunk: int = 8) -> np.ndarray:
    """max over cells of |Welch t| for each split (row of ``picks``: 1 = in the group of ``m``).

    The same statistic as :func:`welch_t`, computed in float32 a few splits at a
    time with in-place arithmetic: the (splits, cells) temporaries otherwise
    dominate the localize stage's time (100 splits x 40,960 cells per ID and scale).
    """
    n = x.shape[0]
    x_sq = np.square(x)
    total, total_sq = x.sum(axis=0, dtype=np.float64), x_sq.sum(axis=0, dtype=np.float64)
    total, total_sq = total.astype(np.float32), total_sq.astype(np.float32)
    out = np.empty(picks.shape[0])
    for start in range(0, picks.shape[0], chunk):
        rows = picks[start : start + chunk]
        sum_a, sq_a = rows @ x, rows @ x_sq
        sum_b, sq_b = total - sum_a, total_sq - sq_a
        # var_a / n_a with var_a = (sq - sum * mean) / (n_a - 1), clipped at 0; likewise b.
        sq_a -= sum_a * sum_a / m
        np.maximum(sq_a, 0, out=sq_a)
        sq_a /= max(m - 1, 1) * m
        sq_b -= sum_b * sum_b / (n - m)
        np.maximum(sq_b, 0, out=sq_b)
        sq_b /= max(n - m - 1, 1) * (n - m)
        sq_a += sq_b
        sq_a += 1e-12
        np.sqrt(sq_a, out=sq_a)
        sum_a /= m
        sum_b /= n - m
        sum_a -= sum_b
        np.abs(sum_a, out=sum_a)
        sum_a /= sq_a
        out[start : start + chunk] = sum_a.max(axis=1)
    return out


def pooled_test(
    normal_maps: dict[int, np.ndarray],
    anomaly_maps: dict[int, np.ndarray],
    shape: tuple[int, int],
    loc: dict[str, Any],
    seed: int,
    null: dict[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """:func:`pooled_evidence` on per-clip maps already averaged at each time scale
    (:func:`scale_maps`), so one ID's maps serve all its tests (all clips, halves, control).

    ``null`` (from :func:`permutation_null` with the same normal clips and
    :func:`null_group_size`) may be passed in to share it between tests.
    """
    n_mels, T = shape
    scales = sorted(normal_maps)
    n_norm = normal_maps[scales[0]].shape[0]
    n_anom = anomaly_maps[scales[0]].shape[0]
    alpha, n_perm = loc["id_level_alpha"], loc["n_permutations"]
    m = null_group_size(n_norm, n_anom)
    if null is None:
        null = permutation_null(normal_maps, m, n_perm, seed)
    region = np.zeros((n_mels, T), dtype=bool)
    thresholds, max_t, p_values = {}, {}, []
    t_by_scale = {}
    for length in scales:
        x, y = normal_maps[length], anomaly_maps[length]
        total, total_sq = x.sum(axis=0), (x**2).sum(axis=0)
        observed = welch_t(y.sum(0), (y**2).sum(0), n_anom, total, total_sq, n_norm)
        threshold = float(np.quantile(null[length], 1 - alpha / len(scales), method="higher"))
        peak = float(np.abs(observed).max())
        thresholds[str(length)], max_t[str(length)] = threshold, peak
        p_values.append((1 + np.count_nonzero(null[length] >= peak)) / (1 + n_perm))
        t_by_scale[length] = observed.reshape(n_mels, -1)
        if length < T:
            region |= np.abs(t_by_scale[length]) > threshold
    whole = t_by_scale[T][:, 0]
    window = (
        t_by_scale[max(s for s in scales if s < T)]
        if len(scales) > 1
        else np.sign(whole)[:, None] * np.ones((1, T))
    )
    for b in np.flatnonzero(np.abs(whole) > thresholds[str(T)]):
        region[b] |= np.sign(window[b]) * np.sign(whole[b]) * np.abs(window[b]) >= EXTENT_T
    region = clean_region(region, loc["min_region_cells"], loc["merge_gap_frames"])
    return {
        "region": region,
        "p_value": float(min(1.0, len(scales) * min(p_values))),
        "thresholds": thresholds,
        "max_t": max_t,
        "n_permutations": n_perm,
        "group_size_null": m,
    }


def detect_regions(
    normal: np.ndarray,
    anomaly: np.ndarray,
    threshold: float,
    loc: dict[str, Any],
    cell_level: float = 0.0,
    with_levels: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Clip-level regions of anomalous clips against all normal clips of their ID.

    A clip is detected when its critical level passes ``threshold``; its region
    is drawn at ``max(threshold, cell_level)``. Returns the (n_anomaly, n_mels,
    T) bool regions and each clip's critical level (None without
    ``with_levels``: the same regions, found with less work).
    """
    smooth = (loc["smooth_bins"], loc["smooth_frames"])
    mean, scale = reference_stats(normal, loc["window_frames"])
    z = z_maps(anomaly, mean, scale, smooth)
    min_cells = loc["min_region_cells"]
    levels = np.array([critical_level(zi, min_cells) for zi in z]) if with_levels else None
    # A clip has a region exactly when its critical level passes the threshold (as calibrated);
    # gap closing then only reshapes the region it has.
    detected = (
        levels > threshold
        if levels is not None
        else [exceeds_critical_level(zi, threshold, min_cells) for zi in z]
    )
    regions = np.stack(
        [
            clean_region(zi > max(threshold, cell_level), min_cells, loc["merge_gap_frames"])
            if found
            else np.zeros(zi.shape, dtype=bool)
            for zi, found in zip(z, detected, strict=True)
        ]
    )
    return regions, levels


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


def alternate_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two halves of n anomalous clips in file order (alternate files)."""
    idx = np.arange(n)
    return idx[0::2], idx[1::2]


def _features_row(region: np.ndarray) -> dict[str, float | None]:
    feats = region_features(region)
    return {c: (None if np.isnan(feats[c][0]) else float(feats[c][0])) for c in FEATURE_COLUMNS}


def _id_level(
    normal, anomaly, loc, key: str, truth: np.ndarray | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Pooled evidence on all anomalous clips, on each half, and a normal-only negative control.

    Returns the summary and the region of each part (``all``, ``fit``, ``holdout``; empty
    where the test found none).
    """
    seed = zlib.crc32(key.encode())
    alpha = loc["id_level_alpha"]
    out: dict[str, Any] = {}
    regions = {}
    first, second = alternate_halves(anomaly.shape[0])
    scales = time_scales(loc, normal.shape[2])
    x = {L: scale_maps(normal, loc["smooth_bins"], L) for L in scales}
    y = {L: scale_maps(anomaly, loc["smooth_bins"], L) for L in scales}
    shape = normal.shape[1:]
    parts = {"all": slice(None), "fit": first, "holdout": second}
    nulls: dict[int, dict[int, np.ndarray]] = {}  # one null per group size, shared by the parts
    for part, pick in parts.items():
        clips = {L: v[pick] for L, v in y.items()}
        n_part = clips[scales[0]].shape[0]
        if n_part == 0:
            out[part] = {"found": False, "p_value": None, "features": None}
            continue
        m = null_group_size(normal.shape[0], n_part)
        if m not in nulls:
            nulls[m] = permutation_null(x, m, loc["n_permutations"], seed + m)
        result = pooled_test(x, clips, shape, loc, seed, nulls[m])
        found = bool(result["p_value"] < alpha and result["region"].any())
        regions[part] = result["region"] if found else np.zeros_like(result["region"])
        out[part] = {
            "found": found,
            "p_value": result["p_value"],
            "max_t": result["max_t"],
            "thresholds": result["thresholds"],
            "features": _features_row(regions[part]) if found else None,
            "rows": np.flatnonzero(regions[part].any(axis=1)).tolist(),
        }
    # Negative control: half of the normal clips posing as anomalous against the other half.
    n_norm = normal.shape[0]
    if n_norm >= 4:
        a, b = np.arange(0, n_norm, 2), np.arange(1, n_norm, 2)
        control = pooled_test(
            {L: v[b] for L, v in x.items()}, {L: v[a] for L, v in x.items()}, shape, loc, seed + 99
        )
        out["negative_control"] = {
            "found": bool(control["p_value"] < alpha and control["region"].any()),
            "p_value": control["p_value"],
        }
    if truth is not None and "all" in regions:
        out["iou_with_truth_union"] = iou(regions["all"], truth) if out["all"]["found"] else 0.0
    out["n_permutations"] = loc["n_permutations"]
    return out, regions


@dataclass(frozen=True)
class IdTask:
    """What pass 2 of :func:`localize` needs for one machine ID (sent to a pool worker)."""

    machine_type: str
    machine_id: str
    normal: np.ndarray  # (n, n_mels, T) normal test clips of the ID (as stored, float32)
    anomaly: np.ndarray  # (m, n_mels, T) anomalous test clips
    files: list[str]  # the anomalous clips' files
    threshold: float | None  # calibrated clip-level threshold (|z|)
    cell_level: float | None  # a detected clip's region level
    loc: dict[str, Any]  # localization params
    geometry: MelGeometry
    truth_by_file: dict[str, list[dict[str, str]]]  # ground-truth rows of these files


def localize_id(task: IdTask) -> dict[str, Any]:
    """Pass 2 of :func:`localize` for one machine ID: clip-level regions of its anomalous
    clips, their features and IoU with any ground truth, the maps, and the ID-level test.

    Returns ``{"status": ...}`` when there is nothing to localize, else the ID's
    ``arrays`` (for the npz), region ``rows``, ``regions`` (in ``task.files`` order)
    and ``summary``.
    """
    machine_type, machine_id, loc, geometry = (
        task.machine_type,
        task.machine_id,
        task.loc,
        task.geometry,
    )
    if task.anomaly.shape[0] == 0:
        return {"status": "not enough evidence: no anomalous test clips"}
    files, truth_by_file = task.files, task.truth_by_file
    normal, anomaly = task.normal.astype(np.float64), task.anomaly.astype(np.float64)
    threshold, cell_level = task.threshold, task.cell_level
    arrays: dict[str, np.ndarray] = {}
    region_rows: list[dict[str, Any]] = []
    maps = localization_maps(normal, anomaly)
    arrays.update({f"{machine_id}__{k}": v.astype(np.float32) for k, v in maps.items()})
    regions, crit = detect_regions(normal, anomaly, threshold, loc, cell_level)
    feats = region_features(regions)
    found = ~np.isnan(feats["area_fraction"])
    truth_union = np.zeros(geometry.spectrogram_shape, dtype=bool)
    ious, centre_errors = [], []
    for i, file in enumerate(files):
        row = {"file": file, "machine_id": machine_id, "found": int(found[i])}
        row.update({c: feats[c][i] for c in FEATURE_COLUMNS})
        row["critical_level"] = float(crit[i])
        row["band_centre_hz"] = (
            float(geometry.bin_to_hz(feats["band_centre_bin"][i])) if found[i] else None
        )
        if file in truth_by_file:
            truth = truth_map(truth_by_file[file], geometry)
            truth_union |= truth
            row["truth_kind"] = truth_by_file[file][0]["kind"]
            row["iou"] = iou(regions[i], truth) if found[i] else 0.0
            ious.append(row["iou"])
            if found[i]:
                truth_centre = region_features(truth)["band_centre_bin"][0]
                row["centre_error_bins"] = abs(feats["band_centre_bin"][i] - truth_centre)
                centre_errors.append(row["centre_error_bins"])
        region_rows.append(row)
    id_level, pooled_region = _id_level(
        normal,
        anomaly,
        loc,
        f"{machine_type}/{machine_id}",
        truth_union if truth_union.any() else None,
    )
    for part, region in pooled_region.items():
        suffix = "" if part == "all" else f"_{part}"
        arrays[f"{machine_id}__pooled_region{suffix}"] = region
    dev, excess = maps["dev"], maps["excess"]
    dev_peak = np.unravel_index(np.argmax(dev), dev.shape)
    excess_peak = np.unravel_index(np.argmax(excess), excess.shape)
    found_feats = {k: v[found] for k, v in feats.items()}
    summary = {
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
        "n_regions_found": int(found.sum()),
        "no_region_share": float(1 - found.mean()),
        "pattern": classify_pattern(found_feats, geometry.target_T),
        "id_level": id_level,
        "id_level_pattern": classify_pattern(
            {
                k: np.array([v if v is not None else np.nan])
                for k, v in id_level["all"]["features"].items()
            },
            geometry.target_T,
        )
        if id_level["all"]["found"]
        else "none found",
        "mean_iou": float(np.mean(ious)) if ious else None,
        "median_centre_error_bins": float(np.median(centre_errors)) if centre_errors else None,
    }
    return {"arrays": arrays, "rows": region_rows, "regions": regions, "summary": summary}


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
    rate = loc["clip_false_region_rate"]

    # Pass 1: calibrate the clip-level threshold on normal clips (out of fold), pooled over IDs.
    by_id: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    per_id: dict[str, Any] = {}
    for machine_id in sorted(set(data["machine_id"].tolist())):
        pick = data["machine_id"] == machine_id
        # float32 as stored: the workers compute in float64 (half the memory sent to them).
        normal = data["logmel"][pick & (data["label"] == 0)]
        anomaly = data["logmel"][pick & (data["label"] == 1)]
        files = data["file"][pick & (data["label"] == 1)].tolist()
        per_id[machine_id] = {"n_normal": int(normal.shape[0]), "n_anomaly": int(anomaly.shape[0])}
        if normal.shape[0] < loc["min_normal_clips"]:
            per_id[machine_id]["status"] = (
                f"not enough evidence: {normal.shape[0]} normal test clips "
                f"(needs at least {loc['min_normal_clips']})"
            )
            log(f"localize {machine_type}: {machine_id}: {per_id[machine_id]['status']}")
            continue
        by_id[machine_id] = (normal, anomaly, files)
    threshold, cell_level = None, None
    n_jobs = min(resolve_n_jobs(0), len(by_id))
    with contextlib.ExitStack() as stack:
        mapper = parallel_map(stack, n_jobs)  # same bytes on any number of cores
        if by_id:
            calibration = calibrate_clip_level({m: v[0] for m, v in by_id.items()}, loc, mapper)
            threshold, cell_level = calibration.threshold, calibration.cell_level
            for machine_id, flagged in calibration.flagged.items():
                per_id[machine_id]["clip_false_region_rate"] = float(flagged.mean())
                per_id[machine_id]["n_normal_false_regions"] = int(flagged.sum())

        # Pass 2: clip-level regions of anomalous clips, ID-level pooled evidence, maps; the IDs
        # are independent, so they are measured on all cores (map() keeps their order).
        arrays: dict[str, np.ndarray] = {}
        region_rows: list[dict[str, Any]] = []
        all_regions: list[np.ndarray] = []
        region_files: list[str] = []
        tasks = [
            IdTask(
                machine_type,
                machine_id,
                normal,
                anomaly,
                files,
                threshold,
                cell_level,
                loc,
                geometry,
                {f: truth_by_file[f] for f in files if f in truth_by_file},
            )
            for machine_id, (normal, anomaly, files) in by_id.items()
        ]
        for machine_id, result in zip(by_id, mapper(localize_id, tasks), strict=True):
            if "status" in result:
                per_id[machine_id]["status"] = result["status"]
                log(f"localize {machine_type}: {machine_id}: {result['status']}")
                continue
            arrays.update(result["arrays"])
            region_rows.extend(result["rows"])
            all_regions.append(result["regions"])
            region_files.extend(by_id[machine_id][2])
            per_id[machine_id].update(result["summary"])
    found_rows = [r for r in region_rows if r["found"]]
    type_feats = {c: np.array([r[c] for r in found_rows], dtype=float) for c in FEATURE_COLUMNS}
    ious = [r["iou"] for r in region_rows if r.get("iou") is not None]
    calibrated = [s for s in per_id.values() if "clip_false_region_rate" in s]
    n_normal_cal = sum(s["n_normal"] for s in calibrated)
    type_summary = {
        "machine_type": machine_type,
        "n_anomaly": len(region_rows),
        "n_regions_found": len(found_rows),
        "no_region_share": float(1 - len(found_rows) / len(region_rows)) if region_rows else None,
        "pattern": classify_pattern(type_feats, geometry.target_T),
        "has_ground_truth": bool(truth_rows),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "clip_threshold_abs_z": threshold,
        "clip_region_level_abs_z": cell_level,
        "clip_false_region_rate_target": rate,
        "clip_false_region_rate": (
            sum(s["n_normal_false_regions"] for s in calibrated) / n_normal_cal
            if n_normal_cal
            else None
        ),
        "n_normal_calibration": n_normal_cal,
        "id_level_alpha": loc["id_level_alpha"],
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
    n_pooled = sum(1 for s in per_id.values() if s.get("id_level", {}).get("all", {}).get("found"))
    log(
        f"localize {machine_type}: clip-level regions in {len(found_rows)}/{len(region_rows)} "
        f"anomalous clips (false-region rate on held-out normals "
        f"{fmt_rate(type_summary['clip_false_region_rate'])}); ID-level regions in "
        f"{n_pooled}/{len(by_id)} IDs"
        + (f"; mean IoU with ground truth {type_summary['mean_iou']:.2f}" if ious else "")
    )
    return out_dir


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
