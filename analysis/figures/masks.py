"""Sections "masks" and "strategy": every preset's mask samples (at spectrogram size and on
the latent grids), what resizing keeps, and what the strategy itself returns on q_bot."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns

from analysis.artifacts import sample_key
from analysis.figures.inputs import FigureInputs
from analysis.plotting import (
    PRINT_WIDTH_IN,
    FigureSet,
    binary_map_grid,
)
from analysis.strategies.factory import build_strategy


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


def strategy_outputs_figures(
    figs: FigureSet, outputs: list[tuple[dict[str, dict], str, str]], geometry, q_shape, seed: int
) -> None:
    """:func:`strategy_outputs_figure` for each (settings, figure id, caption), in order."""
    for settings, fig_id, caption in outputs:
        strategy_outputs_figure(figs, settings, geometry, q_shape, seed, fig_id, caption)


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
    outputs = []  # (settings, figure id, caption) of each strategy-outputs figure
    if seed_settings:
        caption = (
            f"AudioSpecificStrategy outputs {grid_text} (any-cell projection, as training "
            "projects it) with the seed's current and proposed settings."
        )
        outputs.append((seed_settings, "fig-strategy-seed", caption))
    if inp.fitted:
        settings = {f"fitted: {t}": f.to_json() for t, f in inp.fitted.items()}
        caption = f"AudioSpecificStrategy outputs {grid_text} with the setting fitted for each machine type."
        outputs.append((settings, "fig-strategy-fitted", caption))
    if outputs:
        # One job for both: calling a strategy imports torch (about 1.3 s of CPU), once.
        jobs.append((strategy_outputs_figures, outputs, inp.geometry, q_bot, inp.seed))
    return jobs
