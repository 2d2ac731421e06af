"""Section "downstream": the proxy detectors' AUC per mask setting (``downstream.enabled``).

Figures of the downstream check go here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from analysis.artifacts import DownstreamRecord
from analysis.detection import REFERENCE_LABELS
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
