"""TrainingAudioStrategy and the training Perlin mode against a plain transcription of the training
code's stated sampler (tests/training_transcription.py), statistic by statistic, on 20,000 masks;
and randomness as training code expects it (DataLoader workers, global seeds)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, ks_2samp

from analysis.regions import longest_runs, run_counts
from analysis.strategies import (
    AudioSpecificStrategy,
    TrainingAudioStrategy,
    TrainingPerlinStrategy,
)
from tests.training_transcription import training_frames, training_perlin_mask

N_MELS, T = 128, 320
N = 20_000
P_MIN = 1e-3  # each comparison's p-value must exceed this (seeds are fixed: no flakes)


def first_starts(frames: np.ndarray) -> np.ndarray:
    return frames.argmax(axis=1)


def statistics(widths, lows, frames) -> dict[str, np.ndarray]:
    """The statistics the issue lists, from band widths, band lows and (N, T) frame vectors."""
    coverage = frames.mean(axis=1)
    full = (run_counts(frames) == 1) & (longest_runs(frames) >= int(0.85 * T))
    # Run lengths of the non-full masks (abutting segments read as one run, as a mask shows it).
    lengths = []
    for f in frames[~full]:
        edges = np.flatnonzero(np.diff(np.r_[0, f.astype(int), 0]))
        lengths += (edges[1::2] - edges[0::2]).tolist()
    return {
        "band_rows": np.asarray(widths),
        "band_start": np.asarray(lows),
        "full": full,
        "coverage_non_full": coverage[~full],
        "run_length": np.asarray(lengths),
        "n_runs": run_counts(frames[~full]),
        "first_start": first_starts(frames[~full]),
        "frame0": frames[:, 0],
    }


def chi2_same(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of a chi-square test that two samples of small integers share a distribution."""
    values = np.union1d(a, b)
    table = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    table = table[:, table.sum(axis=0) >= 10]  # sparse cells pooled out
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    return chisquare(table.ravel(), expected.ravel(), ddof=table.shape[1] - 1).pvalue


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    rnd = random.Random(12345)
    ref = [training_frames(rnd, N_MELS, T) for _ in range(N)]
    ref_stats = statistics(
        [w for w, _, _ in ref], [lo for _, lo, _ in ref], np.stack([f for _, _, f in ref])
    )
    ours = TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=7)
    widths, lows, frames = [], [], np.zeros((N, T), dtype=bool)
    for i in range(N):
        (low, width), segments = ours.runs_of_one()
        widths.append(width)
        lows.append(low)
        for start, length in segments:
            frames[i, start : start + length] = True
    return ref_stats, statistics(widths, lows, frames)


@pytest.mark.parametrize(
    "name, test",
    [
        ("band_rows", "chi2"),
        ("band_start", "ks"),
        ("full", "chi2"),
        ("coverage_non_full", "ks"),
        ("run_length", "ks"),
        ("n_runs", "chi2"),
        ("first_start", "ks"),
        ("frame0", "chi2"),
    ],
)
def test_training_strategy_draws_the_training_codes_distribution(both, name, test):
    ref, ours = both
    a, b = ref[name], ours[name]
    p = chi2_same(a.astype(int), b.astype(int)) if test == "chi2" else ks_2samp(a, b).pvalue
    assert p > P_MIN, (name, p, float(np.mean(a)), float(np.mean(b)))


def test_masks_are_the_runs_and_every_call_pattern_agrees():
    """full_size, batch-1 calls and projected calls show the same masks for the same seed."""
    a = TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=3)
    b = TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=3)
    c = TrainingAudioStrategy((N_MELS, T), (32, 80), N_MELS, T, seed=3)
    full = a.full_size(50)
    single = np.stack([b(1, "cpu")[0, 0].numpy() for _ in range(50)]).astype(bool)
    assert np.array_equal(full, single)
    q = c(50, "cpu")[:, 0].numpy().astype(bool)
    expected = full.reshape(50, 32, 4, 80, 4).any(axis=(2, 4))  # average pool then > 0
    assert np.array_equal(q, expected)
    rows = full.any(axis=2)
    assert np.all(run_counts(rows) == 1) and rows.sum(axis=1).max() <= int(0.1 * N_MELS)


N_PERLIN = 5_000  # the transcription's scipy rotation costs about 5 ms a mask


