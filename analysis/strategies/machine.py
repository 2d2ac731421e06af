"""One fitted strategy per machine type, read from ``build/recommendations.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.strategies.band import AudioSpecificStrategy, TrainingAudioStrategy
from analysis.strategies.base import numpy_rng, resolve_shapes


class MachineSpecificStrategy:
    """One fitted strategy per machine type, from ``build/recommendations.json``.

    Built with the training code's convention plus ``machine_type``; called as
    ``strategy(batch_size, device)`` for the machine type given at construction,
    or ``strategy(batch_size, device, machine_type="fan")``. A machine type
    whose row had too little evidence for a fit uses ``fallback`` (today's
    training strategy unless given), and :attr:`fallback_types` lists them.
    """

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        machine_type: str | None = None,
        recommendations: str | Path = "build/recommendations.json",
        fallback: Any = None,
        projection: str = "any_cell",
        seed: int | None = None,
    ) -> None:
        import json

        shape, self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        rows = json.loads(Path(recommendations).read_text())["rows"]
        rng = numpy_rng(seed, None)
        self.strategies: dict[str, Any] = {}
        self.fallback_types: list[str] = []
        self.machine_type = machine_type
        for row in rows:
            if row["machine_id"] != "all":
                continue
            if row.get("status") != "ok":
                self.fallback_types.append(row["machine_type"])
                continue
            self.strategies[row["machine_type"]] = AudioSpecificStrategy(
                shape,
                self.q_shape,
                projection=projection,
                seed=int(rng.integers(2**31)),
                **row["fitted"],
            )
        self.fallback = fallback or TrainingAudioStrategy(
            shape, self.q_shape, projection=projection, seed=int(rng.integers(2**31))
        )
        if machine_type is not None and machine_type not in {
            *self.strategies,
            *self.fallback_types,
        }:
            known = ", ".join(sorted({*self.strategies, *self.fallback_types}))
            raise ValueError(f"machine_type {machine_type!r} is not in {recommendations} ({known})")

    def for_type(self, machine_type: str):
        """The strategy used for ``machine_type`` (the fallback where no fit was made)."""
        return self.strategies.get(machine_type, self.fallback)

    def __call__(self, batch_size: int, device: Any = "cpu", machine_type: str | None = None):
        chosen = machine_type or self.machine_type
        if chosen is None:
            raise ValueError("give machine_type at construction or in the call")
        return self.for_type(chosen)(batch_size, device)
