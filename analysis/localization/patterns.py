"""A plain-words label for a set of regions (stationary, transient, windowed; narrow or broad)."""

from __future__ import annotations

import numpy as np


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
