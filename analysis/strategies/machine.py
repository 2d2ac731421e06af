"""One fitted strategy per machine type, read from ``build/recommendations.json``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import (
    Verdict,
    read_recommendations,
    recommended_settings,
    row_verdict,
    type_rows,
)
from analysis.strategies.base import numpy_rng, resolve_shapes
from analysis.strategies.errors import StrategySettingError, refuse_unknown
from analysis.strategies.factory import build_strategy
from analysis.strategies.training import TrainingAudioStrategy


class MachineSpecificStrategy:
    """One strategy per machine type, as ``build/recommendations.json`` recommends it.

    Where a type's verdict is "switch", its candidate: the fitted setting (a single
    ``AudioSpecificStrategy``, or the mixture of its IDs' fits with every component and weight)
    or the preset it switches to. Everywhere else, *the setting you run*
    (``recommend.user_setting``, a preset in the file): where the verdict is "keep", and where
    it is "not enough evidence" (no fit, too few held-out regions, or a verdict that flips
    between splits; :attr:`user_setting_types` lists these with their reason). :attr:`choices`
    says what each type draws.

    Built with the training code's convention plus ``machine_type``; called as
    ``strategy(batch_size, device)`` for the machine type given at construction,
    or ``strategy(batch_size, device, machine_type="fan")``. Only a machine type that is not in
    the file at all draws from ``fallback`` (today's training strategy unless given), with a
    warning, once.
    A type's setting may be of any kind :func:`~analysis.strategies.factory.build_strategy`
    builds (:data:`analysis.strategies.registry.SETTING_KINDS`).
    """

    kind = "machine_specific"  # its kind in analysis.strategies.registry

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
        **unknown: Any,
    ) -> None:
        refuse_unknown(
            unknown, ("machine_type", "recommendations", "fallback", "projection", "seed")
        )
        shape, self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.spectrogram_shape = shape
        path = Path(recommendations)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no recommendations file here (working directory {Path.cwd()}); copy "
                "build/recommendations.json out of the analysis and pass its absolute path"
            )
        recs = read_recommendations(path)
        # Seeded: one fixed stream per type; unseeded: each draws from its process's RNGs.
        rng = numpy_rng(seed, None) if seed is not None else None

        def child_seed() -> int | None:
            return None if rng is None else int(rng.integers(2**31))

        # What each type's verdict recommends: its fit, or the preset it keeps.
        recommended = recommended_settings(recs)
        self.choices = {t: name for t, (name, _) in recommended.items()}
        self.strategies: dict[str, Any] = {
            t: build_strategy(
                setting.to_json(), shape, self.q_shape, projection, seed=child_seed(), name=name
            )
            for t, (name, setting) in recommended.items()
        }
        self.user_setting_types = {
            r["machine_type"]: row_verdict(r).reason
            for r in type_rows(recs)
            if row_verdict(r).kind is not Verdict.SWITCH
        }
        self.fallback = fallback or TrainingAudioStrategy(
            shape, self.q_shape, projection=projection, seed=child_seed()
        )
        self._warned: set[str] = set()
        self.machine_type = machine_type
        known = set(self.strategies)
        if machine_type is not None and machine_type not in known:
            raise StrategySettingError(
                "machine_type",
                f"one of {', '.join(sorted(known))} (the types in {path})",
                machine_type,
            )

    def __repr__(self) -> str:
        chosen = ", ".join(f"{t}: {name}" for t, name in self.choices.items())
        return (
            f"MachineSpecificStrategy({chosen}; the setting you run where the verdict is not "
            f"'switch'; a type not in the file: {type(self.fallback).__name__})"
        )

    def for_type(self, machine_type: str):
        """The strategy used for ``machine_type``: what its verdict says, or the fallback for a
        type the file does not have (warned once)."""
        if machine_type in self.strategies:
            return self.strategies[machine_type]
        if machine_type not in self._warned:
            self._warned.add(machine_type)
            warnings.warn(
                f"MachineSpecificStrategy: {machine_type!r} is not in the recommendations; "
                f"drawing from the fallback, {type(self.fallback).__name__}",
                stacklevel=3,
            )
        return self.fallback

    def _chosen(self, machine_type: str | None) -> str:
        chosen = machine_type or self.machine_type
        if chosen is None:
            raise StrategySettingError(
                "machine_type", "given at construction or in the call", machine_type
            )
        return chosen

    def __call__(self, batch_size: int, device: Any = "cpu", machine_type: str | None = None):
        """(B, 1, H_q, W_q) float32 0/1 masks of ``machine_type`` (or the type given at
        construction), a torch tensor on ``device``."""
        return self.for_type(self._chosen(machine_type))(batch_size, device)

    def full_size(self, batch_size: int, machine_type: str | None = None) -> np.ndarray:
        """(B, n_mels, T) bool masks of ``machine_type`` (or the type given at construction)."""
        return self.for_type(self._chosen(machine_type)).full_size(batch_size)

    def describe(self) -> str:
        """A short text for the report: what each machine type draws."""
        parts = [f"{t}: {self.choices[t]}" for t in self.strategies]
        fallback = getattr(self.fallback, "kind", type(self.fallback).__name__)
        parts.append(f"any other type: fallback ({fallback})")
        return f"{self.kind}: one strategy per machine type ({'; '.join(parts)})"
