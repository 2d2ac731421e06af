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
    fitted_settings,
    is_ok,
    read_fidelity,
    read_localization_arrays,
    read_localization_summary,
    read_mask_rows,
    read_mask_samples,
    read_masks_meta,
    read_power,
    read_recommendations,
    read_region_rows,
    sample_key,
    write_manifest,
)
from analysis.checks import check_colormaps  # noqa: E402
from analysis.io import atomic_dir, log  # noqa: E402
from analysis.mel import MelGeometry  # noqa: E402
from analysis.plotting import (  # noqa: E402
    FigureSet,
    binary_map_grid,
    label_frame_axis,
    label_mel_axis,
    show_map,
    slug,
)
from analysis.regions import SCORE_FEATURES, score_transform  # noqa: E402
from analysis.strategies.factory import build_strategy  # noqa: E402
from analysis.workers import process_pool, resolve_n_jobs  # noqa: E402

FEATURE_LABELS = {
    "band_fraction": "band fraction (of n_mels)",
    "n_bands": "bands, log(1+n)/log(1+n_mels/2)",
    "band_centre_fraction": "band centre (fraction of n_mels)",
    "n_segments": "segments, log(1+n)/log(1+T/2)",
    "mean_seg_len_frames": "mean segment length / T",
    "time_coverage": "time coverage (fraction of T)",
}


