"""A mixture of fitted settings: each mask drawn from one component, chosen by its weight.

A machine type whose IDs look different (a full-clip band in one, short segments in another)
is matched better by its IDs' own settings in proportion than by one setting for all
(the ``recommend`` stage scores both and says which it recommends).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.strategies.band import AudioSpecificStrategy
from analysis.strategies.base import ProcessRng, resolve_shapes, to_tensor
from analysis.strategies.errors import refuse_unknown
from analysis.strategies.options import check_mixture_components
from analysis.strategies.projection import project_maps, projection_name


class MixtureStrategy:
    """Each mask from one of ``components`` (``[{"weight", "fitted"}]``), chosen by weight.

    Built with the training code's convention; ``strategy(batch_size, device)`` returns
    (B, 1, H_q, W_q) float 0/1 masks. Seeded, a fixed stream; unseeded, the process's
    global RNGs (see :mod:`analysis.strategies.base`).
    """

    kind = "mixture"  # its kind in analysis.strategies.registry

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        components: list[dict[str, Any]],
        projection: str = "any_cell",
        seed: int | None = None,
        **unknown: Any,
    ) -> None:
        refuse_unknown(unknown, ("components", "projection", "seed"))
        components = check_mixture_components(components)
        self.spectrogram_shape, self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.projection = projection_name(projection)
        weights = np.array([float(c["weight"]) for c in components])
        self.weights = weights / weights.sum()
        self._rng = ProcessRng(seed, None)
        self.components = [
            AudioSpecificStrategy(
                self.spectrogram_shape,
                self.q_shape,
                projection=projection,
                seed=None if seed is None else seed + 1 + k,
                **c["fitted"],
            )
            for k, c in enumerate(components)
        ]

    def _choices(self, batch_size: int) -> np.ndarray:
        return self._rng.generator.choice(len(self.components), size=batch_size, p=self.weights)

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        choice = self._choices(int(batch_size))
        out = np.zeros((int(batch_size), *self.spectrogram_shape), dtype=bool)
        for k, component in enumerate(self.components):
            pick = np.flatnonzero(choice == k)
            if pick.size:
                out[pick] = component.full_size(pick.size)
        return out

    def __call__(self, batch_size: int, device: Any = "cpu"):
        """Masks of shape (B, 1, H_q, W_q), float32 0/1, on ``device`` (a torch tensor)."""
        if batch_size == 1:  # the dataset's call: one component draws the item
            return self.components[int(self._choices(1)[0])](1, device)
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return to_tensor(small[:, None].astype(np.float32), device)

    def describe(self) -> str:
        """A short text for the report: the components' weights and what each draws."""
        parts = [
            f"{w:.2f} x ({c.describe().split('; ', 1)[1]})"
            for w, c in zip(self.weights, self.components, strict=True)
        ]
        return f"{self.kind} of {len(parts)} fitted settings: {'; '.join(parts)}"
