"""Section "power": what the localization detects against spike-in strength."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import seaborn as sns

from analysis.dcase import UnitWords
from analysis.plotting import PRINT_WIDTH_IN

# The two levels the power curve is measured at: (label, column of build/power.csv).
LEVELS = (("clip level: recall", "clip_recall"), ("{level}: share of {shorts}", "id_found_share"))


def power_frame(rows: list[dict], words: UnitWords) -> pd.DataFrame:
    """One record per power row and level (long form, as seaborn's facets take it)."""
    records = [
        (r["machine_type"], r["pattern"], label.format(**asdict(words)), r["delta"], r[column])
        for r in rows
        for label, column in LEVELS
    ]
    return pd.DataFrame(records, columns=["machine type", "pattern", "level", "delta", "detected"])


def power_grid(frame: pd.DataFrame, deltas: list[float], words: UnitWords) -> sns.FacetGrid:
    """Detected share against strength (log axis, ticks at the measured strengths), a row of
    panels per pattern and a column per level, one line per machine type."""
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
    for ax in grid.axes.flat:
        ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
        ax.minorticks_off()
    grid.set_axis_labels(f"spike-in strength (within-{words.short} cell SD)", "detected")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}", size=8)
    return grid


def fit_to_page(grid: sns.FacetGrid) -> None:
    """The legend under the panels and the figure at print width, so it is no wider than the
    printed page; margins in inches."""
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


def power_figure(figs, power: dict, words: UnitWords) -> None:
    """Detection power against spike-in strength, per machine type, pattern and level."""
    rows = power["rows"]
    if not rows:
        return
    located = power["located_iou"]
    grid = power_grid(power_frame(rows, words), sorted({r["delta"] for r in rows}), words)
    fit_to_page(grid)
    figs.save(
        grid.figure,
        "fig-power",
        "What the localization can detect on this data's own normal clips: known anomalies added to "
        f"half of each {words.short}'s normal clips at a strength in units of the {words.short}'s "
        "cell SD; clip level: share of spiked clips whose region locates the planted one "
        f"(IoU ≥ {located:g}); {words.level}: share of {words.shorts} whose pooled region "
        f"locates it (IoU ≥ {located:g}).",
        "power",
    )
