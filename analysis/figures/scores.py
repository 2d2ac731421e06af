"""Sections "comparison" and "scores": regions found beside the fitted setting's masks, the
score's feature distributions, and the held-out score of every candidate per machine type."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from analysis.artifacts import is_ok
from analysis.figures.inputs import FigureInputs
from analysis.mel import MelGeometry
from analysis.plotting import (
    PRINT_WIDTH_IN,
    binary_map_grid,
)
from analysis.records import MaskSetting, score_key
from analysis.regions import FEATURE_COLUMNS
from analysis.scoring import SCORE_COORDINATES, score_coordinates
from analysis.strategies.factory import build_strategy

# A panel per coordinate of the score (scoring.SCORE_COORDINATES), titled by these.
COORDINATE_LABELS = {
    "band_centre_fraction": "band centre (fraction of n_mels)",
    "band_width_log": "band width (rows, log scale)",
    "n_bands": "bands (log scale)",
    "time_coverage": "time coverage (fraction of T)",
    "n_segments": "segments (log scale)",
}


def regions_vs_fitted_figure(
    figs,
    per_type: list[tuple[str, list, MaskSetting | None]],
    geometry: MelGeometry,
    seed: int,
    words: str,
) -> None:
    """Per machine type, regions found in its anomalous test clips beside masks of the
    setting fitted for it (the presets' masks are in their own figure)."""
    rows = []
    for machine_type, regions, fitted in per_type:
        rows.append((f"{machine_type}\ntest clips", regions))
        if fitted is not None:
            masks = _full(fitted.to_json(), geometry, seed, len(regions))
            rows.append((f"{machine_type}\nfitted", list(masks)))
    fig = binary_map_grid(rows, 4, PRINT_WIDTH_IN, 0.6)
    figs.save(
        fig,
        "fig-regions-vs-fitted",
        f"Regions found in {words} (four clips per machine type) beside four masks of the setting "
        "fitted for that type, at spectrogram size (mel bin upwards × frame; black = region or "
        "mask).",
        "comparison",
    )


def _full(preset: dict, geometry: MelGeometry, seed: int, n: int) -> np.ndarray:
    return build_strategy(preset, geometry.spectrogram_shape, seed=seed).full_size(n)


def comparison_jobs(inp: FigureInputs) -> list[tuple]:
    """Regions of four anomalous test clips beside four masks of the fitted setting, per
    machine type with regions and a fit (the worker draws the fitted masks); no figure where
    no type has both (its caption describes fitted masks)."""
    per_type = []
    for machine_type in inp.machine_types:
        found = [r["file"] for r in inp.region_rows[machine_type] if r["found"]][:4]
        if found and inp.fitted.get(machine_type) is not None:
            arrays = inp.loc_arrays[machine_type]
            regions = [arrays.region_of(f) for f in found]
            per_type.append((machine_type, regions, inp.fitted.get(machine_type)))
    if not per_type:
        return []
    return [(regions_vs_fitted_figure, per_type, inp.geometry, inp.seed, inp.anomaly_words)]


def feature_distributions_figure(figs, real_by_type, mask_rows, geometry) -> None:
    """The score's coordinates (``SCORE_COORDINATES``, unweighted) of the regions found in
    real anomalies (per machine type) against those of every preset's masks."""
    n_mels, T = geometry.spectrogram_shape
    groups = {}  # source -> its non-empty maps' rows
    for machine_type, rows in real_by_type.items():
        groups[f"test clips: {machine_type}"] = [r for r in rows if r["found"]]
    for r in mask_rows:
        if not np.isnan(r["area_fraction"]):  # empty masks have no features
            groups.setdefault(f"preset: {r['preset']}", []).append(r)
    coordinates = {
        source: score_coordinates(
            {c: np.array([r[c] for r in rows], dtype=float) for c in FEATURE_COLUMNS}, n_mels, T
        )
        for source, rows in groups.items()
        if rows
    }
    sources = list(coordinates)
    names = [name for name, _ in SCORE_COORDINATES]
    # Two columns of panels, so the figure stays readable at A4 width.
    cols = 2
    n_rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(
        n_rows,
        cols,
        figsize=(PRINT_WIDTH_IN, n_rows * (0.2 * len(sources) + 0.9)),
        sharey=True,
        constrained_layout=True,
    )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    palette = dict(zip(sources, sns.color_palette("tab10", len(sources)), strict=True))
    for ax, feature in zip(axes.flat, names, strict=False):
        values = [(s, float(v)) for s in sources for v in coordinates[s][feature]]
        sns.boxplot(
            x=[v for _, v in values],
            y=[s for s, _ in values],
            hue=[s for s, _ in values],
            order=sources,
            palette=palette,
            ax=ax,
            fliersize=1,
            linewidth=0.6,
            legend=False,
        )
        ax.set_title(COORDINATE_LABELS[feature], fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    figs.save(
        fig,
        "fig-feature-distributions",
        "Distributions of the score's coordinates, each mapped to [0, 1] (unweighted): the "
        "regions found in the anomalous test clips per machine type against the masks of every "
        "preset.",
        "scores",
    )


def score_heatmap_figure(figs, recs: list[dict], presets: list[str]) -> None:
    rows = [r for r in recs if r["machine_id"] == "all" and is_ok(r)]
    if not rows:  # no machine type has a fit: nothing to compare (the report says so)
        return
    names = [*presets, "recommended", "noise_level"]  # the real-vs-real noise level of the score
    matrix = np.array([[r.get(score_key(p), np.nan) for r in rows] for p in names], dtype=float)
    fig, ax = plt.subplots(
        figsize=(min(PRINT_WIDTH_IN, 0.9 * len(rows) + 2.6), 0.3 * len(names) + 0.9),
        constrained_layout=True,
    )
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".3f",
        cmap="mako_r",
        xticklabels=[r["machine_type"] for r in rows],
        yticklabels=[n.replace("_", " ") for n in names],
        ax=ax,
        cbar_kws={"label": "score (lower is closer)"},
        annot_kws={"fontsize": 7},
    )
    ax.tick_params(labelsize=7)
    figs.save(
        fig,
        "fig-score-heatmap",
        "Held-out score of every preset and of the fitted ('recommended') setting per machine type, "
        "and the noise level (the fit half's anomaly regions scored against the held-out half's: "
        "the score's real-vs-real noise level); lower means closer to the anomaly regions.",
        "scores",
    )
