"""A user's strategy by import path, measured as a black box (``kind: python`` presets)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analysis.strategies.base import resolve_shapes, to_tensor
from analysis.strategies.errors import StrategyError, StrategySettingError
from analysis.strategies.options import check_python_options
from analysis.strategies.projection import project_maps, projection_name

CONVENTION_NAMES = ("spectrogram_shape", "q_shape", "n_mels", "T")


def _import_from_folder(module_name: str, folder: Path, unique: str):
    """Import ``module_name`` from ``folder`` under the module name ``unique``, so two presets
    whose modules share a name but live in different folders never share a module."""
    parts = module_name.split(".")
    base = folder.joinpath(*parts)
    file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not file.is_file():
        raise ModuleNotFoundError(f"no {module_name.replace('.', '/')}.py under {folder}")
    spec = importlib.util.spec_from_file_location(unique, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    # The module's own imports of its neighbours resolve in its folder.
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(unique, None)
        raise
    finally:
        sys.path.remove(str(folder))
    return module


def load_target(target: str, path: str | Path | None = None, name: str | None = None) -> Callable:
    """The object named ``"package.module:Name"``.

    With ``path``, the module file is loaded from that folder under a module name of
    its own (derived from the preset ``name`` and the folder), never from Python's
    module cache; without it, ``module`` is imported as usual.
    """
    check_python_options(target)
    module_name, _, attr = target.partition(":")
    try:
        if path is None:
            module = importlib.import_module(module_name)
        else:
            folder = Path(path).resolve()
            tag = hashlib.sha256(f"{name}|{folder}|{module_name}".encode()).hexdigest()[:12]
            unique = f"_mask_preset_{tag}_{module_name.replace('.', '_')}"
            module = sys.modules.get(unique) or _import_from_folder(module_name, folder, unique)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        raise StrategySettingError(
            "target",
            "an importable 'module.path:Name'",
            message=f"cannot import {module_name!r}: {type(err).__name__}: {err}",
        ) from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StrategySettingError(
                "target",
                "an importable 'module.path:Name'",
                message=f"module {module_name!r} has no attribute {attr!r}",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise StrategySettingError("target", "a class or function", target)
    return obj


def convention_arguments(
    factory: Callable, shape: tuple[int, int], kwargs: dict[str, Any]
) -> tuple[tuple, dict[str, Any]]:
    """The arguments to build ``factory`` with: the convention's names its signature accepts
    (``spectrogram_shape``, ``q_shape`` (None: spectrogram size), ``n_mels``, ``T``), by
    keyword, plus ``kwargs``; a signature that names none of them (``*args, **kwargs``, or
    unreadable) gets the convention positionally, ``(shape, None, n_mels, T)``."""
    H, W = shape
    values = {"spectrogram_shape": (H, W), "q_shape": None, "n_mels": H, "T": W}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    named = {
        n: p
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n in values
    }
    if not named:
        return ((H, W), None, H, W), dict(kwargs)
    return (), {**{n: values[n] for n in named if n not in kwargs}, **kwargs}


def describe_call(target: str, args: tuple, kwargs: dict[str, Any]) -> str:
    """``target(...)`` as it was called, for the log."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{target}({', '.join(parts)})"


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a black-box strategy may use (python, numpy, torch)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - black-box strategies may use the legacy global RNG
    torch.manual_seed(seed)


class ImportedStrategy:
    """A user's strategy by import path, treated as a black box.

    ``target`` is a class or factory function called with the convention's
    arguments its signature names (:func:`convention_arguments`; ``q_shape=None``
    asks for spectrogram size) and the preset's ``kwargs``; :attr:`call` says how
    it was called. The object it returns is called as ``obj(batch_size, "cpu")`` and must return
    (B, 1, n_mels, T) 0/1 values (a tensor or an array). Global RNGs are seeded
    before construction, so draws are reproducible when the strategy uses them.
    """

    kind = "python"  # its kind in analysis.strategies.registry

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
        target, kwargs, path = check_python_options(target, kwargs, path)
        self.name = name or target
        self.spectrogram_shape, self.q_shape = resolve_shapes(
            spectrogram_shape, q_shape, None, None
        )
        self.projection = projection_name(projection)
        factory = load_target(target, path, self.name)
        seed_everything(seed)
        args, call_kwargs = convention_arguments(factory, self.spectrogram_shape, kwargs or {})
        self.call = describe_call(target, args, call_kwargs)
        try:
            self.strategy = factory(*args, **call_kwargs)
        except Exception as err:  # noqa: BLE001
            raise StrategyError(
                f"preset {self.name!r}: building {target} failed: {type(err).__name__}: {err} "
                f"(called as {self.call}: the convention's arguments "
                f"{', '.join(CONVENTION_NAMES)} are passed by the names the signature uses, "
                "every other argument comes from the preset's kwargs)"
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

    def describe(self) -> str:
        """A short text for the report: the kind and how the user's strategy was built."""
        return f"{self.kind}: a user's strategy, built as {self.call}"
