"""Stage ``figures``: every figure of the report, pre-rendered with matplotlib and seaborn.

Writes PNGs and ``manifest.json`` (id, file, caption, section of each figure)
under ``report/figures/``; the report template only places what the manifest
lists, so a figure cannot be referenced without existing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from analysis.checks import check_colormaps  # noqa: E402
from analysis.io import atomic_dir, load_npz, log, read_csv, read_json, write_json  # noqa: E402
from analysis.masks import build_strategy, read_masks_meta  # noqa: E402
from analysis.mel import MelGeometry  # noqa: E402
from analysis.recommend import FIT_KEYS  # noqa: E402
from analysis.regions import SCORE_FEATURES, score_transform  # noqa: E402
from analysis.workers import process_pool, resolve_n_jobs  # noqa: E402

FEATURE_LABELS = {
    "band_fraction": "band fraction (of n_mels)",
    "n_bands": "bands, log(1+n)/log(1+n_mels/2)",
    "band_centre_fraction": "band centre (fraction of n_mels)",
    "n_segments": "segments, log(1+n)/log(1+T/2)",
    "mean_seg_len_frames": "mean segment length / T",
    "time_coverage": "time coverage (fraction of T)",
}


def slug(text: str) -> str:
    """A cross-reference-safe id part: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class FigureSet:
    """Saves figures into a folder and records them for the manifest."""

    def __init__(self, folder: Path, dpi: int) -> None:
        self.folder, self.dpi, self.entries = folder, dpi, []

    def save(self, fig, fig_id: str, caption: str, section: str, **extra: Any) -> None:
        file = f"{fig_id.removeprefix('fig-')}.png"
        # No bbox_inches="tight": every figure lays itself out (constrained layout or set
        # margins), and "tight" draws each figure twice.
        fig.savefig(self.folder / file, dpi=self.dpi, metadata={"Software": None})
        plt.close(fig)
        self.entries.append(
            {"id": fig_id, "file": file, "caption": caption, "section": section, **extra}
        )


def label_mel_axis(ax, geometry: MelGeometry, axis: str = "y") -> None:
    """Mel-bin ticks labelled with the bin and its centre frequency: ``40 (828)`` = bin 40, 828 Hz."""
    bins = np.linspace(0, geometry.n_mels - 1, 5).round().astype(int)
    labels = [f"{b} ({geometry.bin_to_hz(b):.0f})" for b in bins]
    if axis == "y":
        ax.set_yticks(bins, labels, fontsize=6)
        ax.set_ylabel("mel bin (Hz)", fontsize=7)
    else:
        ax.set_xticks(bins, labels, fontsize=6)
        ax.set_xlabel("mel bin (Hz)", fontsize=7)


def label_frame_axis(ax, geometry: MelGeometry) -> None:
    """Frame ticks labelled with the frame and its time: ``160 (5.1)`` = frame 160, 5.1 s."""
    frames = np.arange(0, geometry.target_T + 1, max(1, round(geometry.target_T / 3.2, -1)))
    ax.set_xticks(frames, [f"{f} ({geometry.frame_to_seconds(f):.1f})" for f in frames], fontsize=6)
    ax.set_xlabel("frame (s)", fontsize=7)


def show_map(ax, image, title, cmap, geometry=None, symmetric=False, **kw):
    if symmetric:
        limit = float(np.nanmax(np.abs(image))) or 1.0
        kw.update(vmin=-limit, vmax=limit)
    im = ax.imshow(image, aspect="auto", origin="lower", cmap=cmap, interpolation="nearest", **kw)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    if geometry is not None:
        label_frame_axis(ax, geometry)
        label_mel_axis(ax, geometry)
    return im


def localization_figure(
    figs: FigureSet, machine_type: str, machine_id: str, maps: dict, summary: dict, geometry, cfg
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
    pooled = maps.get("pooled_region")
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


def map_mosaic(
    rows: list[list[np.ndarray]], n: int, gap_fraction: float = 0.08
) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]]]:
    """0/1 maps tiled into one float image, top row first; NaN in gaps and empty slots.

    Every map is brought to the largest map's shape by nearest-neighbour
    indexing (a q-grid cell covers exactly the spectrogram cells it stands
    for) and flipped so that its first row, the lowest mel bin, is at the
    tile's bottom. Returns the image and the (start, size) in pixels of every
    tile row and tile column.
    """
    maps = [m for row in rows for m in row[:n]]
    tile_h = max(m.shape[0] for m in maps)
    tile_w = max(m.shape[1] for m in maps)
    gap_h = max(1, round(gap_fraction * tile_h))
    gap_w = max(1, round(gap_fraction * tile_w / 2))
    row_spans = [(r * (tile_h + gap_h), tile_h) for r in range(len(rows))]
    col_spans = [(j * (tile_w + gap_w), tile_w) for j in range(n)]
    image = np.full((row_spans[-1][0] + tile_h, col_spans[-1][0] + tile_w), np.nan, np.float32)
    for (top, _), row in zip(row_spans, rows, strict=True):
        for (left, _), tile in zip(col_spans, row[:n], strict=False):
            rows_idx = (np.arange(tile_h) * tile.shape[0]) // tile_h
            cols_idx = (np.arange(tile_w) * tile.shape[1]) // tile_w
            image[top : top + tile_h, left : left + tile_w] = tile[rows_idx[::-1]][:, cols_idx]
    return image, row_spans, col_spans


