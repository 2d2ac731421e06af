"""The check of the ``masks`` params that follow the strategies' rules: every
``masks.presets`` entry (its ``kind`` and each setting) and ``masks.resize_methods``.

``analysis/params.py`` checks the file's shape for every stage and leaves these to this
module, so a change to a strategy's rules reruns only the stages that draw masks:
``check-params`` (the pipeline's first stage) and the ``masks`` stage run it before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from analysis.params import ParamsError
from analysis.strategies.errors import StrategySettingError, UnknownSettingError
from analysis.strategies.options import (
    FAMILY_SETTINGS,
    MAX_BAND_FRAC,
    PROJECTIONS,
    check_dsr_perlin_options,
    check_perlin_options,
    check_python_options,
    check_settings,
    check_training_options,
    resolve_family,
)
from analysis.strategies.registry import PRESET_KINDS, check_kind

# A preset of the band family gives the family's options but not the mel range (fmin_hz and
# fmax_hz come from features.fmin / features.fmax); max_band_frac is the training code's band.
FAMILY_PRESET_SETTINGS = {
    **{k: v for k, v in FAMILY_SETTINGS.items() if k not in ("fmin_hz", "fmax_hz")},
    "max_band_frac": MAX_BAND_FRAC,
}


def _family(settings: dict[str, Any], n_mels: int, T: int, fmin_hz: float, fmax_hz: float):
    check_settings(FAMILY_PRESET_SETTINGS, settings)
    resolve_family("audio_specific", n_mels, T, **settings, fmin_hz=fmin_hz, fmax_hz=fmax_hz)


def _python(settings: dict[str, Any], *_: Any) -> None:
    unknown = sorted(set(settings) - {"target", "kwargs", "path"})
    if unknown:
        raise UnknownSettingError(unknown, ("target", "kwargs", "path"))
    check_python_options(settings.get("target"), settings.get("kwargs"), settings.get("path"))


# Each preset kind's check: (settings, n_mels, T, fmin_hz, fmax_hz) -> None or a
# StrategySettingError naming the setting.
PRESET_CHECKS: dict[str, Callable[..., None]] = {
    "audio_specific": _family,
    "training_audio": lambda s, n_mels, T, *_: check_training_options(n_mels, T, **s),
    "dsr_perlin": lambda s, *_: check_dsr_perlin_options(**s),
    "perlin": lambda s, *_: check_perlin_options(**s),
    "python": _python,
}


def check_preset(
    preset: Mapping[str, Any], n_mels: int, T: int, fmin_hz: float, fmax_hz: float
) -> None:
    """Check one ``masks.presets`` entry; a StrategySettingError names the bad setting
    (``kind`` for a kind no preset may have)."""
    kind = check_kind(preset.get("kind"), PRESET_KINDS)
    settings = {k: v for k, v in preset.items() if k != "kind"}
    PRESET_CHECKS[kind](settings, n_mels, T, fmin_hz, fmax_hz)


def check_masks_params(params: Mapping[str, Any]) -> None:
    """Stop with a ParamsError naming the key (``masks.presets.NAME.SETTING``,
    ``masks.resize_methods[i]``) on a preset or projection the strategies cannot draw."""
    f, masks = params["features"], params["masks"]
    for i, method in enumerate(masks["resize_methods"]):
        if method not in PROJECTIONS:
            raise ParamsError(
                f"masks.resize_methods[{i}]: {method!r} is not one of {', '.join(PROJECTIONS)}"
            )
    for name, preset in masks["presets"].items():
        try:
            check_preset(preset, f["n_mels"], f["target_T"], f["fmin"], f["fmax"])
        except StrategySettingError as err:
            raise ParamsError(f"masks.presets.{name}.{err.key}: {err}") from None
