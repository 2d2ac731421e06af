"""A user's strategy by import path, measured as a black box (``kind: python`` presets)."""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analysis.strategies.base import resolve_shapes, to_tensor
from analysis.strategies.options import StrategyError
from analysis.strategies.projection import project_maps, projection_name


def load_target(target: str, path: str | Path | None = None) -> Callable:
    """The object named ``"package.module:Name"``, importing from ``path`` first when given."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise StrategyError(f"target {target!r} must look like 'module.path:Name'")
    if path is not None:
        folder = str(Path(path).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        raise StrategyError(f"cannot import {module_name!r}: {type(err).__name__}: {err}") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StrategyError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise StrategyError(f"{target!r} is not a class or function")
    return obj


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a black-box strategy may use (python, numpy, torch)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - black-box strategies may use the legacy global RNG
    torch.manual_seed(seed)


class ImportedStrategy:
    """A user's strategy by import path, treated as a black box.

    ``target`` is a class or factory function called as
    ``target(spectrogram_shape, None, n_mels, T, **kwargs)`` (the training
    code's convention: ``q_shape=None`` asks for spectrogram size); the object
    it returns is called as ``obj(batch_size, "cpu")`` and must return
    (B, 1, n_mels, T) 0/1 values (a tensor or an array). Global RNGs are seeded
    before construction, so draws are reproducible when the strategy uses them.
    """

    def __init__(
        self,
        target: str,
        spectrogram_shape: tuple[int, int],
        kwargs: dict[str, Any] | None = None,
        path: str | Path | None = None,
        projection: str = "any_cell",
        q_shape: tuple[int, int] | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        self.name = name or target
        self.spectrogram_shape, self.q_shape = resolve_shapes(
            spectrogram_shape, q_shape, None, None
        )
        self.projection = projection_name(projection)
        factory = load_target(target, path)
        seed_everything(seed)
        H, W = self.spectrogram_shape
        try:
            self.strategy = factory((H, W), None, H, W, **(kwargs or {}))
        except Exception as err:  # noqa: BLE001
            raise StrategyError(
                f"preset {self.name!r}: building {target} failed: {type(err).__name__}: {err}"
            ) from err
        if not callable(self.strategy):
            raise StrategyError(
                f"preset {self.name!r}: {target} did not return a callable strategy"
            )

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks, checked for shape and 0/1 values."""
        try:
            out = self.strategy(int(batch_size), "cpu")
        except Exception as err:  # noqa: BLE001
            raise StrategyError(
                f"preset {self.name!r}: the strategy raised {type(err).__name__}: {err}"
            ) from err
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        out = np.asarray(out)
        want = (int(batch_size), 1, *self.spectrogram_shape)
        if out.shape != want:
            raise StrategyError(
                f"preset {self.name!r}: the strategy returned shape {tuple(out.shape)}, "
                f"expected {want} (batch, 1, n_mels, T)"
            )
        values = np.unique(out)
        if not np.all(np.isin(values, (0, 1))):
            raise StrategyError(
                f"preset {self.name!r}: the strategy returned values other than 0 and 1 "
                f"(e.g. {values[~np.isin(values, (0, 1))][:3].tolist()})"
            )
        return out[:, 0].astype(bool)

    def __call__(self, batch_size: int, device: Any = "cpu"):
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return to_tensor(small[:, None].astype(np.float32), device)
