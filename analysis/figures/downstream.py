"""Section "downstream": the proxy detectors' AUC per mask setting (``downstream.enabled``).

Figures of the downstream check go here."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from analysis.artifacts import DownstreamRecord
from analysis.detection import REFERENCE_LABELS, curve_answer
from analysis.plotting import PRINT_WIDTH_IN


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


def _path_order(names: list[str], user: str) -> list[str]:
    """The path's settings in order: the user's setting, ``path_*`` by fraction, ``fitted``."""
    inner = sorted((n for n in names if n.startswith("path_")), key=lambda n: int(n[5:]))
    return [n for n in [user, *inner, "fitted"] if n in names]


def _dose_response_panel(ax, machine_type: str, summary: dict) -> None:
    """One type's panel: every setting's AUC against its held-out mask score with intervals,
    the path joined by a line, ρ and the curve's shape in the title."""
    found = summary["rank_correlation"]
    points = {n: summary["settings"][n] for n in found["settings"]}
    path = _path_order(list(points), summary.get("user_setting", "current"))
    for name, v in points.items():
        on_path = name in path
        colour = "#1f5fa8" if on_path else "#b05a00"
        ci = v.get("mask_score_ci") or [v["mask_score"]] * 2
        ax.plot(ci, [v["auc"]] * 2, color=colour, lw=0.8, alpha=0.7)
        ax.plot([v["mask_score"]] * 2, v["auc_ci"], color=colour, lw=0.8, alpha=0.7)
        ax.plot(v["mask_score"], v["auc"], "o" if on_path else "D", color=colour, ms=3.5)
    ax.plot(
        [points[n]["mask_score"] for n in path],
        [points[n]["auc"] for n in path],
        color="#1f5fa8",
        lw=1.0,
    )
    ax.axhline(0.5, color="0.3", lw=0.8, ls="--")
    _label_points(ax, {n: points[n] for n in points if n not in path[1:-1]})
    low, high = found["ci"]
    rho = "–" if found["rho"] is None else f"{found['rho']:+.2f}"
    ci = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
    answer = textwrap.fill(_panel_answer(summary), 34)  # three panels share the print width
    ax.set_title(f"{machine_type}: ρ {rho}{ci}\n{answer}", fontsize=7)
    ax.set_xlabel("mask score (lower: closer)")
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.set_ylabel("proxy AUC")


def spread_labels(heights: list[float], min_gap: float) -> list[float]:
    """Label heights (axes fraction) moved apart to at least ``min_gap`` each, in their own
    order, as little as possible: sorted, pushed up where too close, then the stack shifted
    back down by its mean displacement and kept inside 0.02-0.98."""
    order = sorted(range(len(heights)), key=lambda i: heights[i])
    placed = [heights[i] for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + min_gap)
    shift = float(np.mean([p - heights[i] for p, i in zip(placed, order, strict=True)]))
    shift = min(shift, placed[0] - 0.02)  # never below the axes' foot
    placed = [p - shift for p in placed]
    overflow = max(0.0, placed[-1] - 0.98)
    placed = [p - overflow for p in placed]
    out = [0.0] * len(heights)
    for p, i in zip(placed, order, strict=True):
        out[i] = p
    return out


def _label_points(ax, points: dict[str, dict]) -> None:
    """Each setting's name beside its point, stacked so no two overlap (a thin line leads to
    a point whose label had to move)."""
    if not points:
        return
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    names = list(points)
    xs = [(points[n]["mask_score"] - x0) / (x1 - x0) for n in names]
    ys = [(points[n]["auc"] - y0) / (y1 - y0) for n in names]
    for name, x, y, label_y in zip(names, xs, ys, spread_labels(ys, 0.075), strict=True):
        moved = abs(label_y - y) > 0.01
        ax.annotate(
            name.replace("_", " "),
            (x, y),
            xycoords="axes fraction",
            xytext=(x + 0.04, label_y),
            textcoords="axes fraction",
            fontsize=6,
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if moved else None,
        )


def _panel_answer(summary: dict) -> str:
    """The second title line: what the report may say of the curve (:func:`curve_answer`);
    a panel is drawn only for a type with a named shape, so None means not valid."""
    return curve_answer(summary) or "check not valid here: no evidence"


def dose_response_figure(figs, record: DownstreamRecord, machine_types: list[str]) -> None:
    """Per machine type, proxy AUC against the held-out mask score of every setting, both with
    intervals; the path from the user's setting to the fitted one joined by a line; the rank
    correlation with its interval and the curve's shape in the panel's title."""
    types = [
        t for t in machine_types if t in record.types and "rank_correlation" in record.types[t]
    ]
    types = [t for t in types if "shape" in record.types[t]["rank_correlation"]]
    if not types:
        return
    n_cols = min(3, len(types))
    n_rows = -(-len(types) // n_cols)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(PRINT_WIDTH_IN, 2.3 * n_rows + 0.4),
        layout="constrained",
        squeeze=False,
    )
    for ax in axes.flat[len(types) :]:
        ax.set_visible(False)
    for ax, t in zip(axes.flat, types, strict=False):
        _dose_response_panel(ax, t, record.types[t])
    figs.save(
        fig,
        "fig-dose-response",
        "Dose-response per machine type: proxy AUC against the held-out mask score of each "
        "setting (circles joined by a line: the path from your setting to the fitted one, "
        f"parameters interpolated as the fit moves them; diamonds: the other presets), with "
        f"{record.ci_level:.0%} intervals both ways (none along the mask score where it rests on "
        "too few held-out regions). Title: the rank correlation of closeness and AUC, its "
        "interval resampling test clips, training seeds and the held-out regions the mask "
        "score is computed on, and the shape of the curve, or why none is stated.",
        "downstream",
    )
