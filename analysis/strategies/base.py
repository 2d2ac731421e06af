"""What every strategy shares: the training code's shape convention, seeding, tensors.

Randomness follows what training code expects. An explicit ``seed`` (or generator)
gives a fixed stream. Without one, a strategy draws from the process's global RNGs:
its numpy generator is seeded on first use *in each process* by one draw of torch's
global RNG, so the workers of a ``torch.utils.data.DataLoader`` (each seeded by
PyTorch) draw different masks, and ``torch.manual_seed`` makes a run repeatable. A
copy of a strategy sent to another process therefore never repeats the parent's
stream.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from analysis.strategies.errors import StrategySettingError
from analysis.strategies.options import DEFAULT_SPECTROGRAM_SHAPE


def resolve_shapes(
    spectrogram_shape, q_shape, n_mels, T
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve the training code's (spectrogram_shape, q_shape, n_mels, T) convention
    (StrategySettingError naming the argument that does not fit)."""
    if spectrogram_shape is None:
        if (n_mels is None) != (T is None):
            raise StrategySettingError("n_mels", "given with T (or give spectrogram_shape)", n_mels)
        # Nothing given: the detector's (128 mel bins, 320 frames).
        spectrogram_shape = DEFAULT_SPECTROGRAM_SHAPE if n_mels is None else (n_mels, T)
    H, W = _two_sizes("spectrogram_shape", spectrogram_shape)
    if (n_mels is not None and int(n_mels) != H) or (T is not None and int(T) != W):
        raise StrategySettingError(
            "n_mels",
            f"(with T) equal to spectrogram_shape {spectrogram_shape}",
            message=f"n_mels x T = {n_mels} x {T} does not match spectrogram_shape "
            f"{spectrogram_shape}",
        )
    q = (H, W) if q_shape is None else _two_sizes("q_shape", q_shape)
    if q[0] > H or q[1] > W:
        raise StrategySettingError(
            "q_shape", f"two sizes within spectrogram_shape {(H, W)}", q_shape
        )
    return (H, W), q


def _two_sizes(key: str, shape: Any) -> tuple[int, int]:
    """``shape`` as two positive ints, else a StrategySettingError naming ``key``."""
    try:
        sizes = tuple(int(x) for x in shape)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) != 2 or min(sizes) < 1:
        raise StrategySettingError(key, "two positive sizes (rows, frames)", shape)
    return sizes


class ProcessRng:
    """A numpy Generator: fixed when seeded; else made on first use in each process.

    Parameters
    ----------
    seed, generator
        An int seed, or a numpy or torch generator; both None means "from the
        process's global RNGs" (see the module docstring).
    """

    def __init__(self, seed: int | None = None, generator: Any = None) -> None:
        self.seeded = seed is not None or generator is not None
        self._fixed = numpy_rng(seed, generator) if self.seeded else None
        self._pid: int | None = None
        self._local: np.random.Generator | None = None

    @property
    def generator(self) -> np.random.Generator:
        if self._fixed is not None:
            return self._fixed
        if self._pid != os.getpid():
            import torch

            self._local = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            self._pid = os.getpid()
        return self._local


def numpy_rng(seed: int | None, generator: Any) -> np.random.Generator:
    """A numpy Generator from an int seed, a numpy Generator or a torch.Generator."""
    if generator is not None and seed is not None:
        raise StrategySettingError("seed", "None when a generator is given", seed)
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is not None:  # a torch.Generator: take one draw of it as the seed
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def to_tensor(masks: np.ndarray, device: Any):
    import torch

    return torch.from_numpy(masks).to(device)


def htk_mel_frequencies(n: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """``n`` frequencies (Hz) evenly spaced on the HTK mel scale from ``fmin_hz`` to ``fmax_hz``:
    ``librosa.mel_frequencies(n, fmin, fmax, htk=True)`` without librosa (a test compares)."""
    low, high = (2595.0 * np.log10(1.0 + f / 700.0) for f in (fmin_hz, fmax_hz))
    return 700.0 * (10.0 ** (np.linspace(low, high, n) / 2595.0) - 1.0)
