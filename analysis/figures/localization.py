"""Section "localization": per machine type its IDs' excess maps with the regions found (the
report's figure) and the seed notebook's three panels per ID (the HTML's detail view)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from analysis.dcase import unit_label, unit_words
from analysis.figures.inputs import FigureInputs
from analysis.localization.maps import truth_map
from analysis.mel import MelGeometry
from analysis.plotting import (
    PRINT_WIDTH_IN,
    FigureSet,
    label_frame_axis,
    label_mel_axis,
    slug,
)


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


# How each region of a panel is outlined: (IdPanel field, colour, line style, legend label).
OUTLINES = (
    ("clip_regions", "white", "solid", "clip-level regions (union)"),
    ("pooled", "black", "solid", "{level} (pooled) region"),
    ("truth", "#1a9e1a", "dashed", "injected truth"),
)


def id_grid(n_panels: int) -> tuple[plt.Figure, np.ndarray, float]:
    """Up to four panels a row at print width, with fixed margins (in inches, so any row count
    fits: constrained layout is a third of the drawing time here); returns the figure, its
    (rows, cols) axes and its height in inches."""
    cols = min(4, n_panels)
    rows = int(np.ceil(n_panels / cols))
    height = 1.75 * rows + 0.75
    fig, axes = plt.subplots(rows, cols, figsize=(PRINT_WIDTH_IN, height), squeeze=False)
    fig.subplots_adjust(
        left=0.55 / PRINT_WIDTH_IN,
        right=1 - 0.95 / PRINT_WIDTH_IN,
        bottom=0.8 / height,
        top=1 - 0.35 / height,
        wspace=0.12,
        hspace=0.45,
    )
    return fig, axes, height


def draw_id_panel(ax, panel: IdPanel, limit: float):
    """One ID's excess map (symmetric colour scale up to ``limit``) with its outlines and a
    title counting its clips with a region; returns the image (for the colour bar)."""
    image = ax.imshow(
        panel.excess,
        aspect="auto",
        origin="lower",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
    )
    for field, colour, style, _ in OUTLINES:
        region = getattr(panel, field)
        if region is not None and region.any():
            ax.contour(
                region.astype(float), levels=[0.5], colors=colour, linewidths=0.9, linestyles=style
            )
    ax.set_title(
        f"{unit_label(panel.machine_id)}: {panel.n_regions}/{panel.n_anomaly} clips", fontsize=8
    )
    return image


def outline_legend(fig: plt.Figure, panels: list[IdPanel]) -> None:
    """The outlines' legend under the panels (the truth's only where some panel has one)."""
    from matplotlib.lines import Line2D

    with_truth = any(p.truth is not None and p.truth.any() for p in panels)
    handles = [
        Line2D(
            [],
            [],
            color=colour,
            lw=1.2,
            ls="--" if style == "dashed" else "-",
            label=label.format(level=unit_words(p.machine_id for p in panels).level),
        )
        for field, colour, style, label in OUTLINES
        if field != "truth" or with_truth
    ]
    legend = fig.legend(
        handles=handles,
        loc="lower center",
        ncols=len(handles),
        fontsize=7,
        facecolor="0.85",
        framealpha=1,
    )
    legend.get_frame().set_linewidth(0)


def type_localization_figure(
    figs: FigureSet, machine_type: str, panels: list[IdPanel], geometry: MelGeometry, words: str
) -> None:
    """A machine type's IDs as small multiples of the excess map, with the found regions
    (clip level: white; pooled: black) and, on synthetic data, the ground truth (dashed)."""
    fig, axes, height = id_grid(len(panels))
    rows, cols = axes.shape
    limit = max(float(np.nanpercentile(np.abs(p.excess), 99.5)) for p in panels) or 1.0
    image = None
    for k, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
        image = draw_id_panel(ax, panel, limit)
        label_frame_axis(ax, geometry, show=k // cols == rows - 1)
        label_mel_axis(ax, geometry, show=k % cols == 0)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    cax = fig.add_axes(
        (1 - 0.8 / PRINT_WIDTH_IN, 0.8 / height, 0.1 / PRINT_WIDTH_IN, 1 - 1.15 / height)
    )
    fig.colorbar(image, cax=cax, label="excess (normalized)")
    outline_legend(fig, panels)
    u = unit_words(p.machine_id for p in panels)
    figs.save(
        fig,
        f"fig-loc-{slug(machine_type)}",
        f"Where {machine_type}'s {words} sit, per {u.one}: the excess of the anomalous clips' "
        "deviation from the mean normal clip over what normal clips show against each other "
        "(red: more than normal variability), with the regions found at the clip level (white, "
        f"the union over clips; the title counts clips with a region) and at the {u.level} "
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
        f"{machine_type}, the seed notebook's view of every {unit_words(ids).one}: mean normal "
        "and mean "
        "anomalous log-mel (normalized) and dev, the mean absolute deviation of the anomalous "
        "clips from the mean normal clip.",
        "localization-detail",
        machine_type=machine_type,
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
