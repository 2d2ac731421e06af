"""Benchmark: AudioSpecificStrategy as training calls it, against the seed's per-mask loop.

Both draw the 'current' preset (band 0.05-0.15, 10-160 segments of 1-80 frames)
on the q_bot grid (32 x 80) for the same number of masks in the same run. The
seed's way: one numpy mask at a time with a Python loop over segments, then
``F.interpolate(mode="nearest")``. Prints masks/s of each and their ratio.

Usage: python benchmarks/bench_masks.py [--masks 4096] [--batch 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.masks import AudioSpecificStrategy  # noqa: E402

N_MELS, T, Q = 128, 320, (32, 80)


def seed_mask(rng, min_bf=0.05, max_bf=0.15, min_s=10, max_s=160, min_len=1, max_len=80):
    """The seed notebook's generator (per mask, per segment), kept here as the baseline."""
    M = np.zeros((N_MELS, T), dtype=np.float32)
    width = max(1, int(N_MELS * rng.uniform(min_bf, max_bf)))
    f_low = rng.integers(0, max(1, N_MELS - width))
    for _ in range(rng.integers(min_s, max_s + 1)):
        seg_len = max(1, rng.integers(min_len, min(max_len + 1, T)))
        t_start = rng.integers(0, max(1, T - seg_len))
        M[f_low : f_low + width, t_start : min(t_start + seg_len, T)] = 1.0
    return F.interpolate(torch.from_numpy(M)[None, None], size=Q, mode="nearest")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_seed = max(256, args.masks // 8)  # the loop is slow; its rate is per mask anyway
    start = time.perf_counter()
    for _ in range(n_seed):
        seed_mask(rng)
    seed_rate = n_seed / (time.perf_counter() - start)
    strategy = AudioSpecificStrategy((N_MELS, T), Q, N_MELS, T, seed=0)
    strategy(args.batch, "cpu")  # warm-up
    start = time.perf_counter()
    for _ in range(args.masks // args.batch):
        strategy(args.batch, "cpu")
    ours_rate = (args.masks // args.batch) * args.batch / (time.perf_counter() - start)
    print(f"seed per-mask loop + nearest resize: {seed_rate:10.0f} masks/s ({n_seed} masks)")
    print(
        f"AudioSpecificStrategy(batch={args.batch}):      {ours_rate:10.0f} masks/s ({args.masks} masks, 1 thread)"
    )
    print(f"ratio: {ours_rate / seed_rate:.0f}x")


if __name__ == "__main__":
    main()
