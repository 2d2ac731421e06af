"""Benchmark: the mask strategies as training calls them, against plain per-mask loops.

Two call patterns, each against its baseline measured in the same run:

* **batch 1, spectrogram size** (the training code's dataset calls
  ``strategy(1, device)`` once per item): ``TrainingAudioStrategy`` and
  ``MachineSpecificStrategy`` (a fitted type) against the plain per-item
  transcription of today's training strategy (``tests/training_transcription.py``:
  Python's ``random``, ``np.zeros``, slice assignment, ``torch.from_numpy``).
* **batch 256 on the q_bot grid (32 x 80)**: ``AudioSpecificStrategy`` with the
  seed's 'current' preset against the seed notebook's per-mask loop followed
  by the same projection (``nearest`` via ``F.interpolate``; ``any_cell`` via
  the training code's average pool then ``> 0``).

Usage: python benchmarks/bench_masks.py [--masks 4096] [--batch 256] [--items 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.strategies import (  # noqa: E402
    AudioSpecificStrategy,
    MachineSpecificStrategy,
    TrainingAudioStrategy,
)
from tests.training_transcription import training_item  # noqa: E402

# A fitted type as the recommend stage writes it: full-clip bands half of the time, else 1..3
# segments (the setting is typical of the default run's fits).
FITTED = {
    "min_band_fraction": 0.03,
    "max_band_fraction": 0.12,
    "min_bands": 1,
    "max_bands": 1,
    "full_time_prob": 0.5,
    "min_segments": 1,
    "max_segments": 3,
    "min_seg_len": 20,
    "max_seg_len": 120,
    "min_band_position": 0.2,
    "max_band_position": 0.8,
}

N_MELS, T, Q = 128, 320, (32, 80)


def seed_mask(rng, min_bf=0.05, max_bf=0.15, min_s=10, max_s=160, min_len=1, max_len=80):
    """The seed notebook's generator (per mask, per segment), at spectrogram size."""
    M = np.zeros((N_MELS, T), dtype=np.float32)
    width = max(1, int(N_MELS * rng.uniform(min_bf, max_bf)))
    f_low = rng.integers(0, max(1, N_MELS - width))
    for _ in range(rng.integers(min_s, max_s + 1)):
        seg_len = max(1, rng.integers(min_len, min(max_len + 1, T)))
        t_start = rng.integers(0, max(1, T - seg_len))
        M[f_low : f_low + width, t_start : min(t_start + seg_len, T)] = 1.0
    return torch.from_numpy(M)[None, None]


def project(mask: torch.Tensor, method: str) -> torch.Tensor:
    if method == "nearest":
        return F.interpolate(mask, size=Q, mode="nearest")
    stride = (N_MELS // Q[0], T // Q[1])
    return (F.avg_pool2d(mask, kernel_size=stride, stride=stride) > 0).float()


def rate(fn, n: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=4096, help="masks for the batch-256 runs")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=20000, help="calls for the batch-1 runs")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(
        f"batch 1 at spectrogram size ({N_MELS}x{T}), {args.items} calls, as the dataset calls it:"
    )
    py_rng = random.Random(0)
    loop_rate = rate(lambda: training_item(py_rng), args.items)
    ours = TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=0)
    ours_rate = rate(lambda: ours(1, "cpu"), args.items)
    with tempfile.TemporaryDirectory() as tmp:
        recs = Path(tmp) / "recommendations.json"
        row = {"machine_type": "fan", "machine_id": "all", "status": "ok", "fitted": FITTED}
        recs.write_text(json.dumps({"rows": [row]}))
        machine = MachineSpecificStrategy(
            (N_MELS, T), None, N_MELS, T, machine_type="fan", recommendations=recs, seed=0
        )
    machine_rate = rate(lambda: machine(1, "cpu"), args.items)
    print(f"  plain transcription (training strategy): {loop_rate:10.0f} masks/s")
    print(f"  TrainingAudioStrategy(1, 'cpu'):         {ours_rate:10.0f} masks/s")
    print(f"  MachineSpecificStrategy(1, 'cpu'), fit:  {machine_rate:10.0f} masks/s")
    print(f"  batch-1 ratio, training strategy / transcription: {ours_rate / loop_rate:.2f}x")
    print(f"  batch-1 ratio, machine-specific / transcription:  {machine_rate / loop_rate:.2f}x")

    n_batches = max(1, args.masks // args.batch)
    n_seed = max(256, args.masks // 8)  # the seed loop is slow; its rate is per mask anyway
    print(f"batch {args.batch} on the q_bot grid {Q}, 'current' preset, 1 thread:")
    for method in ("any_cell", "nearest"):
        rng = np.random.default_rng(0)
        seed_rate = rate(lambda m=method, g=rng: project(seed_mask(g), m), n_seed)
        strategy = AudioSpecificStrategy((N_MELS, T), Q, N_MELS, T, projection=method, seed=0)
        batch_rate = args.batch * rate(lambda s=strategy: s(args.batch, "cpu"), n_batches)
        print(f"  seed per-mask loop + {method:8s}:      {seed_rate:10.0f} masks/s")
        print(f"  AudioSpecificStrategy({args.batch}), {method:8s}: {batch_rate:10.0f} masks/s")
        print(f"  batch-{args.batch} ratio ({method}): {batch_rate / seed_rate:.0f}x")


if __name__ == "__main__":
    main()
