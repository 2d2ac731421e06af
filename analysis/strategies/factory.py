"""A strategy from a ``masks.presets`` entry or a fitted setting: ``kind`` decides which.

``audio_specific``: :class:`AudioSpecificStrategy`; ``training_audio``: today's training
strategy, exactly; ``perlin``: the DRAEM-style :class:`PerlinStrategy`; ``dsr_perlin``: the
training code's Perlin mode; ``python``: a user's strategy by import path.
"""

from __future__ import annotations

from typing import Any

from analysis.strategies.band import AudioSpecificStrategy
from analysis.strategies.imported import ImportedStrategy
from analysis.strategies.mixture import MixtureStrategy
from analysis.strategies.perlin import PerlinStrategy, TrainingPerlinStrategy
from analysis.strategies.training import TrainingAudioStrategy

STRATEGY_KINDS = {
    "audio_specific": AudioSpecificStrategy,
    "training_audio": TrainingAudioStrategy,
    "dsr_perlin": TrainingPerlinStrategy,
}


def build_strategy(
    preset: dict[str, Any],
    spectrogram_shape: tuple[int, int],
    q_shape: tuple[int, int] | None = None,
    projection: str = "any_cell",
    seed: int | None = None,
    name: str | None = None,
):
    """A strategy from a ``masks.presets`` entry or a fitted recommendation (``kind`` decides)."""
    kind = preset.get("kind", "audio_specific")
    settings = {k: v for k, v in preset.items() if k != "kind"}
    if kind == "perlin":
        return PerlinStrategy(
            spectrogram_shape, q_shape, projection=projection, seed=seed, **settings
        )
    if kind == "mixture":
        return MixtureStrategy(
            spectrogram_shape,
            q_shape,
            components=settings["components"],
            projection=projection,
            seed=seed,
        )
    if kind == "python":
        return ImportedStrategy(
            settings["target"],
            spectrogram_shape,
            settings.get("kwargs"),
            settings.get("path"),
            projection,
            q_shape,
            seed=0 if seed is None else seed,
            name=name,
        )
    return STRATEGY_KINDS[kind](
        spectrogram_shape, q_shape, projection=projection, seed=seed, **settings
    )
