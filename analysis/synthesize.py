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

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from analysis.dcase import GROUND_TRUTH_COLUMNS, MACHINE_IDS, SECTION_LAYOUT, clip_name
from analysis.io import Progress, atomic_dir, log, write_csv, write_json
from analysis.synthesize_machines import Machine, clip_duration_s, clip_gain_db
from analysis.synthesize_signals import SR, region_energy
from analysis.synthetic_layout import to_section_layout
from analysis.workers import process_pool, resolve_n_jobs

GENERATOR_VERSION = 4


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipJob:
    machine_type: str
    machine_id: str
    split: str
    label: int
    index: int
    seed: int
    strength: float
    stream: int = 0  # 0: the default set's clips; another value: clips of a stream of its own

    @property
    def file(self) -> str:
        return (
            f"{self.machine_type}/{self.split}/{clip_name(self.label, self.machine_id, self.index)}"
        )


def render_clip(job: ClipJob) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Make one clip: int16 samples and its ground-truth rows (empty for normal clips)."""
    machine = Machine(job.machine_type, job.machine_id, job.seed)
    key = zlib.crc32(job.file.encode())
    rng = np.random.default_rng([job.seed, key, job.stream] if job.stream else [job.seed, key])
    n = int(clip_duration_s(job.machine_type) * SR)
    # The clip's recording conditions come from a stream of their own (see ClipConditions).
    conditions_rng = np.random.default_rng([job.seed, key, job.stream, 1])
    sound = machine.normal(rng, n, conditions_rng)
    normal_mix = sound.mix()
    # The level comes from the normal sound only: an anomaly must never rescale the whole
    # clip (that would turn a local change into a global one). -30 dBFS leaves room for clicks.
    level = 10 ** ((-30 + rng.normal(0, 1.0)) / 20) / (np.sqrt(np.mean(normal_mix**2)) + 1e-12)
    rows: list[dict[str, Any]] = []
    if job.label == 1:
        gain_db = clip_gain_db(rng, job.machine_type, job.machine_id, job.strength)
        anomaly = machine.anomaly(sound, rng, gain_db)
        mix = sound.mix()
        for region in anomaly.regions:
            measured = 10 * np.log10(
                region_energy(mix, *region) / region_energy(normal_mix, *region)
            )
            rows.append(
                {
                    "file": job.file,
                    "kind": anomaly.kind,
                    "f_lo_hz": round(max(region[0], 0.0), 1),
                    "f_hi_hz": round(min(region[1], SR / 2), 1),
                    "t_start_s": round(region[2], 3),
                    "t_end_s": round(region[3], 3),
                    "gain_db": round(float(measured), 2),
                    "clip_strength_db": round(float(gain_db), 2),
                }
            )
    else:
        mix = normal_mix
    y = np.clip(mix * level, -1.0, 32767 / 32768)
    return np.round(y * 32767).astype(np.int16), rows


def _write_clip(job_and_root: tuple[ClipJob, str]) -> list[dict[str, Any]]:
    job, root = job_and_root
    samples, rows = render_clip(job)
    # Encoded in memory, written by Python: a full disk or a size limit then fails with an
    # OSError that names the file and the cause (libsndfile says only "System error").
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, subtype="PCM_16", format="WAV")
    path = Path(root) / job.file
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as err:  # a failed write() carries no file name: give it one
        raise OSError(err.errno, err.strerror, str(path)) from None
    return rows


def plan_jobs(params: dict[str, Any]) -> list[ClipJob]:
    """Every clip the synthetic set holds, in a fixed order."""
    s = params["synthetic"]
    jobs = []
    for machine_type in params["data"]["machine_types"]:
        for machine_id in MACHINE_IDS[machine_type][: s["ids_per_type"]]:
            counts = [
                ("train", 0, s["train_clips_per_id"]),
                ("test", 0, s["test_normal_clips_per_id"]),
                ("test", 1, s["test_anomaly_clips_per_id"]),
            ]
            for split, label, count in counts:
                for index in range(count):
                    jobs.append(
                        ClipJob(
                            machine_type,
                            machine_id,
                            split,
                            label,
                            index,
                            s["seed"],
                            s["strength"],
                        )
                    )
    return jobs


# The random stream of the extra train clips (write_train_clips): the same machines as the
# default set, clips that never repeat one of its own.
EXTRA_TRAIN_STREAM = 1


def write_train_clips(params: dict[str, Any], root: Path, n_per_id: int) -> list[Path]:
    """Write extra normal train clips of the default set's machines, DCASE 2020 layout.

    Parameters
    ----------
    params
        Validated params; reads ``synthetic.*`` (seed, IDs per type, n_jobs) and
        ``data.machine_types``.
    root
        The clips go to ``root/<type>/train/normal_id_XX_NNNNNNNN.wav`` (folders made).
    n_per_id
        Clips per (type, ID), numbered 0 .. n_per_id - 1.

    Returns
    -------
    The written paths, in (type, ID, index) order. Each (type, ID) sounds as that machine
    does in the default set (same per-ID character); the clips come from a random stream
    of their own, so none repeats a default train or test clip. Deterministic.
    """
    s = params["synthetic"]
    jobs = [
        ClipJob(
            machine_type,
            machine_id,
            "train",
            0,
            index,
            s["seed"],
            s["strength"],
            EXTRA_TRAIN_STREAM,
        )
        for machine_type in params["data"]["machine_types"]
        for machine_id in MACHINE_IDS[machine_type][: s["ids_per_type"]]
        for index in range(n_per_id)
    ]
    root = Path(root)
    for machine_type in params["data"]["machine_types"]:
        (root / machine_type / "train").mkdir(parents=True, exist_ok=True)
    n_jobs = resolve_n_jobs(s["n_jobs"])
    progress = Progress("synthesize: extra train clips", len(jobs))
    with process_pool(n_jobs) as pool:
        for _ in pool.map(_write_clip, [(job, str(root)) for job in jobs], chunksize=4):
            progress.advance()
    progress.close(f"{n_jobs} processes")
    return [root / job.file for job in jobs]


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
            for job, rows in zip(jobs, pool.map(_write_clip, tasks, chunksize=4), strict=True):
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
