"""Stage ``figures``: every figure of the report, pre-rendered with matplotlib and seaborn.

Writes PNGs and ``manifest.json`` (id, file, caption, section of each figure)
under ``report/figures/``; the report template only places what the manifest
lists, so a figure cannot be referenced without existing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.artifacts import (  # noqa: E402
    DownstreamRecord,
    fitted_settings,
    is_ok,
    read_downstream,
    read_fidelity,
    read_ground_truth,
    read_localization_arrays,
    read_localization_summary,
    read_mask_rows,
    read_mask_samples,
    read_masks_meta,
    read_power,
    read_recommendations,
    read_region_rows,
    read_source,
    row_verdict,
    sample_key,
    write_manifest,
)
from analysis.checks import check_colormaps  # noqa: E402
from analysis.dcase import unit_label  # noqa: E402
from analysis.detection import REFERENCE_LABELS  # noqa: E402
from analysis.io import atomic_dir, log  # noqa: E402
from analysis.localization.maps import truth_map  # noqa: E402
from analysis.mel import MelGeometry  # noqa: E402
from analysis.plotting import (  # noqa: E402
    PRINT_WIDTH_IN,
    SYNTHETIC_MARK,
    FigureSet,
    binary_map_grid,
    label_frame_axis,
    label_mel_axis,
    slug,
)
from analysis.regions import SCORE_FEATURES, score_transform  # noqa: E402
from analysis.strategies.factory import build_strategy  # noqa: E402
from analysis.workers import process_pool, resolve_n_jobs  # noqa: E402

FEATURE_LABELS = {
    "band_fraction": "band fraction (of n_mels)",
    "n_bands": "bands (log scale)",
    "band_centre_fraction": "band centre (fraction of n_mels)",
    "n_segments": "segments (log scale)",
    "mean_seg_len_frames": "mean segment length / T",
    "time_coverage": "time coverage (fraction of T)",
}


@dataclass(frozen=True)
class IdPanel:
    """One machine ID's part of its type's localization figure."""

    machine_id: str
    excess: np.ndarray
    n_regions: int
    n_anomaly: int
    clip_regions: np.ndarray | None  # union of its clips' regions
    pooled: np.ndarray | None  # the ID-level (pooled) region
    truth: np.ndarray | None  # the injected ground truth (synthetic data only)


def type_localization_figure(
    figs: FigureSet, machine_type: str, panels: list[IdPanel], geometry: MelGeometry, words: str
) -> None:
    """A machine type's IDs as small multiples of the excess map, with the found regions
    (clip level: white; pooled: black) and, on synthetic data, the ground truth (dashed)."""
    from matplotlib.lines import Line2D

    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    height = 1.75 * rows + 0.75
    fig, axes = plt.subplots(rows, cols, figsize=(PRINT_WIDTH_IN, height), squeeze=False)
    # Fixed margins (in inches, so any row count fits): constrained layout is a third of
    # the drawing time here.
    fig.subplots_adjust(
        left=0.55 / PRINT_WIDTH_IN,
        right=1 - 0.95 / PRINT_WIDTH_IN,
        bottom=0.8 / height,
        top=1 - 0.35 / height,
        wspace=0.12,
        hspace=0.45,
    )
    limit = max(float(np.nanpercentile(np.abs(p.excess), 99.5)) for p in panels) or 1.0
    image = None
    for k, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
        image = ax.imshow(
            panel.excess,
            aspect="auto",
            origin="lower",
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
        )
        for region, colour, style in (
            (panel.clip_regions, "white", "solid"),
            (panel.pooled, "black", "solid"),
            (panel.truth, "#1a9e1a", "dashed"),
        ):
            if region is not None and region.any():
                ax.contour(
                    region.astype(float),
                    levels=[0.5],
                    colors=colour,
                    linewidths=0.9,
                    linestyles=style,
                )
        ax.set_title(
            f"{unit_label(panel.machine_id)}: {panel.n_regions}/{panel.n_anomaly} clips", fontsize=8
        )
        label_frame_axis(ax, geometry, show=k // cols == rows - 1)
        label_mel_axis(ax, geometry, show=k % cols == 0)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    cax = fig.add_axes(
        (1 - 0.8 / PRINT_WIDTH_IN, 0.8 / height, 0.1 / PRINT_WIDTH_IN, 1 - 1.15 / height)
    )
    fig.colorbar(image, cax=cax, label="excess (normalized)")
    handles = [
        Line2D([], [], color="white", lw=1.2, label="clip-level regions (union)"),
        Line2D([], [], color="black", lw=1.2, label="ID-level (pooled) region"),
    ]
    if any(p.truth is not None and p.truth.any() for p in panels):
        handles.append(Line2D([], [], color="#1a9e1a", lw=1.2, ls="--", label="injected truth"))
    legend = fig.legend(
        handles=handles,
        loc="lower center",
        ncols=len(handles),
        fontsize=7,
        facecolor="0.85",
        framealpha=1,
    )
    legend.get_frame().set_linewidth(0)
    figs.save(
        fig,
        f"fig-loc-{slug(machine_type)}",
        f"Where {machine_type}'s {words} sit, per machine ID: the excess of the anomalous clips' "
        "deviation from the mean normal clip over what normal clips show against each other "
        "(red: more than normal variability), with the regions found at the clip level (white, "
        "the union over clips; the title counts clips with a region) and at the ID level "
        "(black), and the injected ground truth where the data are synthetic (dashed green).",
        "localization",
        machine_type=machine_type,
    )


def seed_panels_figure(
    figs: FigureSet, machine_type: str, maps_by_id: dict[str, dict], geometry: MelGeometry, cfg
) -> None:
    """The seed notebook's three panels (mean normal, mean anomaly, dev) for every ID of a
    type: the HTML's detail view."""
    ids = list(maps_by_id)
    height = 1.45 * len(ids) + 0.4
    fig, axes = plt.subplots(len(ids), 3, figsize=(PRINT_WIDTH_IN, height), squeeze=False)
    fig.subplots_adjust(
        left=0.55 / PRINT_WIDTH_IN,
        right=0.98,
        bottom=0.45 / height,
        top=1 - 0.25 / height,
        wspace=0.1,
        hspace=0.4,
    )
    panels = [
        ("mean_norm", "mean normal", cfg["cmap_spectrogram"]),
        ("mean_anom", "mean anomalous", cfg["cmap_spectrogram"]),
        ("dev", "dev = mean |anomalous − mean normal|", cfg["cmap_deviation"]),
    ]
    for r, machine_id in enumerate(ids):
        for c, (key, title, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(
                maps_by_id[machine_id][key],
                aspect="auto",
                origin="lower",
                cmap=cmap,
                interpolation="nearest",
            )
            ax.set_title(f"{unit_label(machine_id)}: {title}", fontsize=7)
            label_frame_axis(ax, geometry, show=r == len(ids) - 1)
            label_mel_axis(ax, geometry, show=c == 0)
    figs.save(
        fig,
        f"fig-seed-{slug(machine_type)}",
        f"{machine_type}, the seed notebook's view of every machine ID: mean normal and mean "
        "anomalous log-mel (normalized) and dev, the mean absolute deviation of the anomalous "
        "clips from the mean normal clip.",
        "localization-detail",
        machine_type=machine_type,
    )


def masks_figure(figs: FigureSet, samples: dict[str, dict], n: int) -> None:
    """Every preset's mask samples at spectrogram size, one row per preset."""
    rows = [(preset, list(s["full"][:n])) for preset, s in samples.items()]
    n = min(n, min(len(m) for _, m in rows))
    fig = binary_map_grid(rows, n, PRINT_WIDTH_IN, 0.62, [f"sample {j + 1}" for j in range(n)])
    figs.save(
        fig,
        "fig-masks",
        "Mask samples of every preset at spectrogram size (mel bin upwards × frame; black = "
        "masked).",
        "masks",
        data=False,
    )


def masks_resized_figure(
    figs: FigureSet, samples: dict[str, dict], grids: dict, methods: list[str]
) -> None:
    """The first two samples of every preset on each latent grid with each projection."""
    columns = [(g, m, j) for g in grids for m in methods for j in range(2)]
    rows = [
        (preset, [s[sample_key(g, m)][j] for g, m, j in columns]) for preset, s in samples.items()
    ]
    short = {"any_cell": "any cell", "nearest": "nearest"}
    titles = [f"{g}\n{short.get(m, m)}\n#{j + 1}" for g, m, j in columns]
    fig = binary_map_grid(rows, len(columns), PRINT_WIDTH_IN, 0.55, titles)
    for label in fig.axes[0].get_xticklabels():
        label.set_fontsize(7)
    figs.save(
        fig,
        "fig-masks-resized",
        "The first two samples of every preset projected onto each latent grid ("
        + ", ".join(f"{g} {grids[g][0]}×{grids[g][1]}" for g in grids)
        + ") with each projection (any cell: a latent cell is masked when any cell under it is; "
        "nearest: every k-th row and column).",
        "masks",
        data=False,
    )


def strategy_outputs_figure(
    figs: FigureSet,
    settings: dict[str, dict],
    geometry,
    q_shape,
    seed: int,
    fig_id: str,
    caption: str,
) -> None:
    """What AudioSpecificStrategy itself returns on the q_bot grid, as training calls it."""
    n = 5
    rows = []
    for r, (label, preset) in enumerate(settings.items()):
        strategy = build_strategy(
            preset, geometry.spectrogram_shape, q_shape=q_shape, seed=seed + r
        )
        rows.append((label, list(strategy(n, "cpu")[:, 0].numpy())))
    fig = binary_map_grid(rows, n, PRINT_WIDTH_IN, 0.62)
    figs.save(fig, fig_id, caption, "strategy", data=False)


def regions_vs_fitted_figure(
    figs,
    per_type: list[tuple[str, list, dict | None]],
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
            masks = _full({"kind": "audio_specific", **fitted}, geometry, seed, len(regions))
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


def feature_distributions_figure(figs, real_by_type, mask_rows, geometry) -> None:
    """Region features of real anomalies (per machine type) against every preset's masks."""
    n_mels, T = geometry.spectrogram_shape
    records = []
    for machine_type, rows in real_by_type.items():
        for r in rows:
            if r["found"]:
                records += [(f"test clips: {machine_type}", f, r[f]) for f in SCORE_FEATURES]
    for r in mask_rows:
        if not np.isnan(r["area_fraction"]):  # empty masks have no features
            records += [(f"preset: {r['preset']}", f, r[f]) for f in SCORE_FEATURES]
    sources = list(dict.fromkeys(s for s, _, _ in records))
    # Two rows of panels, so the figure stays readable at A4 width.
    cols = 2
    n_rows = int(np.ceil(len(SCORE_FEATURES) / cols))
    fig, axes = plt.subplots(
        n_rows,
        cols,
        figsize=(PRINT_WIDTH_IN, n_rows * (0.2 * len(sources) + 0.9)),
        sharey=True,
        constrained_layout=True,
    )
    for ax in axes.flat[len(SCORE_FEATURES) :]:
        ax.axis("off")
    palette = dict(zip(sources, sns.color_palette("tab10", len(sources)), strict=True))
    for ax, feature in zip(axes.flat, SCORE_FEATURES, strict=False):
        values = [
            (s, score_transform(feature, np.array([v]), n_mels, T)[0])
            for s, f, v in records
            if f == feature
        ]
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
        ax.set_title(FEATURE_LABELS[feature], fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    figs.save(
        fig,
        "fig-feature-distributions",
        "Distributions of the score's region features, each mapped to [0, 1]: the regions found "
        "in the anomalous test clips per machine type against the masks of every preset.",
        "scores",
    )


def score_heatmap_figure(figs, recs: list[dict], presets: list[str]) -> None:
    rows = [r for r in recs if r["machine_id"] == "all" and is_ok(r)]
    if not rows:  # no machine type has a fit: nothing to compare (the report says so)
        return
    names = [*presets, "recommended", "noise_level"]  # the real-vs-real noise level of the score
    matrix = np.array([[r.get(f"score_{p}", np.nan) for r in rows] for p in names], dtype=float)
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


def power_figure(figs, power: dict) -> None:
    """Detection power against spike-in strength, per machine type, pattern and level."""
    rows = power["rows"]
    if not rows:
        return
    located = power["located_iou"]
    records = []
    for r in rows:
        records.append(
            (r["machine_type"], r["pattern"], "clip level: recall", r["delta"], r["clip_recall"])
        )
        records.append(
            (
                r["machine_type"],
                r["pattern"],
                "ID level: share of IDs",
                r["delta"],
                r["id_found_share"],
            )
        )
    frame = pd.DataFrame(records, columns=["machine type", "pattern", "level", "delta", "detected"])
    grid = sns.relplot(
        data=frame,
        x="delta",
        y="detected",
        hue="machine type",
        style="machine type",
        col="level",
        row="pattern",
        kind="line",
        markers=True,
        dashes=False,
        height=1.55,
        aspect=2.05,
        facet_kws={"margin_titles": True},
    )
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    deltas = sorted({r["delta"] for r in rows})
    for ax in grid.axes.flat:
        ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
        ax.minorticks_off()
    grid.set_axis_labels("spike-in strength (within-ID cell SD)", "detected")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}", size=8)
    # The legend under the panels, so the figure is no wider than the printed page.
    sns.move_legend(
        grid, "lower center", bbox_to_anchor=(0.5, 0.0), ncol=6, frameon=False, title=None
    )
    height = grid.figure.get_figheight() + 0.3
    grid.figure.set_size_inches(PRINT_WIDTH_IN, height)
    grid.figure.subplots_adjust(
        left=0.75 / PRINT_WIDTH_IN,
        right=1 - 0.45 / PRINT_WIDTH_IN,
        bottom=0.85 / height,
        top=1 - 0.35 / height,
        wspace=0.15,
        hspace=0.35,
    )
    figs.save(
        grid.figure,
        "fig-power",
        "What the localization can detect on this data's own normal clips: known anomalies added to "
        "half of each ID's normal clips at a strength in units of the ID's cell SD; clip level: "
        f"share of spiked clips whose region locates the planted one (IoU ≥ {located:g}); ID "
        f"level: share of IDs whose pooled region locates it (IoU ≥ {located:g}).",
        "power",
    )


def fidelity_figure(figs, fidelity_rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(PRINT_WIDTH_IN, 2.9), constrained_layout=True)
    labels = [f"{r['grid']} {r['method']}" for r in fidelity_rows]
    presets = [r["preset"] for r in fidelity_rows]
    for ax, metric, title in zip(
        axes,
        ("vanished_share", "iou_mean"),
        ("Share of masks that vanish", "Mean IoU with the original mask"),
        strict=True,
    ):
        sns.barplot(x=presets, y=[float(r[metric]) for r in fidelity_rows], hue=labels, ax=ax)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7, title=None)
    figs.save(
        fig,
        "fig-resize-fidelity",
        "What resizing to the quantized grids does to each preset's masks: the share of masks that "
        "vanish entirely and the mean IoU between the original mask and the resized one brought back "
        "to spectrogram size.",
        "masks",
        data=False,
    )


VERDICT_COLOURS = {"closer": "#1f5fa8", "farther": "#b2182b", "not distinguishable": "0.45"}


def forest_rows(recs: list[dict], machine_types: list[str]) -> list[dict[str, Any]]:
    """The forest plot's rows: per machine type whose verdict rests on a test, the tested
    candidate − the user's setting (paired held-out difference, its Holm-corrected interval);
    a type without a test has no row (the answer table says why)."""
    by_type = {r["machine_type"]: r for r in recs if r["machine_id"] == "all"}
    out = []
    for t in machine_types:
        r = by_type.get(t)
        if r is None or not is_ok(r):
            continue
        v = row_verdict(r)
        if v.ci_low is None:
            continue
        closeness = (
            "closer" if v.ci_high < 0 else "farther" if v.ci_low > 0 else "not distinguishable"
        )
        out.append(
            {
                "label": f"{t}: {v.candidate} − {v.user_setting}",
                "value": v.difference,
                "low": v.ci_low,
                "high": v.ci_high,
                "verdict": closeness,
            }
        )
    return out


def forest_figure(figs, recs: list[dict], machine_types: list[str], ci_level: float) -> None:
    """Paired held-out score differences per machine type with their intervals and the zero
    line: left of zero the first setting is closer to the anomalies."""
    rows = forest_rows(recs, machine_types)
    if not rows:  # nothing was fitted: the answer table says so
        return
    fig, ax = plt.subplots(figsize=(PRINT_WIDTH_IN, 0.17 * len(rows) + 0.72), layout="constrained")
    y = np.arange(len(rows))[::-1]
    span = max([abs(v) for r in rows for v in (r["low"], r["high"], r["value"]) if v is not None])
    for yi, r in zip(y, rows, strict=True):
        colour = VERDICT_COLOURS[r["verdict"]]
        if r["low"] is not None:
            ax.plot([r["low"], r["high"]], [yi, yi], color=colour, lw=1.6)
        ax.plot(r["value"], yi, "o", color=colour, ms=4.5)
        ax.text(
            1.02,
            yi,
            r["verdict"] if r["low"] is not None else "no interval",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=7,
            color=colour,
            clip_on=False,
        )
    ax.axvline(0, color="0.2", lw=0.8)
    ax.set_xlim(-1.15 * span, 1.15 * span)
    ax.set_yticks(y, [r["label"].replace("_", " ") for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("paired held-out score difference (left of 0: the first is closer)")
    ax.grid(axis="x", color="0.9")
    figs.save(
        fig,
        "fig-forest",
        "Paired held-out score differences per machine type: the candidate closest on the fit "
        "half against the setting you run, with its bootstrap interval at the Holm-corrected "
        f"level (at least {ci_level:.0%}). An interval left of the zero line means the candidate "
        "is closer to the anomalies in the test clips; one that crosses it means not "
        "distinguishable. Types without a test (too few held-out regions) have no row.",
        "summary",
    )


def downstream_figure(figs, record: DownstreamRecord, machine_types: list[str]) -> None:
    """Proxy-detector AUC per setting and machine type with intervals, the reference detectors
    beside them (left), and AUC against the held-out mask score (right: lower = closer)."""
    rows = [
        (t, name, v)
        for t in machine_types
        if t in record.types
        for name, v in [
            *record.types[t]["settings"].items(),
            *record.types[t].get("references", {}).items(),
        ]
    ]
    if not rows:
        return
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(PRINT_WIDTH_IN, 0.16 * len(rows) + 1.0), layout="constrained"
    )
    names = list(dict.fromkeys(n for _, n, _ in rows))
    colours = dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))
    y = np.arange(len(rows))[::-1]
    for yi, (_, name, v) in zip(y, rows, strict=True):
        marker = "s" if name in REFERENCE_LABELS else "o"
        left.plot(v["auc_ci"], [yi, yi], color=colours[name], lw=1.4)
        left.plot(v["auc"], yi, marker, color=colours[name], ms=3.5)
    left.axvline(0.5, color="0.3", lw=0.8, ls="--")
    short = {"baseline_ae": "ref. baseline AE", "zscore": "ref. z-score"}
    left.set_yticks(y, [f"{t}: {short.get(n, n.replace('_', ' '))}" for t, n, _ in rows])
    left.set_xlabel("AUC on the test clips (0.5: chance)")
    for t, name, v in rows:
        if v.get("mask_score") is not None:
            right.plot(v["mask_score"], v["auc"], "o", color=colours[name], ms=4)
            right.annotate(
                t,
                (v["mask_score"], v["auc"]),
                fontsize=7,
                xytext=(3, 2),
                textcoords="offset points",
            )
    right.axhline(0.5, color="0.3", lw=0.8, ls="--")
    right.set_xlabel("mask score (lower: closer)")
    right.set_ylabel("AUC")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colours[n], label=n)
        for n in names
        if n not in REFERENCE_LABELS
    ]
    right.legend(handles=handles, fontsize=7, loc="best")
    figs.save(
        fig,
        "fig-downstream",
        f"Proxy detectors trained with each mask setting (circles) and the reference detectors "
        f"(squares: the DCASE 2020 baseline autoencoder and the maskless z-score), AUC on the "
        f"test clips with {record.ci_level:.0%} intervals (test clips and training seeds "
        "resampled); right: proxy AUC against the held-out mask score of the same setting.",
        "downstream",
    )


