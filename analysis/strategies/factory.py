"""A strategy from a ``masks.presets`` entry or a fitted setting: ``kind`` decides which."""

from __future__ import annotations

from typing import Any

from analysis.strategies.band import AudioSpecificStrategy, TrainingAudioStrategy
from analysis.strategies.imported import ImportedStrategy
from analysis.strategies.perlin import PerlinStrategy

FAMILY_KINDS = {"audio_specific": AudioSpecificStrategy, "training_audio": TrainingAudioStrategy}


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
    return FAMILY_KINDS[kind](
        spectrogram_shape, q_shape, projection=projection, seed=seed, **settings
    )
