"""Clip level: a region per anomalous clip, against the normal clips of its machine ID.

Per cell, the clip's z against the normal clips' mean and a scale pooled over a
window of frames (:func:`reference_stats`), box-smoothed (:func:`z_maps`). A clip
has a region at threshold t when ``|z| > t`` holds a connected piece of at least
``min_region_cells`` cells; its *critical level* is the highest such t. The
threshold is calibrated on normal clips only: each normal clip's critical level
is measured against a reference without its fold, and the threshold is the level
that at most ``clip_false_region_rate`` of them exceed (:func:`calibrate_clip_level`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage

from analysis.localization.maps import clean_region


def reference_stats(normal: np.ndarray, window_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean normal map and a per-cell scale from reference normal clips.

    The scale is the RMS of the normal clips' residuals per mel bin, pooled over
    clips and over a window of ``window_frames`` frames around each frame, so an
    active window (toy machines, valve clicks) gets its own, larger scale instead
    of the clip-wide one that under-scales it.
    """
    n = normal.shape[0]
    mean = normal.mean(axis=0)
    residual = normal - mean  # squared in place: one clip-sized temporary, not two
    np.square(residual, out=residual)
    var = residual.mean(axis=0) * (n / max(n - 1, 1))
    del residual
    var = ndimage.uniform_filter1d(
        var, size=min(window_frames, var.shape[1]), axis=1, mode="nearest"
    )
    # The moving sum leaves tiny negative values (float rounding) next to constant cells;
    # their square root would be NaN and silently switch the clip level off.
    return mean, np.sqrt(np.maximum(var, 0.0)) + 1e-6


def signed_z_maps(
    clips: np.ndarray, mean: np.ndarray, scale: np.ndarray, smooth: tuple[int, int]
) -> np.ndarray:
    """Box-smoothed signed z of ``clips`` against a reference (mean, scale).

    Smoothing the signed z keeps consistent shifts (a tone that is lost, a band
    that rises) and averages isolated noisy cells away.
    """
    z = clips - mean
    z /= scale
    return ndimage.uniform_filter(z, size=(1, *smooth), mode="nearest")


def z_maps(
    clips: np.ndarray, mean: np.ndarray, scale: np.ndarray, smooth: tuple[int, int]
) -> np.ndarray:
    """|box-smoothed signed z| of ``clips`` against a reference (see :func:`signed_z_maps`)."""
    return np.abs(signed_z_maps(clips, mean, scale, smooth))


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
PROFILE_MAX_ROWS = 16  # band heights whose profile level is calibrated; wider bands use this one's


def band_profiles(signed_z: np.ndarray, frames: int, max_rows: int = PROFILE_MAX_ROWS) -> list:
    """Every band's time profile in one z-map, per band height.

    Entry ``k - 1`` is the (n_mels - k + 1, T) mean signed z over the k adjacent mel
    rows starting at each row, box-averaged over ``frames`` frames: the statistic
    :func:`grow_bands` compares with its level.
    """
    n_mels, T = signed_z.shape
    cum = np.cumsum(np.pad(signed_z, ((1, 0), (0, 0))), axis=0)
    size = max(1, min(frames, T))
    return [
        ndimage.uniform_filter1d((cum[k:] - cum[:-k]) / k, size=size, axis=1, mode="nearest")
        for k in range(1, min(max_rows, n_mels) + 1)
    ]