def _draw(task: tuple) -> list[dict[str, Any]]:
    """Draw one figure job in a worker; return its manifest entries."""
    folder, dpi, marker, (function, *args) = task
    sns.set_theme(style="whitegrid", context="paper")
    # A fixed title height: automatic placement measures every tick label of the axes at each
    # draw (no axes here has ticks at the top). Text at 7 pt or more as printed.
    plt.rcParams.update(
        {
            "axes.grid": False,
            "figure.dpi": dpi,
            "axes.titley": 1.0,
            "font.size": 8,
            "axes.titlesize": 8,
            "axes.labelsize": 8,
            "xtick.labelsize": 7,
            "ytick.labelsize": 7,
            "legend.fontsize": 7,
        }
    )
    figs = FigureSet(Path(folder), dpi, marker)
    function(figs, *args)
    return figs.entries


@dataclass(frozen=True)
class FigureInputs:
    """What the figures stage reads, once (the jobs take the parts they draw)."""

    geometry: MelGeometry
    cfg: dict[str, Any]
    machine_types: list[str]
    presets: dict[str, dict[str, Any]]
    grids: dict[str, tuple[int, int]]
    resize_methods: list[str]
    samples: dict[str, dict[str, np.ndarray]]
    recs: list[dict[str, Any]]
    fitted: dict[str, dict[str, Any]]
    loc_arrays: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    region_rows: dict[str, list[dict[str, Any]]]
    truth: dict[str, dict[str, list[dict[str, str]]]]  # type -> file -> ground-truth rows
    synthetic: bool
    seed: int
    ci_level: float

    @property
    def anomaly_words(self) -> str:
        """What the anomalies are called: real recordings' or the synthetic test clips'."""
        return "anomalous test clips" if self.synthetic else "real anomalous clips"


