"""What every strategy shares: the training code's shape convention, seeding, tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.strategies.options import DEFAULT_SPECTROGRAM_SHAPE


def resolve_shapes(
    spectrogram_shape, q_shape, n_mels, T
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve the training code's (spectrogram_shape, q_shape, n_mels, T) convention."""
    if spectrogram_shape is None:
        if (n_mels is None) != (T is None):
            raise ValueError("give spectrogram_shape, or both n_mels and T")
        # Nothing given: the detector's (128 mel bins, 320 frames).
        spectrogram_shape = DEFAULT_SPECTROGRAM_SHAPE if n_mels is None else (n_mels, T)
    H, W = (int(x) for x in spectrogram_shape)
    if (n_mels is not None and int(n_mels) != H) or (T is not None and int(T) != W):
        raise ValueError(
            f"n_mels x T = {n_mels} x {T} does not match spectrogram_shape {spectrogram_shape}"
        )
    q = (H, W) if q_shape is None else tuple(int(x) for x in q_shape)
    if len(q) != 2 or min(q) < 1 or q[0] > H or q[1] > W:
        raise ValueError(f"q_shape {q_shape} must be two sizes within spectrogram_shape {(H, W)}")
    return (H, W), q


def numpy_rng(seed: int | None, generator: Any) -> np.random.Generator:
    """A numpy Generator from an int seed, a numpy Generator or a torch.Generator."""
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is not None:  # a torch.Generator: take one draw of it as the seed
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def to_tensor(masks: np.ndarray, device: Any):
    import torch

    return torch.from_numpy(masks).to(device)
