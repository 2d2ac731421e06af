"""ID level: the pooled permutation test of an ID's anomalous clips against its normal clips.

At each time scale (:func:`time_scales`), Welch's t per cell between the anomalous
and the normal clips is compared with the maximum |t| of ``n_permutations`` random
normal-vs-normal splits (:func:`permutation_null`); significant cells form the
region (:func:`pooled_test`). :func:`region_found` is the one rule for "found".
:func:`id_level_evidence` runs the test on all anomalous clips, on two halves
(alternate files, so a fit can be scored on a half it was not fitted to) and on a
negative control (half of the normal clips posing as anomalous).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from analysis.localization.maps import clean_region, iou, pad_frames
from analysis.regions import FEATURE_COLUMNS, region_features


def time_scales(loc: dict[str, Any], T: int) -> list[int]:
    """The time scales (frames) of the pooled test: short, one window, the whole clip."""
    return sorted({min(loc["smooth_frames"], T), min(loc["window_frames"], T), T})


def scale_maps(clips: np.ndarray, smooth_bins: int, length: int) -> np.ndarray:
    """Per-clip maps box-averaged over ``smooth_bins`` bins and ``length`` frames, flattened
    to (n, cells); the whole-clip scale keeps one column per mel bin."""
    from scipy import ndimage  # here, not at the top: the report imports only constants

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
MIN_T = 1e-3  # |t| this small is float noise of zero-variance cells, never evidence


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
        # Clips without variance (every split's |t| is 0) leave float noise in the observed t:
        # no |t| at or below MIN_T counts, and the threshold is at least MIN_T.
        threshold = max(
            MIN_T, float(np.quantile(null[length], 1 - alpha / len(scales), method="higher"))
        )
        peak = float(np.abs(observed).max())
        thresholds[str(length)], max_t[str(length)] = threshold, peak
        exceed = np.count_nonzero(null[length] >= peak) if peak > MIN_T else n_perm
        p_values.append((1 + exceed) / (1 + n_perm))
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


def region_found(p_value: float, region: np.ndarray, alpha: float) -> bool:
    """The one rule for "the ID-level test found a region": significant and not empty."""
    return bool(p_value < alpha and region.any())


def _features_row(region: np.ndarray) -> dict[str, float | None]:
    feats = region_features(region)
    return {c: (None if np.isnan(feats[c][0]) else float(feats[c][0])) for c in FEATURE_COLUMNS}


def _part_evidence(
    x: dict[int, np.ndarray],
    clips: dict[int, np.ndarray],
    shape: tuple[int, int],
    loc: dict[str, Any],
    seed: int,
    nulls: dict[int, dict[int, np.ndarray]],
    frames_total: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """The pooled test of one part of the anomalous clips; its summary and its region (empty
    where nothing was found), padded to ``frames_total`` frames. ``nulls`` caches one
    permutation null per group size."""
    n_normal = next(iter(x.values())).shape[0]
    m = null_group_size(n_normal, next(iter(clips.values())).shape[0])
    if m not in nulls:
        nulls[m] = permutation_null(x, m, loc["n_permutations"], seed + m)
    result = pooled_test(x, clips, shape, loc, seed, nulls[m])
    found = region_found(result["p_value"], result["region"], loc["id_level_alpha"])
    region = pad_frames(
        result["region"] if found else np.zeros_like(result["region"]), frames_total, False
    )
    summary = {
        "found": found,
        "p_value": result["p_value"],
        "max_t": result["max_t"],
        "thresholds": result["thresholds"],
        "features": _features_row(region) if found else None,
        "rows": np.flatnonzero(region.any(axis=1)).tolist(),
    }
    return summary, region


def negative_control(
    x: dict[int, np.ndarray], shape: tuple[int, int], loc: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Half of the normal clips (even files) posing as anomalous against the other half: the
    test must find nothing here."""
    # Even and odd files as strided views (the same values as copies, without copying).
    control = pooled_test(
        {L: v[1::2] for L, v in x.items()},
        {L: v[0::2] for L, v in x.items()},
        shape,
        loc,
        seed + 99,
    )
    return {
        "found": region_found(control["p_value"], control["region"], loc["id_level_alpha"]),
        "p_value": control["p_value"],
    }


def id_level_evidence(
    normal: np.ndarray,
    anomaly: np.ndarray,
    loc: dict[str, Any],
    key: str,
    truth: np.ndarray | None,
    frames_total: int | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Pooled evidence on all anomalous clips, on each half, and a normal-only negative control.

    Parameters
    ----------
    normal, anomaly
        (n, n_mels, T) float64 clips of one machine ID.
    key
        ``"TYPE/ID"``: seeds the permutations (crc32, stable across runs).
    truth
        Union of the ID's ground-truth regions (``frames_total`` frames), or None.
    frames_total
        Frames of the stored maps: the clips hold only their real frames, and the
        regions are padded back to this (their features are fractions of it).

    Returns
    -------
    summary, regions
        The summary (``all``, ``fit``, ``holdout``, ``negative_control`` with at least
        4 normal clips, ``iou_with_truth_union`` with ground truth, ``n_permutations``)
        and the region of each part (empty where the test found none).
    """
    scales = time_scales(loc, normal.shape[2])
    return id_level_evidence_on_maps(
        {L: scale_maps(normal, loc["smooth_bins"], L) for L in scales},
        {L: scale_maps(anomaly, loc["smooth_bins"], L) for L in scales},
        normal.shape[1:],
        loc,
        key,
        truth,
        frames_total,
    )


def id_level_evidence_on_maps(
    x: dict[int, np.ndarray],
    y: dict[int, np.ndarray],
    shape: tuple[int, int],
    loc: dict[str, Any],
    key: str,
    truth: np.ndarray | None,
    frames_total: int | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`id_level_evidence` on the clips' :func:`scale_maps` (``x`` normal, ``y``
    anomalous, per time scale), so a caller can free the clips before the tests run."""
    seed = zlib.crc32(key.encode())
    frames_total = frames_total or shape[1]
    scales = sorted(x)
    out: dict[str, Any] = {}
    regions: dict[str, np.ndarray] = {}
    nulls: dict[int, dict[int, np.ndarray]] = {}  # one null per group size, shared by the parts
    # The halves are alternate files (maps.alternate_halves) as strided views: no copies.
    for part, pick in {
        "all": slice(None),
        "fit": slice(0, None, 2),
        "holdout": slice(1, None, 2),
    }.items():
        clips = {L: v[pick] for L, v in y.items()}
        if clips[scales[0]].shape[0] == 0:
            out[part] = {"found": False, "p_value": None, "features": None}
            continue
        out[part], regions[part] = _part_evidence(x, clips, shape, loc, seed, nulls, frames_total)
    if x[scales[0]].shape[0] >= 4:
        out["negative_control"] = negative_control(x, shape, loc, seed)
    if truth is not None and "all" in regions:
        out["iou_with_truth_union"] = iou(regions["all"], truth) if out["all"]["found"] else 0.0
    out["n_permutations"] = loc["n_permutations"]
    out["p_value_floor"] = p_value_floor(len(scales), loc["n_permutations"])
    return out, regions


def p_value_floor(n_scales: int, n_permutations: int) -> float:
    """The smallest p-value the pooled test can give: no permutation reaching the observed
    maximum at one scale, Bonferroni over the scales. A printed p at this floor means
    "smaller than the permutations can tell"."""
    return min(1.0, n_scales / (1 + n_permutations))