def read_inputs(params: dict[str, Any], build_dir: Path) -> FigureInputs:
    masks_meta = read_masks_meta(build_dir / "masks")
    recs = read_recommendations(build_dir / "recommendations.json")
    machine_types = params["data"]["machine_types"]
    loc_dir = build_dir / "localization"
    sources = {t: read_source(build_dir / "features" / t) for t in machine_types}
    return FigureInputs(
        geometry=MelGeometry.from_params(params),
        cfg=params["figures"],
        machine_types=machine_types,
        presets=masks_meta["presets"],
        grids=masks_meta["grids"],
        resize_methods=masks_meta["resize_methods"],
        samples=read_mask_samples(build_dir / "masks"),
        recs=recs["rows"],
        fitted=fitted_settings(recs),
        loc_arrays={t: read_localization_arrays(loc_dir, t) for t in machine_types},
        summaries={t: read_localization_summary(loc_dir, t) for t in machine_types},
        region_rows={t: read_region_rows(loc_dir, t) for t in machine_types},
        truth={t: read_ground_truth(build_dir / "features" / t) for t in machine_types},
        synthetic=any(s["synthetic"] for s in sources.values()),
        seed=params["masks"]["seed"],
        ci_level=params["recommend"]["ci_level"],
    )


def id_panels(inp: FigureInputs, machine_type: str) -> list[IdPanel]:
    """The localized IDs of a machine type with their excess map and outlines."""
    arrays = inp.loc_arrays[machine_type]
    truth_rows = inp.truth[machine_type]
    panels = []
    for machine_id, summary in inp.summaries[machine_type]["ids"].items():
        if summary.get("status") != "ok":
            continue
        rows = [r for r in inp.region_rows[machine_type] if r["machine_id"] == machine_id]
        found = [arrays.region_of(r["file"]) for r in rows if r["found"]]
        truth = [
            truth_map(truth_rows[r["file"]], inp.geometry) for r in rows if r["file"] in truth_rows
        ]
        panels.append(
            IdPanel(
                machine_id=machine_id,
                excess=arrays.maps[machine_id]["excess"],
                n_regions=len(found),
                n_anomaly=len(rows),
                clip_regions=np.logical_or.reduce(found) if found else None,
                pooled=arrays.pooled.get(machine_id, {}).get("all"),
                truth=np.logical_or.reduce(truth) if truth else None,
            )
        )
    return panels


