"""A strategy from a ``masks.presets`` entry or a fitted setting: ``kind`` decides which.

The kinds and their classes are :data:`analysis.strategies.registry.KINDS`; this module
builds the ones given as a settings mapping (:data:`~analysis.strategies.registry.SETTING_KINDS`:
every preset kind, and ``mixture``, a fitted form).
"""

from __future__ import annotations

from typing import Any

from analysis.strategies.errors import UnknownSettingError
from analysis.strategies.registry import SETTING_KINDS, MaskStrategy, check_kind, strategy_class

# The settings of the kinds built with arguments of their own (the others take theirs by keyword).
OWN_SETTINGS = {"python": ("target", "kwargs", "path"), "mixture": ("components",)}


def build_strategy(
    preset: dict[str, Any],
    spectrogram_shape: tuple[int, int],
    q_shape: tuple[int, int] | None = None,
    projection: str = "any_cell",
    seed: int | None = None,
    name: str | None = None,
) -> MaskStrategy:
    """A strategy from a ``masks.presets`` entry or a fitted recommendation (``kind`` decides;
    none means ``audio_specific``). A bad setting raises StrategySettingError naming it."""
    kind = check_kind(preset.get("kind", "audio_specific"), SETTING_KINDS)
    settings = {k: v for k, v in preset.items() if k != "kind"}
    cls = strategy_class(kind)
    unknown = sorted(set(settings) - set(OWN_SETTINGS.get(kind, settings)))
    if unknown:
        raise UnknownSettingError(unknown, OWN_SETTINGS[kind])
    if kind == "python":
        return cls(
            settings.get("target"),
            spectrogram_shape,
            settings.get("kwargs"),
            settings.get("path"),
            projection,
            q_shape,
            seed=0 if seed is None else seed,
            name=name,
        )
    return cls(spectrogram_shape, q_shape, projection=projection, seed=seed, **settings)
