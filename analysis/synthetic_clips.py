"""Synthetic clips one at a time: what one clip of the default set is (:class:`ClipJob`), how
it is rendered and written, and the extra normal train clips the downstream check asks for.

Shared by the ``synthesize`` stage (the whole default set) and ``downstream`` (its own train
clips), so that neither stage imports the other. See :mod:`analysis.synthesize` for what the
sounds and anomalies are and how their strength is calibrated.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from analysis.dcase import MACHINE_IDS, clip_name
from analysis.io import Progress
from analysis.synthesize_machines import Machine, clip_duration_s, clip_gain_db
from analysis.synthesize_signals import SR, region_energy
from analysis.workers import process_pool, resolve_n_jobs

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


def write_clip(job_and_root: tuple[ClipJob, str]) -> list[dict[str, Any]]:
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
        for _ in pool.map(write_clip, [(job, str(root)) for job in jobs], chunksize=4):
            progress.advance()
    progress.close(f"{n_jobs} processes")
    return [root / job.file for job in jobs]