def localization_jobs(inp: FigureInputs) -> list[tuple]:
    """Per machine type: its IDs' excess maps (the report's figure) and the seed's three
    panels per ID (the HTML's detail view)."""
    jobs: list[tuple] = []
    for machine_type in inp.machine_types:
        panels = id_panels(inp, machine_type)
        if not panels:
            continue
        jobs.append(
            (type_localization_figure, machine_type, panels, inp.geometry, inp.anomaly_words)
        )
        maps = {p.machine_id: inp.loc_arrays[machine_type].maps[p.machine_id] for p in panels}
        jobs.append((seed_panels_figure, machine_type, maps, inp.geometry, inp.cfg))
    return jobs


def strategy_jobs(inp: FigureInputs, fidelity_rows: list[dict[str, Any]]) -> list[tuple]:
    """Mask samples of every preset (at spectrogram size and on the grids), resize fidelity,
    and the strategy's own outputs on q_bot."""
    n = inp.cfg["n_mask_samples"]
    jobs: list[tuple] = [
        (masks_figure, inp.samples, n),
        (masks_resized_figure, inp.samples, inp.grids, inp.resize_methods),
        (fidelity_figure, fidelity_rows),
    ]
    q_bot = inp.grids.get("q_bot", next(iter(inp.grids.values())))
    grid_text = f"on the {q_bot[0]}×{q_bot[1]} grid"
    seed_settings = {
        name: inp.presets[name] for name in ("current", "proposed") if name in inp.presets
    }
    if seed_settings:
        caption = (
            f"AudioSpecificStrategy outputs {grid_text} (any-cell projection, as training "
            "projects it) with the seed's current and proposed settings."
        )
        jobs.append(
            (
                strategy_outputs_figure,
                seed_settings,
                inp.geometry,
                q_bot,
                inp.seed,
                "fig-strategy-seed",
                caption,
            )
        )
    if inp.fitted:
        settings = {f"fitted: {t}": {"kind": "audio_specific", **f} for t, f in inp.fitted.items()}
        caption = f"AudioSpecificStrategy outputs {grid_text} with the setting fitted for each machine type."
        jobs.append(
            (
                strategy_outputs_figure,
                settings,
                inp.geometry,
                q_bot,
                inp.seed,
                "fig-strategy-fitted",
                caption,
            )
        )
    return jobs


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