def perlin_statistics(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Area, time coverage (frames with a masked cell) and band coverage (rows with one)."""
    return {
        "area": masks.mean(axis=(1, 2)),
        "time_coverage": masks.any(axis=1).mean(axis=1),
        "row_coverage": masks.any(axis=2).mean(axis=1),
    }


def drawn_statistics(strategy, n: int, batch: int = 500) -> dict[str, np.ndarray]:
    parts = [perlin_statistics(strategy.full_size(min(batch, n - i))) for i in range(0, n, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.slow
def test_training_perlin_mode_draws_dsrs_distribution():
    """The training code's Perlin mode (lattice 2**k, k in 1..5 per axis; rotation in pixel space;
    threshold U(0.3, 0.6)) against the numpy/scipy transcription, on area, time coverage and row
    coverage. A changed rule is caught: a fixed threshold of 0.5 (the stand-alone strategy's),
    lattice exponents 0..6, or no rotation."""
    rnd, rng = random.Random(1), np.random.default_rng(1)
    ref = perlin_statistics(np.stack([training_perlin_mask(rnd, rng) for _ in range(N_PERLIN)]))
    ours = drawn_statistics(TrainingPerlinStrategy((N_MELS, T), None, N_MELS, T, seed=2), N_PERLIN)
    for name in ref:
        assert ks_2samp(ref[name], ours[name]).pvalue > P_MIN, name
    wrong_rules = (
        {"min_threshold": 0.5, "max_threshold": 0.5},
        {"min_scale_exp": 0, "max_scale_exp": 6},
        {"rotate": False},
    )
    for wrong in wrong_rules:
        other = drawn_statistics(
            TrainingPerlinStrategy((N_MELS, T), None, N_MELS, T, seed=2, **wrong), N_PERLIN
        )
        assert min(ks_2samp(ref[k], other[k]).pvalue for k in ref) < P_MIN, wrong


class MaskDataset(torch.utils.data.Dataset):
    """A training dataset's use of a strategy: one call per item."""

    def __init__(self, strategy, n: int = 8) -> None:
        self.strategy, self.n = strategy, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.strategy(1, "cpu")[0]


def loader_masks(strategy, num_workers: int) -> np.ndarray:
    loader = torch.utils.data.DataLoader(
        MaskDataset(strategy), batch_size=None, num_workers=num_workers
    )
    return np.stack([m.numpy() for m in loader])


STRATEGIES = {
    "training": lambda: TrainingAudioStrategy((N_MELS, T), None, N_MELS, T),
    "audio_specific": lambda: AudioSpecificStrategy((N_MELS, T), None, N_MELS, T),
}


@pytest.mark.parametrize("kind", STRATEGIES)
def test_dataloader_workers_draw_different_masks(kind):
    """Items 0, 2, 4, 6 come from worker 0 and 1, 3, 5, 7 from worker 1: unseeded strategies
    draw from each worker's own RNGs, so no pair is the same mask."""
    torch.manual_seed(0)
    random.seed(0)
    strategy = STRATEGIES[kind]()
    strategy(1, "cpu")  # drawn once in the main process first (a look before training)
    masks = loader_masks(strategy, num_workers=2)
    assert not any(np.array_equal(masks[i], masks[i + 1]) for i in range(0, 8, 2))


@pytest.mark.parametrize("kind", STRATEGIES)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_global_seeds_make_runs_repeatable(kind, num_workers):
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        random.seed(123)
        runs.append(loader_masks(STRATEGIES[kind](), num_workers))
    assert np.array_equal(runs[0], runs[1])
    torch.manual_seed(124)
    random.seed(124)
    assert not np.array_equal(runs[0], loader_masks(STRATEGIES[kind](), num_workers))


def test_an_explicit_seed_is_a_fixed_stream_whatever_the_global_state():
    torch.manual_seed(1)
    random.seed(1)
    a = TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=5).full_size(20)
    b_strategy = AudioSpecificStrategy((N_MELS, T), None, N_MELS, T, seed=5)
    b = b_strategy.full_size(20)
    torch.manual_seed(2)
    random.seed(2)
    assert np.array_equal(
        a, TrainingAudioStrategy((N_MELS, T), None, N_MELS, T, seed=5).full_size(20)
    )
    assert np.array_equal(
        b, AudioSpecificStrategy((N_MELS, T), None, N_MELS, T, seed=5).full_size(20)
    )
