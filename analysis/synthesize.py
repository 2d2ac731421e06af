"""Stage ``synthesize``: a small DCASE-like data set with ground-truth anomaly regions.

Real DCASE audio cannot be fetched at set-up time, so the default input is
made here. Each machine type has a normal sound built from physical parts
(rotating harmonics, flow/friction noise with resonances, impacts, an active
window for the toy machines) with a character of its own per ID and per-clip
variation (speed, level, phase, background; for slider, pump and valve also recording
conditions: spectral tilt, factory noise of changing level, knocks; see
``synthesize_machines.ClipConditions``). Anomalies follow what published
mean anomaly-minus-normal maps of DCASE 2020 Task 2 show:

* fan: a stationary narrow tone added or a normal tone removed, whole clip;
* pump: the pump's whine lost plus a broadband lift, or the whine shifted;
* slider: impulsive rail clicks, or a broad low-to-mid band change;
* valve: extra rattles (0.2-0.8 s) at quasi-periodic times;
* ToyCar: a mid-to-high band plus a thin line, across the machine's active window;
* ToyConveyor: several thin lines across the active window, some adding energy (one of
  them near the machine's own recurring fault frequency) and some removing a normal motor
  harmonic.

Strength is calibrated to two published DCASE 2020 figures: at ``synthetic.strength``
1 the DCASE 2020 baseline autoencoder finds these anomalies about as often as it
finds the real ones (its AUC and pAUC per machine type, the spread of its per-ID AUCs;
``benchmarks/bench_calibration.py``), and the per-type time-averaged peak (median over
IDs of the peak over mel bins of |time-averaged mean anomalous - mean normal| in
per-clip standardized log-mel) lies within 0.5x-2x of the published map figures. Each anomalous clip draws its gain:
the type's ``REALISTIC_GAIN_DB`` times its ID's detectability (ordered as the
published per-ID AUCs) times a log-normal draw of mean 1, so many clips barely
differ from normal ones and a few grossly; valve rattles also draw their length.
A larger strength multiplies every drawn gain (in dB): an easier demonstration set.

Every injected region goes to ``ground_truth.csv`` with its *measured* gain
(anomalous over normal energy in the region; negative where energy was removed).
The clips are synthetic: nothing computed on them is a finding about real machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.dcase import GROUND_TRUTH_COLUMNS, MACHINE_IDS, SECTION_LAYOUT
from analysis.io import Progress, atomic_dir, log, write_csv, write_json
from analysis.synthesize_signals import SR
from analysis.synthetic_clips import (  # noqa: F401 - ClipJob, render_clip, write_train_clips re-exported
    ClipJob,
    plan_jobs,
    render_clip,
    write_clip,
    write_train_clips,
)
from analysis.synthetic_layout import to_section_layout
from analysis.workers import process_pool, resolve_n_jobs

GENERATOR_VERSION = 4


def synthesize(params: dict[str, Any], out_dir: str | Path = "data/synthetic") -> Path:
    """Write the synthetic DCASE-layout data set and its ground truth.

    Parameters
    ----------
    params
        Validated params; reads ``synthetic.*`` and ``data.machine_types``.
    out_dir
        Where the tree goes; replaced atomically when complete.
    """
    # Real data may list types the synthetic set does not make (ToyTrain): it makes the others.
    known = [t for t in params["data"]["machine_types"] if t in MACHINE_IDS]
    params = {**params, "data": {**params["data"], "machine_types": known}}
    jobs = plan_jobs(params)
    n_jobs = resolve_n_jobs(params["synthetic"]["n_jobs"])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for machine_type in params["data"]["machine_types"]:
            for split in ("train", "test"):
                (tmp / machine_type / split).mkdir(parents=True)
        progress = Progress("synthesize: clips", len(jobs))
        truth: dict[str, list[dict[str, Any]]] = {m: [] for m in params["data"]["machine_types"]}
        tasks = [(job, str(tmp)) for job in jobs]
        with process_pool(n_jobs) as pool:
            for job, rows in zip(jobs, pool.map(write_clip, tasks, chunksize=4), strict=True):
                truth[job.machine_type].extend(rows)
                progress.advance()
        progress.close(f"{n_jobs} processes")
        if params["synthetic"]["layout"] == SECTION_LAYOUT:  # sections, domains, attributes
            truth = to_section_layout(tmp, truth)
        for machine_type, rows in truth.items():
            write_csv(tmp / machine_type / "ground_truth.csv", rows, GROUND_TRUTH_COLUMNS)
        write_json(
            tmp / "synthetic.json",
            {
                "synthetic": True,
                "generator_version": GENERATOR_VERSION,
                "sample_rate": SR,
                "params": params["synthetic"],
                "machine_types": params["data"]["machine_types"],
                "n_clips": len(jobs),
                "note": "Synthetic DCASE-like clips made by `python -m analysis synthesize`; "
                "not recordings of real machines.",
            },
        )
    log(f"synthesize: wrote {len(jobs)} clips under {out_dir}")
    return out_dir
