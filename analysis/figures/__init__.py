"""Stage ``figures``: every figure of the report, pre-rendered with matplotlib and seaborn.

Writes PNGs and ``manifest.json`` (id, file, caption, section of each figure)
under ``report/figures/``; the report template only places what the manifest
lists, so a figure cannot be referenced without existing.

One module per report section makes its figures and lists their drawing jobs:
:mod:`~analysis.figures.localization` (where each type's anomalies sit),
:mod:`~analysis.figures.masks` (mask samples, resizing, the strategy's outputs),
:mod:`~analysis.figures.scores` (regions beside fitted masks, feature distributions, the score
heatmap), :mod:`~analysis.figures.forest` (the verdicts' forest plot),
:mod:`~analysis.figures.power` (what the localization detects) and
:mod:`~analysis.figures.downstream` (the downstream check). :mod:`~analysis.figures.inputs` reads
what they draw, once; this module runs the jobs in a process pool and writes the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.artifacts import (  # noqa: E402
    read_downstream,
    read_fidelity,
    read_mask_rows,
    read_power,
    write_manifest,
)
from analysis.checks import check_colormaps  # noqa: E402
from analysis.dcase import unit_words  # noqa: E402
from analysis.figures.downstream import (  # noqa: E402
    dose_response_figure,
    downstream_figure,
)
from analysis.figures.forest import forest_figure  # noqa: E402
from analysis.figures.inputs import read_inputs  # noqa: E402
from analysis.figures.localization import localization_jobs  # noqa: E402
from analysis.figures.masks import strategy_jobs  # noqa: E402
from analysis.figures.power import power_figure  # noqa: E402
from analysis.figures.scores import (  # noqa: E402
    comparison_jobs,
    feature_distributions_figure,
    score_heatmap_figure,
)
from analysis.io import atomic_dir, log  # noqa: E402
from analysis.plotting import SYNTHETIC_MARK, FigureSet  # noqa: E402
from analysis.workers import process_pool, resolve_n_jobs  # noqa: E402


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
    units = unit_words(mid for summary in inp.summaries.values() for mid in summary["ids"])
    jobs.append((power_figure, read_power(build_dir), units))
    downstream_record = read_downstream(build_dir)
    if downstream_record.enabled:
        jobs.append((downstream_figure, downstream_record, inp.machine_types))
        jobs.append((dose_response_figure, downstream_record, inp.machine_types))
    with atomic_dir(out_dir) as tmp:
        marker = SYNTHETIC_MARK if inp.synthetic else None
        tasks = [(tmp, inp.cfg["dpi"], marker, job) for job in jobs]
        # Figures are independent: draw them on all cores; map() keeps the manifest in order.
        with process_pool(resolve_n_jobs(inp.cfg["n_jobs"])) as pool:
            entries = [entry for drawn in pool.map(_draw, tasks) for entry in drawn]
        write_manifest(tmp, entries)
    log(f"figures: {len(entries)} figures -> {out_dir}")
    return Path(out_dir)
