"""Today's training strategy, exactly: the mask model the DSR-style training code draws from.

Per mask, with Python's ``random`` (``randint`` inclusive):

* with probability ``perlin_prob``: a Perlin mask of the training code's Perlin mode
  (:class:`~analysis.strategies.perlin.TrainingPerlinStrategy`);
* else one band: width uniform in ``1..max(1, int(n_mels * max_band_frac))`` rows,
  lowest row uniform in ``0..n_mels - width``;
* and, with probability ``full_time_prob``, one segment: coverage uniform in
  ``[0.85, 1]``, length ``int(T * coverage)``, start uniform in ``0..T - length``;
* else ``n_seg`` uniform in ``2..max_segments`` segments, each placed by up to 400
  tries of (length uniform in ``T // 10..T // 3``, start uniform in ``0..T - length``),
  a try rejected when it overlaps a segment already placed (half-open intervals:
  touching is allowed, so segments can abut); a segment that fails 400 tries ends
  the placement.

Unseeded, it draws from the global ``random`` module, as the training code does, so
``random.seed`` makes a run repeatable and PyTorch's per-worker seeding makes the
workers of a DataLoader differ. ``seed=`` gives a private, fixed stream.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from analysis.strategies.base import numpy_rng, resolve_shapes, to_tensor
from analysis.strategies.errors import refuse_unknown
from analysis.strategies.options import (
    FULL_COVERAGE,
    PLACEMENT_TRIES,
    TRAINING_OPTIONS,
    check_training_options,
)
from analysis.strategies.projection import project_maps, projection_name


class TrainingAudioStrategy:
    """The training code's ``AudioSpecificStrategy`` as it is today (see the module docstring).

    Parameters
    ----------
    spectrogram_shape, q_shape, n_mels, T
        The training code's convention; ``q_shape=None`` means spectrogram size.
    perlin_prob, full_time_prob, max_band_frac, max_segments
        The training code's options (defaults 0, 0.3, 0.1, 5).
    projection
        ``any_cell`` (the training code's average pool then ``> 0``) or ``nearest``.
    seed, generator
        A private stream; neither means the global ``random`` module.
    """

    kind = "training_audio"  # its kind in analysis.strategies.registry

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        perlin_prob: float | None = None,
        full_time_prob: float | None = None,
        max_band_frac: float | None = None,
        max_segments: int | None = None,
        *,
        projection: str = "any_cell",
        seed: int | None = None,
        generator: Any = None,
        **unknown: Any,
    ) -> None:
        refuse_unknown(unknown, (*TRAINING_OPTIONS, "projection", "seed", "generator"))
        (H, W), self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.spectrogram_shape, self.n_mels, self.T = (H, W), H, W
        self.options = check_training_options(
            H,
            W,
            perlin_prob=perlin_prob,
            full_time_prob=full_time_prob,
            max_band_frac=max_band_frac,
            max_segments=max_segments,
        )
        self.projection = projection_name(projection)
        seeded = seed is not None or generator is not None
        self.random = (
            random.Random(int(numpy_rng(seed, generator).integers(2**62))) if seeded else random
        )
        self.max_width = max(1, int(H * float(self.options["max_band_frac"])))
        self._perlin = None
        if self.options["perlin_prob"] > 0:
            from analysis.strategies.perlin import TrainingPerlinStrategy

            self._perlin = TrainingPerlinStrategy(
                (H, W), None, seed=self.random.getrandbits(62) if seeded else None
            )

    def runs_of_one(self) -> tuple[tuple[int, int], list[tuple[int, int]]] | None:
        """One mask's band (lowest row, rows) and segments (start, frames); None for Perlin."""
        rnd, o, T = self.random, self.options, self.T
        if o["perlin_prob"] > 0 and rnd.random() < o["perlin_prob"]:
            return None
        width = rnd.randint(1, self.max_width)
        band = (rnd.randint(0, self.n_mels - width), width)
        if rnd.random() < o["full_time_prob"]:
            length = int(T * rnd.uniform(*FULL_COVERAGE))
            return band, [(rnd.randint(0, T - length), length)]
        placed: list[tuple[int, int]] = []
        for _ in range(rnd.randint(2, o["max_segments"])):
            for _try in range(PLACEMENT_TRIES):
                length = rnd.randint(T // 10, T // 3)
                start = rnd.randint(0, T - length)
                if all(start >= s + n or s >= start + length for s, n in placed):
                    placed.append((start, length))
                    break
            else:
                break  # this segment found no room: the placement ends
        return band, placed

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        out = np.zeros((int(batch_size), self.n_mels, self.T), dtype=bool)
        for b in range(int(batch_size)):
            runs = self.runs_of_one()
            if runs is None:
                out[b] = self._perlin.full_size(1)[0]
                continue
            (low, width), segments = runs
            for start, length in segments:
                out[b, low : low + width, start : start + length] = True
        return out

    def __call__(self, batch_size: int, device: Any = "cpu"):
        """Masks of shape (B, 1, H_q, W_q), float32 0/1, on ``device`` (a torch tensor)."""
        if batch_size == 1 and self.q_shape == self.spectrogram_shape:
            # The dataset's call, once per item: no projection, one small array.
            runs = self.runs_of_one()
            if runs is not None:
                mask = np.zeros((1, 1, self.n_mels, self.T), dtype=np.float32)
                (low, width), segments = runs
                for start, length in segments:
                    mask[0, 0, low : low + width, start : start + length] = 1.0
                return to_tensor(mask, device)
            full = self._perlin.full_size(1)
        else:
            full = self.full_size(batch_size)
        small = project_maps(full, self.q_shape, self.projection)
        return to_tensor(small[:, None].astype(np.float32), device)

    def describe(self) -> str:
        """A short text for the report: the kind and the options that differ from its defaults."""
        changed = {k: v for k, v in self.options.items() if v != TRAINING_OPTIONS[k]}
        words = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the training code's defaults"
        return f"{self.kind}: today's training strategy; {words}"