def localization_figure(
    figs: FigureSet,
    machine_type: str,
    machine_id: str,
    maps: dict,
    pooled: np.ndarray | None,
    summary: dict,
    geometry,
    cfg,
) -> None:
    """The seed's three panels plus the excess map and its two profiles."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.6))
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.09, top=0.9, wspace=0.5, hspace=0.45)
    panels = [
        ("mean_norm", "Mean normal", cfg["cmap_spectrogram"], False),
        ("mean_anom", "Mean anomaly", cfg["cmap_spectrogram"], False),
        ("dev", "dev: mean |anomaly − mean normal|", cfg["cmap_deviation"], False),
        ("excess", "Excess over normal variability", "RdBu_r", True),
    ]
    for ax, (key, title, cmap, symmetric) in zip(axes.flat[:4], panels, strict=True):
        im = show_map(ax, maps[key], title, cmap, geometry, symmetric=symmetric)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    if pooled is not None and pooled.any():
        # The ID-level (pooled) region, outlined on the excess map.
        axes[1, 0].contour(pooled.astype(float), levels=[0.5], colors="k", linewidths=0.8)
    ax = axes[1, 1]
    ax.plot(maps["excess_freq_profile"], np.arange(geometry.n_mels), color="C3")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set(title="Excess, mean over time", xlabel="excess (normalized units)")
    label_mel_axis(ax, geometry)
    ax = axes[1, 2]
    ax.plot(maps["excess_time_profile"], color="C0")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set(title="Excess, mean over mel", ylabel="excess")
    label_frame_axis(ax, geometry)
    for ax in axes[1, 1:]:
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=6)
        ax.xaxis.label.set_fontsize(7)
        ax.yaxis.label.set_fontsize(7)
    fig.suptitle(
        f"{machine_type} / {machine_id}: {summary['n_normal']} normal, {summary['n_anomaly']} anomalous clips",
        fontsize=9,
    )
    figs.save(
        fig,
        f"fig-loc-{slug(machine_type)}-{slug(machine_id)}",
        f"Real anomaly localization for {machine_type} / {machine_id}: mean normal and mean anomalous "
        f"log-mel (normalized), dev = mean |anomaly − mean normal|, the excess of dev over normal "
        f"clip-to-clip variability (black outline: the ID-level pooled region, where one was found), "
        f"and the excess profiles over frequency and time.",
        "localization",
        machine_type=machine_type,
        machine_id=machine_id,
    )


def mask_grid_figure(
    figs: FigureSet, preset: str, samples: dict, grids: dict, methods: list[str], n: int
) -> None:
    """Mask samples at spectrogram size and on every grid with every resize method."""
    rows = [("full", "spectrogram size")] + [
        (sample_key(g, m), f"{g} {grids[g][0]}×{grids[g][1]}, {m}") for g in grids for m in methods
    ]
    n = min(n, samples["full"].shape[0])
    fig = binary_map_grid(
        [(label, samples[key]) for key, label in rows],
        n,
        1.25 * n + 1.0,
        1.15,
        [f"sample {j + 1}" for j in range(n)],
    )
    figs.save(
        fig,
        f"fig-masks-{slug(preset)}",
        f"Masks of the '{preset}' preset: the same samples at spectrogram size (top row) and resized "
        f"to each quantized grid with each resize method (black = masked).",
        "masks",
        preset=preset,
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
    fig = binary_map_grid(rows, n, 1.25 * n + 1.0, 1.05)
    figs.save(fig, fig_id, caption, "strategy")


def real_vs_synthetic_figure(
    figs, machine_type: str, real_regions: list, preset_masks: dict, fitted_masks: list | None
) -> None:
    """Real regions of several clips beside masks of every preset and of the fitted setting."""
    rows = [("real regions", real_regions), *preset_masks.items()]
    if fitted_masks is not None:
        rows.append(("fitted", fitted_masks))
    fig = binary_map_grid(rows, 4, 7.2, 1.05)
    fig.suptitle(
        f"{machine_type}: real anomaly regions vs synthetic masks (mel bin × frame)", fontsize=8
    )
    figs.save(
        fig,
        f"fig-real-vs-synthetic-{slug(machine_type)}",
        f"{machine_type}: regions found in real anomalous clips (top row) beside masks drawn with every "
        f"preset and with the fitted setting, all at spectrogram size.",
        "comparison",
        machine_type=machine_type,
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
                records += [(f"real: {machine_type}", f, r[f]) for f in SCORE_FEATURES]
    for r in mask_rows:
        if not np.isnan(r["area_fraction"]):  # empty masks have no features
            records += [(f"preset: {r['preset']}", f, r[f]) for f in SCORE_FEATURES]
    sources = list(dict.fromkeys(s for s, _, _ in records))
    # Two rows of panels, so the figure stays readable at A4 width.
    cols = 3
    n_rows = int(np.ceil(len(SCORE_FEATURES) / cols))
    fig, axes = plt.subplots(
        n_rows,
        cols,
        figsize=(9, n_rows * (0.3 * len(sources) + 1.0)),
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
        "Distributions of the score's five region features, each mapped to [0, 1]: real anomaly "
        "regions per machine type against the masks of every preset.",
        "scores",
    )


def score_heatmap_figure(figs, recs: list[dict], presets: list[str]) -> None:
    rows = [r for r in recs if r["machine_id"] == "all" and is_ok(r)]
    if not rows:  # no machine type has a fit: nothing to compare (the report says so)
        return
    names = [*presets, "recommended", "floor"]  # the real-vs-real floor as the yardstick row
    matrix = np.array([[r.get(f"score_{p}", np.nan) for r in rows] for p in names], dtype=float)
    fig, ax = plt.subplots(
        figsize=(1.1 * len(rows) + 2.2, 0.45 * len(names) + 1.0), constrained_layout=True
    )
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".3f",
        cmap="mako_r",
        xticklabels=[r["machine_type"] for r in rows],
        yticklabels=[n if n != "floor" else "real-vs-real floor" for n in names],
        ax=ax,
        cbar_kws={"label": "score (lower is closer)"},
        annot_kws={"fontsize": 7},
    )
    ax.tick_params(labelsize=7)
    figs.save(
        fig,
        "fig-score-heatmap",
        "Held-out score of every preset and of the fitted ('recommended') setting per machine type, "
        "and the real-vs-real floor (the fit half's regions scored against the held-out half's); "
        "lower means the masks' features are closer to the real anomaly regions.",
        "scores",
    )


def power_figure(figs, power: dict) -> None:
    """Detection power against spike-in strength, per machine type, pattern and level."""
    rows = power["rows"]
    if not rows:
        return
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
        height=2.3,
        aspect=1.6,
        facet_kws={"margin_titles": True},
    )
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    deltas = sorted({r["delta"] for r in rows})
    for ax in grid.axes.flat:
        ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
        ax.minorticks_off()
    grid.set_axis_labels("spike-in strength (within-ID cell SD)", "detected")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}", size=8)
    figs.save(
        grid.figure,
        "fig-power",
        "What the localization can detect on this data's own normal clips: known anomalies added to "
        "half of each ID's normal clips at a strength in units of the ID's cell SD; clip level: "
        "share of spiked clips whose region overlaps the truth; ID level: share of IDs with a pooled "
        "region on the truth.",
        "power",
    )


def fidelity_figure(figs, fidelity_rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
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
        ax.legend(fontsize=6, title=None)
    figs.save(
        fig,
        "fig-resize-fidelity",
        "What resizing to the quantized grids does to each preset's masks: the share of masks that "
        "vanish entirely and the mean IoU between the original mask and the resized one brought back "
        "to spectrogram size.",
        "masks",
    )


def overview_figure(figs, machine_types, loc_by_type, geometry) -> None:
    """The mean anomaly-minus-normal map of the first ID of every machine type."""
    n = len(machine_types)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 2.5 * rows), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, machine_type in zip(axes.flat, machine_types, strict=False):
        maps = loc_by_type[machine_type].maps
        ids = sorted(maps)
        if not ids:
            ax.set_title(f"{machine_type}: no localization", fontsize=8)
            ax.axis("off")
            continue
        im = show_map(
            ax,
            maps[ids[0]]["diff"],
            f"{machine_type} / {ids[0]}",
            "RdBu_r",
            geometry,
            symmetric=True,
        )
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    figs.save(
        fig,
        "fig-overview",
        "Mean anomalous minus mean normal log-mel (normalized units) for the first machine ID of every "
        "machine type: red where anomalies add energy, blue where they remove it.",
        "overview",
    )


def _draw(task: tuple) -> list[dict[str, Any]]:
    """Draw one figure job in a worker; return its manifest entries."""
    folder, dpi, (function, *args) = task
    sns.set_theme(style="whitegrid", context="paper")
    # A fixed title height: automatic placement measures every tick label of the axes at each
    # draw, a fifth of a localization figure's time (no axes here has ticks at the top).
    plt.rcParams.update({"axes.grid": False, "figure.dpi": dpi, "axes.titley": 1.0})
    figs = FigureSet(Path(folder), dpi)
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
    seed: int


def read_inputs(params: dict[str, Any], build_dir: Path) -> FigureInputs:
    masks_meta = read_masks_meta(build_dir / "masks")
    recs = read_recommendations(build_dir / "recommendations.json")
    machine_types = params["data"]["machine_types"]
    loc_dir = build_dir / "localization"
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
        seed=params["masks"]["seed"],
    )


def localization_jobs(inp: FigureInputs) -> list[tuple]:
    """The overview and one six-panel figure per localized machine ID."""
    jobs: list[tuple] = [(overview_figure, inp.machine_types, inp.loc_arrays, inp.geometry)]
    for machine_type in inp.machine_types:
        arrays = inp.loc_arrays[machine_type]
        for machine_id, summary in inp.summaries[machine_type]["ids"].items():
            if summary.get("status") == "ok":
                pooled = arrays.pooled.get(machine_id, {}).get("all")
                maps = arrays.maps[machine_id]
                jobs.append(
                    (
                        localization_figure,
                        machine_type,
                        machine_id,
                        maps,
                        pooled,
                        summary,
                        inp.geometry,
                        inp.cfg,
                    )
                )
    return jobs


def strategy_jobs(inp: FigureInputs, fidelity_rows: list[dict[str, Any]]) -> list[tuple]:
    """Mask samples per preset, resize fidelity, and the strategy's own outputs on q_bot."""
    n = inp.cfg["n_mask_samples"]
    jobs: list[tuple] = [
        (mask_grid_figure, preset, inp.samples[preset], inp.grids, inp.resize_methods, n)
        for preset in inp.presets
    ]
    jobs.append((fidelity_figure, fidelity_rows))
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
    """Real regions beside masks of every preset and of the fitted setting, per machine type.

    The masks stage's own samples stand for the presets (no second draw, and no torch
    import for Perlin in the figure workers); the fitted setting is drawn here.
    """
    preset_masks = {name: list(inp.samples[name]["full"][:4].astype(bool)) for name in inp.presets}
    jobs = []
    for machine_type in inp.machine_types:
        found = [r["file"] for r in inp.region_rows[machine_type] if r["found"]][:4]
        if not found:
            continue
        fitted = inp.fitted.get(machine_type)
        fitted_masks = (
            list(_full({"kind": "audio_specific", **fitted}, inp.geometry, inp.seed, 4))
            if fitted is not None
            else None
        )
        arrays = inp.loc_arrays[machine_type]
        jobs.append(
            (
                real_vs_synthetic_figure,
                machine_type,
                [arrays.region_of(f) for f in found],
                preset_masks,
                fitted_masks,
            )
        )
    return jobs


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
    jobs.append((power_figure, read_power(build_dir)))
    with atomic_dir(out_dir) as tmp:
        tasks = [(tmp, inp.cfg["dpi"], job) for job in jobs]
        # Figures are independent: draw them on all cores; map() keeps the manifest in order.
        with process_pool(resolve_n_jobs(inp.cfg["n_jobs"])) as pool:
            entries = [entry for drawn in pool.map(_draw, tasks) for entry in drawn]
        write_manifest(tmp, entries)
    log(f"figures: {len(entries)} figures -> {out_dir}")
    return Path(out_dir)
