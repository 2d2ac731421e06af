"""Shared fixtures: tiny DCASE trees and params the tests make themselves."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from analysis.params import validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def default_params() -> dict:
    return validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture
def params(default_params) -> dict:
    """A mutable copy of the project's params."""
    return copy.deepcopy(default_params)


def tone_clip(
    rng: np.random.Generator,
    seconds: float,
    sr: int = 16000,
    tone_hz: float = 1000.0,
    extra_hz=None,
) -> np.ndarray:
    """Noise plus a tone; ``extra_hz`` adds a second, anomalous tone."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(
        2 * np.pi * tone_hz * t + rng.uniform(0, 6)
    )
    if extra_hz:
        y += 0.2 * np.sin(2 * np.pi * extra_hz * t)
    return y.astype(np.float32)


def write_tree(
    root: Path,
    machine_type: str = "fan",
    ids=("id_00", "id_02"),
    n_train=4,
    n_normal=3,
    n_anomaly=3,
    seconds=2.0,
    seed=0,
) -> Path:
    """A small DCASE-layout tree: train normal clips and test normal/anomaly clips."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / machine_type / split).mkdir(parents=True, exist_ok=True)
    groups = [
        ("train", "normal", n_train, None),
        ("test", "normal", n_normal, None),
        ("test", "anomaly", n_anomaly, 3000.0),
    ]
    for machine_id in ids:
        for split, label, count, extra_hz in groups:
            for i in range(count):
                path = root / machine_type / split / f"{label}_{machine_id}_{i:08d}.wav"
                sf.write(path, tone_clip(rng, seconds, extra_hz=extra_hz), 16000, subtype="PCM_16")
    return root