def figures(
    params: dict[str, Any], build_dir: str | Path = "build", out_dir: str | Path = "report/figures"
) -> Path:
    """Draw all report figures into ``report/figures`` with a ``manifest.json``.

    Parameters
    ----------
    params
        Validated params; reads ``figures.*``, ``data.machine_types`` and the mel geometry.
    """
    check_colormaps(params["figures"])  # also in check-params; here for a stage run by hand
    build_dir = Path(build_dir)
    inp = read_inputs(params, build_dir)
    jobs = localization_jobs(inp)
    jobs += strategy_jobs(inp, read_fidelity(build_dir / "masks"))
    jobs += comparison_jobs(inp)
    jobs.append(
        (
            feature_distributions_figure,
            inp.region_rows,
            read_mask_rows(build_dir / "masks"),
            inp.geometry,
        )
    )
    jobs.append((score_heatmap_figure, inp.recs, list(inp.presets)))
    jobs.append((forest_figure, inp.recs, inp.machine_types, inp.ci_level))
    jobs.append((power_figure, read_power(build_dir)))
    downstream_record = read_downstream(build_dir)
    if downstream_record.enabled:
        jobs.append((downstream_figure, downstream_record, inp.machine_types))
    with atomic_dir(out_dir) as tmp:
        marker = SYNTHETIC_MARK if inp.synthetic else None
        tasks = [(tmp, inp.cfg["dpi"], marker, job) for job in jobs]
        # Figures are independent: draw them on all cores; map() keeps the manifest in order.
        with process_pool(resolve_n_jobs(inp.cfg["n_jobs"])) as pool:
            entries = [entry for drawn in pool.map(_draw, tasks) for entry in drawn]
        write_manifest(tmp, entries)
    log(f"figures: {len(entries)} figures -> {out_dir}")
    return Path(out_dir)
