"""Projection of spectrogram-size masks (and real regions) onto a latent grid.

``any_cell`` (a latent cell is masked when any spectrogram cell under it is; the
training code's average-pool-then-``> 0``) is the default; ``nearest`` (sample
every k-th row and column) is the older path, kept to show what it loses.
"""

from __future__ import annotations

import numpy as np

from analysis.strategies.errors import StrategySettingError
from analysis.strategies.options import PROJECTION_ALIASES, PROJECTIONS

# How masks and real regions are projected for the latent-grid scores: what training does.
LATENT_PROJECTION = "any_cell"


def projection_name(method: str) -> str:
    """The canonical projection name (``max_pool`` is accepted for ``any_cell``)."""
    name = PROJECTION_ALIASES.get(method, method)
    if name not in PROJECTIONS:
        raise StrategySettingError("projection", f"one of {', '.join(PROJECTIONS)}", method)
    return name


def project_axis(maps: np.ndarray, size: int, method: str, axis: int) -> np.ndarray:
    """Project bool ``maps`` to ``size`` cells along ``axis``.

    ``nearest`` keeps source index ``floor(i * L / size)`` (what
    ``F.interpolate(mode="nearest")`` picks); ``any_cell`` marks an output cell
    when any input cell of its window ``[floor(i L / size), ceil((i + 1) L / size))``
    is set (adaptive max pooling; the training code's stride average pool then
    ``> 0`` when L is a multiple of size).
    """
    length = maps.shape[axis]
    if size == length:
        return maps
    method = projection_name(method)
    if method == "nearest":
        return np.take(maps, (np.arange(size) * length) // size, axis=axis)
    moved = np.moveaxis(maps, axis, -1)
    if length % size == 0:
        out = moved.reshape(*moved.shape[:-1], size, length // size).any(axis=-1)
    else:
        counts = np.concatenate(
            [np.zeros((*moved.shape[:-1], 1), np.int64), np.cumsum(moved, axis=-1)], axis=-1
        )
        i = np.arange(size)
        starts, ends = (i * length) // size, -((-(i + 1) * length) // size)
        out = (counts[..., ends] - counts[..., starts]) > 0
    return np.moveaxis(out, -1, axis)


def project_maps(maps: np.ndarray, q_shape: tuple[int, int], method: str) -> np.ndarray:
    """Project (..., n_mels, T) bool maps onto a (H_q, W_q) latent grid (see :func:`project_axis`)."""
    out = project_axis(np.asarray(maps, dtype=bool), int(q_shape[0]), method, axis=-2)
    return project_axis(out, int(q_shape[1]), method, axis=-1)