def binary_map_grid(
    rows: list[tuple[str, list[np.ndarray]]],
    n: int,
    width_in: float,
    row_in: float,
    column_titles=None,
):
    """A grid of 0/1 maps: one labelled row per source, ``n`` columns (black = masked).

    One image in one axes (see :func:`map_mosaic`), with a thin frame around
    every map: a 30-map grid then draws in a fraction of the time that 30
    axes take, and looks the same.
    """
    image, row_spans, col_spans = map_mosaic([maps for _, maps in rows], n)
    fig, ax = plt.subplots(figsize=(width_in, row_in * len(rows) + 0.3), layout="constrained")
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    ax.imshow(image, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="antialiased")
    frames = [
        [
            (x - 0.5, y - 0.5),
            (x + w - 0.5, y - 0.5),
            (x + w - 0.5, y + h - 0.5),
            (x - 0.5, y + h - 0.5),
            (x - 0.5, y - 0.5),
        ]
        for (y, h), (_, maps) in zip(row_spans, rows, strict=True)
        for (x, w), _ in zip(col_spans, maps[:n], strict=False)
    ]
    ax.add_collection(LineCollection(frames, colors="0.55", linewidths=0.6, clip_on=False))
    ax.set_yticks(
        [y + h / 2 for y, h in row_spans],
        [label.replace("_", " ").replace(", ", ",\n") for label, _ in rows],
        fontsize=8,
    )
    if column_titles:
        ax.set_xticks([x + w / 2 for x, w in col_spans], column_titles[:n], fontsize=8)
        ax.xaxis.set_ticks_position("top")
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def mask_grid_figure(
    figs: FigureSet, preset: str, samples: dict, grids: dict, methods: list[str], n: int
) -> None:
    """Mask samples at spectrogram size and on every grid with every resize method."""
    rows = [("full", "spectrogram size")] + [
        (f"{g}__{m}", f"{g} {grids[g][0]}×{grids[g][1]}, {m}") for g in grids for m in methods
    ]
    n = min(n, samples[f"{preset}__full"].shape[0])
    fig = binary_map_grid(
        [(label, samples[f"{preset}__{key}"]) for key, label in rows],
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
        strategy = build_strategy(preset, geometry, q_shape=q_shape, seed=seed + r)
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
    from analysis.masks import full_size_masks

    return full_size_masks(build_strategy(preset, geometry, seed=seed), n)


def feature_distributions_figure(figs, real_by_type, mask_rows, geometry) -> None:
    """Region features of real anomalies (per machine type) against every preset's masks."""
    n_mels, T = geometry.spectrogram_shape
    records = []
    for machine_type, rows in real_by_type.items():
        for r in rows:
            if r["found"] == "1":
                records += [(f"real: {machine_type}", f, float(r[f])) for f in SCORE_FEATURES]
    for r in mask_rows:
        if r["area_fraction"]:
            records += [(f"preset: {r['preset']}", f, float(r[f])) for f in SCORE_FEATURES]
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
    rows = [r for r in recs if r["machine_id"] == "all" and r.get("status") == "ok"]
    names = [*presets, "recommended"]
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
        yticklabels=names,
        ax=ax,
        cbar_kws={"label": "score (lower is closer)"},
        annot_kws={"fontsize": 7},
    )
    ax.tick_params(labelsize=7)
    figs.save(
        fig,
        "fig-score-heatmap",
        "Held-out score of every preset and of the fitted ('recommended') setting per machine type; "
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
        loc = loc_by_type[machine_type]
        ids = sorted({k.split("__")[0] for k in loc if k.endswith("__diff")})
        if not ids:
            ax.set_title(f"{machine_type}: no localization", fontsize=8)
            ax.axis("off")
            continue
        im = show_map(
            ax,
            loc[f"{ids[0]}__diff"],
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


def figures(
    params: dict[str, Any], build_dir: str | Path = "build", out_dir: str | Path = "report/figures"
) -> Path:
    """Draw all report figures into ``report/figures`` with a ``manifest.json``.

    Parameters
    ----------
    params
        Validated params; reads ``figures.*``, ``data.machine_types`` and the mel geometry.
    """
    cfg = params["figures"]
    check_colormaps(cfg)  # also in check-params; here for a stage run by hand
    geometry = MelGeometry.from_params(params)
    build_dir = Path(build_dir)
    masks_meta = read_masks_meta(build_dir / "masks")
    presets = masks_meta["presets"]
    grids = {g: tuple(s) for g, s in masks_meta["grids"].items()}
    samples = load_npz(build_dir / "masks" / "samples.npz")
    recs = read_json(build_dir / "recommendations.json")["rows"]
    fitted = {
        r["machine_type"]: {k: r[k] for k in FIT_KEYS}
        for r in recs
        if r["machine_id"] == "all" and r.get("status") == "ok"
    }
    machine_types = params["data"]["machine_types"]
    loc_by_type = {t: load_npz(build_dir / "localization" / f"{t}.npz") for t in machine_types}
    summaries = {t: read_json(build_dir / "localization" / f"{t}.json") for t in machine_types}
    regions_by_type = {
        t: read_csv(build_dir / "localization" / f"{t}.regions.csv") for t in machine_types
    }
    seed = params["masks"]["seed"]
    jobs: list[tuple] = [(overview_figure, machine_types, loc_by_type, geometry)]
    for machine_type in machine_types:
        loc = loc_by_type[machine_type]
        for machine_id, summary in summaries[machine_type]["ids"].items():
            if summary.get("status") == "ok":
                maps = {
                    k.split("__", 1)[1]: v
                    for k, v in loc.items()
                    if k.startswith(f"{machine_id}__")
                }
                jobs.append(
                    (localization_figure, machine_type, machine_id, maps, summary, geometry, cfg)
                )
    for preset in presets:
        jobs.append(
            (
                mask_grid_figure,
                preset,
                samples,
                grids,
                masks_meta["resize_methods"],
                cfg["n_mask_samples"],
            )
        )
    jobs.append((fidelity_figure, read_csv(build_dir / "masks" / "fidelity.csv")))
    q_bot = grids.get("q_bot", next(iter(grids.values())))
    seed_settings = {name: presets[name] for name in ("current", "proposed") if name in presets}
    if seed_settings:
        caption = (
            f"AudioSpecificStrategy outputs on the {q_bot[0]}×{q_bot[1]} grid (any-cell projection, as "
            "training projects it) with the seed's current and proposed settings."
        )
        jobs.append(
            (
                strategy_outputs_figure,
                seed_settings,
                geometry,
                q_bot,
                seed,
                "fig-strategy-seed",
                caption,
            )
        )
    if fitted:
        settings = {f"fitted: {t}": {"kind": "audio_specific", **f} for t, f in fitted.items()}
        caption = f"AudioSpecificStrategy outputs on the {q_bot[0]}×{q_bot[1]} grid with the setting fitted for each machine type."
        jobs.append(
            (
                strategy_outputs_figure,
                settings,
                geometry,
                q_bot,
                seed,
                "fig-strategy-fitted",
                caption,
            )
        )
    # The masks stage's own samples stand for the presets (no second draw, and no torch
    # import for Perlin in the figure workers); the fitted setting is drawn here.
    preset_masks = {name: list(samples[f"{name}__full"][:4].astype(bool)) for name in presets}
    for machine_type in machine_types:
        regions_csv = regions_by_type[machine_type]
        found = [r["file"] for r in regions_csv if r["found"] == "1"][:4]
        if found:
            loc = loc_by_type[machine_type]
            files = loc["region_files"].tolist()
            fitted_masks = (
                list(_full({"kind": "audio_specific", **fitted[machine_type]}, geometry, seed, 4))
                if machine_type in fitted
                else None
            )
            jobs.append(
                (
                    real_vs_synthetic_figure,
                    machine_type,
                    [loc["regions"][files.index(f)] for f in found],
                    preset_masks,
                    fitted_masks,
                )
            )
    jobs.append(
        (
            feature_distributions_figure,
            regions_by_type,
            read_csv(build_dir / "masks" / "features.csv"),
            geometry,
        )
    )
    jobs.append((score_heatmap_figure, recs, list(presets)))
    jobs.append((power_figure, read_json(build_dir / "power.json")))

    with atomic_dir(out_dir) as tmp:
        tasks = [(tmp, cfg["dpi"], job) for job in jobs]
        # Figures are independent: draw them on all cores; map() keeps the manifest in order.
        with process_pool(resolve_n_jobs(0)) as pool:
            entries = [entry for drawn in pool.map(_draw, tasks) for entry in drawn]
        write_json(tmp / "manifest.json", {"figures": entries})
    log(f"figures: {len(entries)} figures -> {out_dir}")
    return Path(out_dir)
