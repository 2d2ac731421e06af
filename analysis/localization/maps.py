"""Maps of one machine ID and operations on binary region maps."""

from __future__ import annotations

import numpy as np

from analysis.mel import MelGeometry


def loo_means(normal: np.ndarray) -> np.ndarray:
    """For each normal clip, the mean of all the other normal clips."""
    n = normal.shape[0]
    out = normal.sum(axis=0, keepdims=True) - normal
    out /= n - 1
    return out


def localization_maps(normal: np.ndarray, anomaly: np.ndarray) -> dict[str, np.ndarray]:
    """The seed's maps plus the excess over normal variability, with profiles.

    Parameters
    ----------
    normal, anomaly
        (n, n_mels, T) normalized log-mels of one machine ID (n_normal >= 2).
    """
    mean_norm = normal.mean(axis=0)
    mean_anom = anomaly.mean(axis=0)
    residual = anomaly - mean_norm
    np.abs(residual, out=residual)
    dev = residual.mean(axis=0)
    residual = loo_means(normal)  # |normal - leave-one-out mean|, in place (one temporary)
    np.subtract(normal, residual, out=residual)
    np.abs(residual, out=residual)
    dev_normal = residual.mean(axis=0)
    del residual
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


def clean_region(mask: np.ndarray, min_cells: int, merge_gap_frames: int = 0) -> np.ndarray:
    """Drop connected pieces (8-connectivity) smaller than ``min_cells``, then close time gaps
    shorter than ``merge_gap_frames`` between what is left, so fragments of one band become
    one segment. Small pieces go first: closing a noisy mask would join its noise."""
    from scipy import ndimage  # here, not at the top: the stages that only read maps skip it

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


def alternate_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two halves of n anomalous clips in file order (alternate files)."""
    idx = np.arange(n)
    return idx[0::2], idx[1::2]


def pad_frames(x: np.ndarray, total: int, fill) -> np.ndarray:
    """``x`` with its last (frame) axis padded with ``fill`` up to ``total`` frames.

    The methods see only a clip's real frames (padded frames take part in no
    statistic); their maps and regions are padded back to the spectrogram's size
    for storage, so they line up with masks of ``target_T`` frames.
    """
    missing = total - x.shape[-1]
    if missing <= 0:
        return x
    widths = [(0, 0)] * (x.ndim - 1) + [(0, missing)]
    return np.pad(x, widths, constant_values=fill)
