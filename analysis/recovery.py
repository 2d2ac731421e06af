"""Truth beside the fit: does the method recover a known answer?

Where the data carry ground truth (the synthetic default's ``ground_truth.csv``: per
anomalous clip, every injected rectangle in Hz and seconds), each machine ID gets three
rows in the same units: what was injected, what the clip-level regions found, and what
the fitted setting's masks draw. Every row gives where the bands lie (Hz, the 10th
percentile of the lower edges to the 90th of the upper edges), one band's width (Hz),
bands per clip, time segments per clip and their length (s). Pure functions on rows and
arrays; the report stage reads the files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.fit import FULL_CLIP_COVERAGE
from analysis.mel import MelGeometry


@dataclass(frozen=True)
class ClipShape:
    """One clip's bands (Hz edges, one pair per disjoint band) and time segments (s)."""

    bands_hz: list[tuple[float, float]]
    segments_s: list[tuple[float, float]]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching intervals merged, in order."""
    out: list[list[float]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def truth_shape(rows: list[dict[str, str]]) -> ClipShape:
    """A clip's ground truth (rows read by column name, so added columns do not matter)."""
    return ClipShape(
        _union((float(r["f_lo_hz"]), float(r["f_hi_hz"])) for r in rows),
        _union((float(r["t_start_s"]), float(r["t_end_s"])) for r in rows),
    )