def out_of_fold_levels(
    normal: np.ndarray, loc: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Critical levels of every normal clip against a reference that excludes its fold.

    Returns the levels, the fold of each clip, an evenly spaced sample of every
    clip's out-of-fold |z| cells (for :func:`delineation_level`) and, per band
    height, a sample of its band profiles (for :func:`profile_levels`). No clip
    is ever part of the reference it is measured against.
    """
    normal = np.asarray(normal, dtype=np.float64)  # no copy when it already is
    smooth = (loc["smooth_bins"], loc["smooth_frames"])
    n, n_mels, frames = normal.shape
    folds = fold_of(n, loc["n_folds"])
    levels = np.zeros(n)
    if n == 0:
        return levels, folds, np.zeros(0), []
    # The samples are written into arrays made once, in the order the clips are visited: a
    # strided view per clip would keep each clip's whole z-map and band profiles alive (at
    # 800 clips, 4 GB per ID instead of the samples' 0.5 GB).
    cells = np.empty((n, _sample_size(n_mels * frames)))
    profiles = [
        np.empty((n, _sample_size((n_mels - k + 1) * frames)))
        for k in range(1, min(PROFILE_MAX_ROWS, n_mels) + 1)
    ]
    visited = 0
    for k in np.unique(folds):
        mean, scale = reference_stats(normal[folds != k], loc["window_frames"])
        for i in np.flatnonzero(folds == k):
            signed = signed_z_maps(normal[i : i + 1], mean, scale, smooth)[0]
            z = np.abs(signed)
            levels[i] = critical_level(z, loc["min_region_cells"])
            cells[visited] = z.ravel()[:: max(1, z.size // CELL_SAMPLE)]
            by_height = band_profiles(signed, loc["merge_gap_frames"])
            for out, p in zip(profiles, by_height, strict=True):
                out[visited] = p.ravel()[:: max(1, p.size // CELL_SAMPLE)]
            visited += 1
    return levels, folds, cells.ravel(), [p.ravel() for p in profiles]


def _sample_size(size: int) -> int:
    """How many values ``x.ravel()[:: max(1, size // CELL_SAMPLE)]`` keeps of ``size``."""
    step = max(1, size // CELL_SAMPLE)
    return -(-size // step)


def profile_levels(by_height: list[np.ndarray], loc: dict[str, Any]) -> np.ndarray:
    """Per band height, the level that only ``grow_frame_rate`` of normal band profiles pass.

    Both signs count (a band can rise or fall), so the level is the
    ``1 - grow_frame_rate`` quantile of the profiles and their negatives.
    """
    q = 1.0 - loc["grow_frame_rate"]
    return np.array(
        [float(np.quantile(np.concatenate([v, -v]), q)) if v.size else np.inf for v in by_height]
    )


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
    profile_levels: np.ndarray  # per band height (1..PROFILE_MAX_ROWS rows): grow_bands' level


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
    measured = mapper(partial(out_of_fold_levels, loc=loc), normal_by_id.values())
    return pool_calibration(dict(zip(normal_by_id, measured, strict=True)), loc)


def pool_calibration(measured_by_id: dict[str, tuple], loc: dict[str, Any]) -> ClipCalibration:
    """The calibration from each ID's :func:`out_of_fold_levels` (in ID order), pooled.

    Split from :func:`calibrate_clip_level` so a stage can measure the IDs wherever it
    holds their clips (one pool task per ID) and pool the small results here.
    """
    rate = loc["clip_false_region_rate"]
    levels, folds, owners, cells, profiles = [], [], [], [], []
    for machine_id, (id_levels, id_folds, id_cells, id_profiles) in measured_by_id.items():
        levels.append(id_levels)
        folds.append(id_folds)
        cells.append(id_cells)
        profiles.append(id_profiles)
        owners += [machine_id] * id_levels.size
    all_levels, all_folds = np.concatenate(levels), np.concatenate(folds)
    flagged = out_of_sample_false_rate(all_levels, all_folds, rate)
    owners_arr = np.array(owners)
    cell_level = delineation_level(np.concatenate(cells), loc)
    del cells
    return ClipCalibration(
        threshold=calibrated_threshold(all_levels, rate),
        cell_level=cell_level,
        profile_levels=_pooled_profile_levels(profiles, loc),
        flagged={m: flagged[owners_arr == m] for m in measured_by_id},
    )


def _pooled_profile_levels(profiles: list[list[np.ndarray | None]], loc: dict[str, Any]):
    """:func:`profile_levels` of every ID's band-profile samples pooled per band height, one
    height at a time, each ID's samples of a height dropped from ``profiles`` once pooled (at
    800 clips per ID they are 0.5 GB per ID; pooled at once, twice that per ID)."""
    n_heights = min((len(p) for p in profiles), default=0)
    out = []
    for k in range(n_heights):
        column = [by_height[k] for by_height in profiles]
        for by_height in profiles:
            by_height[k] = None
        out.append(profile_levels([np.concatenate(column)], loc)[0])
        del column
    return np.array(out)


def _row_groups(pieces: np.ndarray, count: int) -> list[list[int]]:
    """Labels of the pieces grouped by shared mel rows (overlapping row spans chain)."""
    spans = sorted(
        (sl[0].start, sl[0].stop, label)
        for label, sl in enumerate(ndimage.find_objects(pieces, count), start=1)
    )
    groups: list[list[int]] = []
    stop = -1
    for start, end, label in spans:
        if start < stop:
            groups[-1].append(label)
            stop = max(stop, end)
        else:
            groups.append([label])
            stop = end
    return groups


def grow_bands(
    seeds: np.ndarray, signed_z: np.ndarray, levels: np.ndarray, frames: int
) -> np.ndarray:
    """Grow a clip's region along time inside its bands (hysteresis on the band profile).

    The ``seeds`` (cells over the strict level, in pieces of at least
    ``min_region_cells``) are grouped into bands by shared mel rows. A band's
    profile is the mean signed z over its rows, with the sign of its seeds. From
    each end of its seed frames the band grows one frame at a time while the
    profile averaged over the next ``frames`` frames ahead (growing right: this
    frame and those after it; growing left: this one and those before) passes the
    band height's calibrated level (:func:`profile_levels`; near the clip's edge,
    over its first or last ``frames`` frames). A steady
    band whose cells pass the strict level only here and there thus becomes one
    band over the clip, while the evidence for a frame never includes the seed it
    grows from, so a segment's end is not pushed out by its own strength and a gap
    of ``frames`` frames without the anomaly stops the growth: separate segments
    stay separate. Returns the seeds plus each band's rows over its frames.
    """
    pieces, count = ndimage.label(seeds, structure=np.ones((3, 3)))
    out = seeds.copy()
    for group in _row_groups(pieces, count):
        in_group = np.isin(pieces, group)
        rows = np.flatnonzero(in_group.any(axis=1))
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        sign = 1.0 if signed_z[in_group].sum() >= 0 else -1.0
        level = levels[min(hi - lo, levels.size) - 1]
        profile = sign * signed_z[lo:hi].mean(axis=0)
        out[lo:hi, _grown_frames(profile, in_group.any(axis=0), level, frames)] = True
    return out


def _grown_frames(
    profile: np.ndarray, seed_frames: np.ndarray, level: float, frames: int
) -> np.ndarray:
    """Seed frames plus the frames reached from them while the look-ahead mean passes."""
    T = profile.size
    frames = max(1, min(frames, T))
    cum = np.concatenate([[0.0], np.cumsum(profile)])
    # Growing right, frame t is judged by frames t .. t + frames - 1 (near the clip's end: its
    # last ``frames`` frames); growing left by t - frames + 1 .. t (near its start: its first).
    ahead_start = np.minimum(np.arange(T), T - frames)
    behind_start = np.maximum(np.arange(T) + 1 - frames, 0)
    ok_right = (cum[ahead_start + frames] - cum[ahead_start]) / frames > level
    ok_left = (cum[behind_start + frames] - cum[behind_start]) / frames > level
    grown = seed_frames.copy()
    for i in range(1, T):  # rightwards from every seed frame
        grown[i] |= grown[i - 1] and ok_right[i]
    for i in range(T - 2, -1, -1):  # leftwards
        grown[i] |= grown[i + 1] and ok_left[i]
    return grown


def detect_regions(
    normal: np.ndarray,
    anomaly: np.ndarray,
    threshold: float,
    loc: dict[str, Any],
    cell_level: float = 0.0,
    with_levels: bool = True,
    band_levels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Clip-level regions of anomalous clips against all normal clips of their ID.

    A clip is detected when its critical level passes ``threshold``; its region
    is seeded at ``max(threshold, cell_level)`` and, with ``band_levels`` (the
    calibration's ``profile_levels``), grown along time inside its bands
    (:func:`grow_bands`). Returns the (n_anomaly, n_mels, T) bool regions and each
    clip's critical level (None without ``with_levels``: the same regions, found
    with less work).
    """
    smooth = (loc["smooth_bins"], loc["smooth_frames"])
    mean, scale = reference_stats(normal, loc["window_frames"])
    signed = signed_z_maps(anomaly, mean, scale, smooth)
    z = np.abs(signed)
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
            clip_region(zi, si, max(threshold, cell_level), loc, band_levels)
            if found
            else np.zeros(zi.shape, dtype=bool)
            for zi, si, found in zip(z, signed, detected, strict=True)
        ]
    )
    return regions, levels


def clip_region(
    z: np.ndarray,
    signed_z: np.ndarray,
    level: float,
    loc: dict[str, Any],
    band_levels: np.ndarray | None,
) -> np.ndarray:
    """One detected clip's region: pieces of ``|z| > level``, grown inside their bands when
    ``band_levels`` are given, then time gaps shorter than ``merge_gap_frames`` closed."""
    gap = loc["merge_gap_frames"]
    if band_levels is None:
        return clean_region(z > level, loc["min_region_cells"], gap)
    seeds = clean_region(z > level, loc["min_region_cells"])
    grown = grow_bands(seeds, signed_z, band_levels, gap)
    return clean_region(grown, 1, gap)
