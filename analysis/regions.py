"""One ruler for synthetic masks and real anomaly regions.

:func:`region_features` turns binary (n_mels x T) maps into band and segment
features. Masks and the regions found in real clips both go through it, so
the two sides of every comparison are measured the same way.

The features only need each map's row profile (masked cells per mel bin) and
column profile (frames with any masked cell), so :func:`profile_features`
also measures masks given as factors (a band-times-segments mask is the outer
product of a row vector and a frame vector) without drawing them at full size.
"""

from __future__ import annotations

import numpy as np

# Features of a region, all per map. Fractions are of n_mels (bands) or T (time).
FEATURE_COLUMNS: tuple[str, ...] = (
    "area_fraction",  # masked cells / (n_mels * T)
    "band_fraction",  # mel bins holding any masked cell / n_mels
    "band_extent_fraction",  # (highest - lowest masked bin + 1) / n_mels
    "n_bands",  # disjoint runs of masked mel bins
    "band_centre_bin",  # cell-weighted mean mel bin
    "band_centre_fraction",  # (band_centre_bin + 0.5) / n_mels
    "n_segments",  # disjoint runs of frames with any masked cell (overlaps merged)
    "mean_seg_len_frames",
    "max_seg_len_frames",
    "time_coverage",  # frames with any masked cell / T
)


def run_counts(vectors: np.ndarray) -> np.ndarray:
    """Number of runs of True along the last axis."""
    v = np.asarray(vectors, dtype=bool)
    starts = v.copy()
    starts[..., 1:] &= ~v[..., :-1]
    return starts.sum(axis=-1)


def longest_runs(vectors: np.ndarray) -> np.ndarray:
    """Length of the longest run of True along the last axis."""
    v = np.asarray(vectors, dtype=bool)
    total = np.cumsum(v, axis=-1)
    at_gaps = np.where(~v, total, 0)
    run_length = total - np.maximum.accumulate(at_gaps, axis=-1)
    return run_length.max(axis=-1) if v.shape[-1] else np.zeros(v.shape[:-1], dtype=int)


def profile_features(row_cells: np.ndarray, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Features from row profiles and frame coverage.

    Parameters
    ----------
    row_cells
        (B, n_mels) masked cells per mel bin (counts or 0/1 weights).
    frames
        (B, T) bool, frames holding any masked cell.

    Returns
    -------
    dict
        One (B,) float array per name in ``FEATURE_COLUMNS``; NaN for empty maps.
    """
    row_cells = np.asarray(row_cells, dtype=np.float64)
    frames = np.asarray(frames, dtype=bool)
    n_mels, T = row_cells.shape[-1], frames.shape[-1]
    rows = row_cells > 0
    cells = row_cells.sum(axis=-1)
    empty = cells == 0
    bins = np.arange(n_mels)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (row_cells * bins).sum(axis=-1) / cells
        lowest = np.where(rows.any(-1), rows.argmax(-1), 0)
        highest = np.where(rows.any(-1), n_mels - 1 - rows[..., ::-1].argmax(-1), -1)
        n_segments = run_counts(frames).astype(float)
        covered = frames.sum(axis=-1)
        out = {
            "area_fraction": cells / (n_mels * T),
            "band_fraction": rows.sum(-1) / n_mels,
            "band_extent_fraction": (highest - lowest + 1) / n_mels,
            "n_bands": run_counts(rows).astype(float),
            "band_centre_bin": centre,
            "band_centre_fraction": (centre + 0.5) / n_mels,
            "n_segments": n_segments,
            "mean_seg_len_frames": covered / n_segments,
            "max_seg_len_frames": longest_runs(frames).astype(float),
            "time_coverage": covered / T,
        }
    for values in out.values():
        values[empty] = np.nan
    return out


def region_features(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Features of binary maps of shape (B, n_mels, T) or (n_mels, T).

    The one function that measures both synthetic masks and real anomaly
    regions (see the module docstring).
    """
    m = np.asarray(maps, dtype=bool)
    if m.ndim == 2:
        m = m[None]
    return profile_features(np.count_nonzero(m, axis=2), m.any(axis=1))


# score_transform of the count features in words ({} is the value mapped), for the methods text.
SCALE_WORDS = {
    "n_segments": "log(1 + {}) / log(1 + T/2)",
    "n_bands": "log(1 + {}) / log(1 + n_mels/2)",
}


def score_transform(name: str, values: np.ndarray, n_mels: int, T: int) -> np.ndarray:
    """Map a score feature to [0, 1] so that distances of different features are comparable.

    Fractions stay as they are; segment lengths are divided by T; the number of
    segments is log-scaled, ``log(1 + n) / log(1 + T / 2)`` (T / 2 is the most
    disjoint segments T frames can hold), so 1 vs 3 segments weighs like 10 vs 30;
    the number of bands likewise with n_mels / 2.
    """
    v = np.asarray(values, dtype=np.float64)
    if name == "n_segments":
        return np.log1p(v) / np.log1p(T / 2)
    if name == "n_bands":
        return np.log1p(v) / np.log1p(n_mels / 2)
    if name in ("mean_seg_len_frames", "max_seg_len_frames"):
        return v / T
    if name == "band_centre_bin":
        return (v + 0.5) / n_mels
    return v