def _runs(vector: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True as (first, last + 1)."""
    edges = np.diff(np.r_[0, vector.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def region_shape(region: np.ndarray, geometry: MelGeometry) -> ClipShape | None:
    """A clip-level region in Hz and seconds (bands: the lower edge of their lowest mel
    filter to the upper edge of their highest); None for an empty region."""
    if not region.any():
        return None
    edges, spf = geometry.bin_edges_hz, geometry.seconds_per_frame
    return ClipShape(
        [(float(edges[a, 0]), float(edges[b - 1, 1])) for a, b in _runs(region.any(axis=1))],
        [(a * spf, b * spf) for a, b in _runs(region.any(axis=0))],
    )


def _span(values: list[float], lo: float = 10, hi: float = 90) -> list[float] | None:
    return [float(np.percentile(values, lo)), float(np.percentile(values, hi))] if values else None


def summarize_shapes(shapes: list[ClipShape], clip_seconds: float) -> dict[str, Any]:
    """What a set of clips shows: band position, width, counts and segment lengths."""
    bands = [b for s in shapes for b in s.bands_hz]
    segments = [t1 - t0 for s in shapes for t0, t1 in s.segments_s]
    whole = [
        len(s.segments_s) == 1
        and s.segments_s[0][1] - s.segments_s[0][0] >= FULL_CLIP_COVERAGE * clip_seconds
        for s in shapes
    ]
    return {
        "n_clips": len(shapes),
        "band_within_hz": (
            [
                float(np.percentile([b[0] for b in bands], 10)),
                float(np.percentile([b[1] for b in bands], 90)),
            ]
            if bands
            else None
        ),
        "band_width_hz": _span([hi - lo for lo, hi in bands]),
        "bands_per_clip": _count_span([len(s.bands_hz) for s in shapes]),
        "segments_per_clip": _count_span([len(s.segments_s) for s in shapes]),
        "segment_s": _span(segments),
        "whole_clip_share": float(np.mean(whole)) if shapes else None,
    }


def _count_span(counts: list[int]) -> list[int] | None:
    return [int(np.percentile(counts, 10)), int(np.percentile(counts, 90))] if counts else None


def fitted_shape(row: dict[str, Any], geometry: MelGeometry) -> dict[str, Any]:
    """The same summary for a fitted setting, from its row in ``recommendations.json``: where
    its bands may lie (its band-position range, in Hz) and its drawn masks' statistics."""
    drawn, n_mels = row["drawn"], geometry.n_mels
    low = int(np.floor(row["min_band_position"] * n_mels))
    high = max(low, int(np.ceil(row["max_band_position"] * n_mels)) - 1)
    edges = geometry.bin_edges_hz
    return {
        "n_clips": None,
        "band_within_hz": [float(edges[low, 0]), float(edges[min(high, n_mels - 1), 1])],
        "band_width_hz": drawn["band_width_hz"],
        "bands_per_clip": drawn["bands_per_mask"],
        "segments_per_clip": drawn["segments_per_mask"],
        "segment_s": drawn["segment_seconds"],
        "whole_clip_share": drawn["full_clip_share"],
    }


def recovery_rows(
    region_rows: list[dict[str, Any]],
    regions_by_file: dict[str, np.ndarray],
    truth_by_file: dict[str, list[dict[str, str]]],
    fits: dict[str, dict[str, Any]],
    geometry: MelGeometry,
) -> list[dict[str, Any]]:
    """Per machine ID with ground truth: ``injected``, ``found`` and ``fitted`` summaries.

    ``region_rows`` are the type's ``regions.csv`` rows (file, machine_id); ``fits`` maps a
    machine ID to the fitted row that stands for it (its own, else its type's), with
    ``scope`` ``"ID"`` or ``"type"``. Empty without ground truth.
    """
    clip_seconds = geometry.target_T * geometry.seconds_per_frame
    out = []
    for machine_id in sorted({r["machine_id"] for r in region_rows}):
        files = [r["file"] for r in region_rows if r["machine_id"] == machine_id]
        truths = [truth_shape(truth_by_file[f]) for f in files if f in truth_by_file]
        if not truths:
            continue
        found = [region_shape(regions_by_file[f], geometry) for f in files]
        fit = fits.get(machine_id)
        out.append(
            {
                "machine_id": machine_id,
                "n_anomalous": len(files),
                "injected": summarize_shapes(truths, clip_seconds),
                "found": summarize_shapes([s for s in found if s is not None], clip_seconds),
                "fitted": fitted_shape(fit, geometry) if fit else None,
                "fit_scope": fit.get("scope") if fit else None,
            }
        )
    return out


def _range(values: list[float] | None, fmt: str) -> str:
    if values is None:
        return "–"
    lo, hi = (format(v, fmt) for v in values)
    return lo if lo == hi else f"{lo}–{hi}"


def recovery_cells(summary: dict[str, Any] | None) -> dict[str, str]:
    """One row of the report's table: Hz to 10 Hz, seconds to 0.01 s, counts as ranges
    (10th to 90th percentile over clips or masks); "–" where there is nothing."""
    if summary is None or summary["band_within_hz"] is None:
        return dict.fromkeys(("band", "width", "bands", "segments", "length"), "–")
    whole = summary["whole_clip_share"] or 0.0
    if whole >= 0.9:
        segments = "whole clip"
    elif whole >= 0.1:
        segments = f"whole clip in {whole:.0%}, else {_range(summary['segments_per_clip'], 'g')}"
    else:
        segments = _range(summary["segments_per_clip"], "g")
    rounded = [round(v, -1) for v in summary["band_within_hz"]]
    width = summary["band_width_hz"]
    return {
        "band": _range(rounded, ",.0f"),
        "width": _range([round(v, -1) for v in width] if width else None, ",.0f"),
        "bands": _range(summary["bands_per_clip"], "g"),
        "segments": segments,
        "length": _range(summary["segment_s"], ".2f"),
    }


def recovery_phrase(cells: dict[str, str]) -> str:
    """One table cell from :func:`recovery_cells`: band (Hz), bands when not one, and time
    ("whole clip", or segments × their length in s)."""
    if cells["band"] == "–":
        return "–"
    bands = "" if cells["bands"] == "1" else f"; {cells['bands']} bands"
    time = (
        "whole clip"
        if cells["segments"] == "whole clip"
        else f"{cells['segments']} × {cells['length']} s"
    )
    return f"{cells['band']} Hz{bands}; {time}"
