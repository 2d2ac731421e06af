"""Section "summary" (the recommendations): the forest plot of the paired held-out differences
behind each machine type's verdict."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from analysis.artifacts import (
    is_ok,
    row_verdict,
)
from analysis.plotting import PRINT_WIDTH_IN

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
