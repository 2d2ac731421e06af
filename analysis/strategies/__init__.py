"""Mask strategies: every way this project draws synthetic anomaly masks, behind one seam.

The call convention is the training code's: a strategy is built as
``Strategy(spectrogram_shape, q_shape, n_mels, T, **options)`` (``q_shape`` and
``spectrogram_shape`` may be ``None``: spectrogram size) and called as
``strategy(batch_size, device)``, returning a float ``(B, 1, H_q, W_q)`` 0/1
tensor. Every strategy also offers ``full_size(batch_size)``, the masks as a
``(B, n_mels, T)`` bool array, which is what the ``masks`` stage measures, and
``describe()``, a short text for the report: together the :class:`MaskStrategy` protocol.

Where each piece lives:

* ``registry``: :data:`KINDS` (every ``kind``, and its class), :class:`MaskStrategy`;
* ``errors``: :class:`StrategySettingError`, raised for every bad setting of every kind;
* ``options``: every kind's settings, defaults and rules (no torch; the params check uses it);
* ``presets``: the check of ``masks.presets`` and ``masks.resize_methods`` (``check-params`` and
  the ``masks`` stage run it);
* ``projection``: masks onto latent grids (``any_cell``, ``nearest``);
* ``band``: :class:`AudioSpecificStrategy` (bands of mel rows times time segments, the
  family the fit searches);
* ``training``: :class:`TrainingAudioStrategy`, today's training strategy drawn exactly as
  the training code draws it;
* ``perlin``: :class:`PerlinStrategy` (DRAEM-style) and :class:`TrainingPerlinStrategy`
  (the training code's Perlin mode);
* ``imported``: :class:`ImportedStrategy`, any user class or factory by import path;
* ``machine``: :class:`MachineSpecificStrategy`, one recommended strategy per machine type;
* ``mixture``: :class:`MixtureStrategy`, each mask from one of several fitted settings;
* ``factory``: :func:`build_strategy`, a strategy from a preset entry.

``from analysis.strategies import AudioSpecificStrategy`` works for every public name
below; the submodule is imported on first use, so importing ``options`` or ``registry``
alone loads neither numpy-heavy engines nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it (read by tests/test_dvc_deps.py too).
EXPORTS: dict[str, str] = {
    "StrategyError": "errors",
    "StrategySettingError": "errors",
    "UnknownSettingError": "errors",
    "KINDS": "registry",
    "PRESET_KINDS": "registry",
    "SETTING_KINDS": "registry",
    "MaskStrategy": "registry",
    "strategy_class": "registry",
    "SEED_DEFAULTS": "options",
    "OPTION_NAMES": "options",
    "resolve_options": "options",
    "PROJECTIONS": "projection",
    "LATENT_PROJECTION": "projection",
    "projection_name": "projection",
    "project_axis": "projection",
    "project_maps": "projection",
    "AudioSpecificStrategy": "band",
    "TrainingAudioStrategy": "training",
    "PerlinStrategy": "perlin",
    "TrainingPerlinStrategy": "perlin",
    "ImportedStrategy": "imported",
    "load_target": "imported",
    "MachineSpecificStrategy": "machine",
    "MixtureStrategy": "mixture",
    "build_strategy": "factory",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'analysis.strategies' has no attribute {name!r}")
    return getattr(importlib.import_module(f"analysis.strategies.{EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
