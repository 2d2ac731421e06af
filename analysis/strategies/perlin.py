"""The DSR/DRAEM baseline: thresholded, rotated 2-D Perlin noise (torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.strategies.base import numpy_rng, resolve_shapes, to_tensor
from analysis.strategies.errors import refuse_unknown
from analysis.strategies.options import (
    DSR_PERLIN_DEFAULTS,
    PERLIN_DEFAULTS,
    check_dsr_perlin_options,
    check_perlin_options,
)
from analysis.strategies.projection import project_maps, projection_name


class PerlinStrategy:
    """The DSR/DRAEM baseline: thresholded 2-D Perlin noise, optionally rotated.

    The lattice has ``2**k`` cells per axis, k drawn independently per axis in
    ``[min_scale_exp, max_scale_exp)`` as in DRAEM (``max`` itself only when
    both are equal); cells above ``threshold`` are masked.
    """

    kind = "perlin"  # its kind in analysis.strategies.registry

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        min_scale_exp: int = PERLIN_DEFAULTS["min_scale_exp"],
        max_scale_exp: int = PERLIN_DEFAULTS["max_scale_exp"],
        threshold: float = PERLIN_DEFAULTS["threshold"],
        rotate: bool = PERLIN_DEFAULTS["rotate"],
        projection: str = "any_cell",
        resize: str | None = None,
        seed: int | None = None,
        generator: Any = None,
        **unknown: Any,
    ) -> None:
        refuse_unknown(unknown, (*PERLIN_DEFAULTS, "projection", "resize", "seed", "generator"))
        self.options = check_perlin_options(
            min_scale_exp=min_scale_exp,
            max_scale_exp=max_scale_exp,
            threshold=threshold,
            rotate=rotate,
        )
        self.spectrogram_shape, self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.min_scale_exp, self.max_scale_exp = int(min_scale_exp), int(max_scale_exp)
        self.threshold, self.rotate = float(threshold), bool(rotate)
        self.projection = projection_name(resize if resize is not None else projection)
        self.generator = torch_generator(seed, generator)

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        import torch
        import torch.nn.functional as F

        g, (H, W) = self.generator, self.spectrogram_shape
        hi = max(self.max_scale_exp, self.min_scale_exp + 1)
        exps = torch.randint(self.min_scale_exp, hi, (batch_size, 2), generator=g)
        angles = (torch.rand(batch_size, generator=g) * 180 - 90) * math.pi / 180
        noise = torch.empty(batch_size, H, W)
        for ey, ex in torch.unique(exps, dim=0).tolist():  # one pass per lattice size, not per mask
            idx = torch.nonzero((exps[:, 0] == ey) & (exps[:, 1] == ex)).flatten()
            res = (min(2**ey, H), min(2**ex, W))
            noise[idx] = perlin_noise((H, W), res, idx.numel(), g)
        if self.rotate:
            grid = rotation_grid(angles, H, W)
            noise = F.grid_sample(noise[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        return (noise > self.threshold).numpy()

    def __call__(self, batch_size: int, device: Any = "cpu"):
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return to_tensor(small[:, None].astype(np.float32), device)

    def describe(self) -> str:
        """A short text for the report: the kind and its options."""
        return f"{self.kind}: thresholded Perlin noise (DRAEM); {_words(self.options)}"


def _words(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def torch_generator(seed: int | None, generator: Any):
    """A torch.Generator from a seed or a numpy/torch generator; None (torch's global RNG,
    seeded per DataLoader worker by PyTorch) when neither is given."""
    import torch

    if seed is None and generator is None:
        return None
    if isinstance(generator, torch.Generator) and seed is None:
        return generator
    return torch.Generator().manual_seed(int(numpy_rng(seed, generator).integers(2**62)))


class TrainingPerlinStrategy:
    """DSR's Perlin masks as the training code draws them (its Perlin mode by default).

    Per mask: a lattice of ``2**k`` cells per axis, k drawn independently per axis
    uniform in ``min_scale_exp..max_scale_exp`` *inclusive* (training Perlin mode 1..5;
    the stand-alone Perlin strategy 0..6); the noise map rotated in pixel space by an
    angle uniform in (-90°, 90°) about its centre (bilinear, zero fill, same size);
    cells above a threshold uniform in ``[min_threshold, max_threshold]`` (0.3..0.6;
    stand-alone 0.5..0.5) are masked.
    """

    kind = "dsr_perlin"  # its kind in analysis.strategies.registry

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        min_scale_exp: int = DSR_PERLIN_DEFAULTS["min_scale_exp"],
        max_scale_exp: int = DSR_PERLIN_DEFAULTS["max_scale_exp"],
        min_threshold: float = DSR_PERLIN_DEFAULTS["min_threshold"],
        max_threshold: float = DSR_PERLIN_DEFAULTS["max_threshold"],
        rotate: bool = DSR_PERLIN_DEFAULTS["rotate"],
        projection: str = "any_cell",
        seed: int | None = None,
        generator: Any = None,
        **unknown: Any,
    ) -> None:
        refuse_unknown(unknown, (*DSR_PERLIN_DEFAULTS, "projection", "seed", "generator"))
        self.options = check_dsr_perlin_options(
            min_scale_exp=min_scale_exp,
            max_scale_exp=max_scale_exp,
            min_threshold=min_threshold,
            max_threshold=max_threshold,
            rotate=rotate,
        )
        self.spectrogram_shape, self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.min_scale_exp, self.max_scale_exp = int(min_scale_exp), int(max_scale_exp)
        self.min_threshold, self.max_threshold = float(min_threshold), float(max_threshold)
        self.rotate = bool(rotate)
        self.projection = projection_name(projection)
        self.generator = torch_generator(seed, generator)

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        import torch
        import torch.nn.functional as F

        g, (H, W) = self.generator, self.spectrogram_shape
        exps = torch.randint(
            self.min_scale_exp, self.max_scale_exp + 1, (batch_size, 2), generator=g
        )
        angles = (torch.rand(batch_size, generator=g) * 180 - 90) * math.pi / 180
        span = self.max_threshold - self.min_threshold
        thresholds = self.min_threshold + span * torch.rand(batch_size, generator=g)
        noise = torch.empty(batch_size, H, W)
        for ey, ex in torch.unique(exps, dim=0).tolist():  # one pass per lattice size
            idx = torch.nonzero((exps[:, 0] == ey) & (exps[:, 1] == ex)).flatten()
            noise[idx] = perlin_noise((H, W), (min(2**ey, H), min(2**ex, W)), idx.numel(), g)
        if self.rotate:
            grid = pixel_rotation_grid(angles, H, W)
            noise = F.grid_sample(
                noise[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )[:, 0]
        return (noise > thresholds[:, None, None]).numpy()

    def __call__(self, batch_size: int, device: Any = "cpu"):
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return to_tensor(small[:, None].astype(np.float32), device)

    def describe(self) -> str:
        """A short text for the report: the kind and its options."""
        return f"{self.kind}: the training code's Perlin mode; {_words(self.options)}"


def pixel_rotation_grid(angles, H: int, W: int):
    """``grid_sample`` grid (align_corners=False) of rotations by ``angles`` about the map's
    centre in pixel units, (B, H, W, 2): each output pixel samples the input pixel its
    position rotated back lands on, so shapes keep their proportions on a non-square map."""
    import torch

    x = torch.arange(W, dtype=torch.float32) - (W - 1) / 2
    y = (torch.arange(H, dtype=torch.float32) - (H - 1) / 2)[:, None]
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    x_src = cos * x + sin * y + (W - 1) / 2
    y_src = -sin * x + cos * y + (H - 1) / 2
    return torch.stack([(2 * x_src + 1) / W - 1, (2 * y_src + 1) / H - 1], dim=-1)


def rotation_grid(angles, H: int, W: int):
    """``F.affine_grid`` of pure rotations by ``angles`` (align_corners=False), (B, H, W, 2).

    Written out as two broadcast products: torch's affine_grid took a third of a
    Perlin draw's time for the same numbers.
    """
    import torch

    xs = (torch.arange(W, dtype=torch.float32) * 2 + 1) / W - 1
    ys = ((torch.arange(H, dtype=torch.float32) * 2 + 1) / H - 1)[:, None]
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    return torch.stack([cos * xs - sin * ys, sin * xs + cos * ys], dim=-1)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], batch: int, generator):
    """(batch, H, W) gradient (Perlin) noise on a ``res`` lattice, about in [-1, 1] (torch).

    When the lattice divides the map (powers of two on 128 x 320, the usual
    case), every lattice cell is a block of the same size, and the noise is
    computed on a (batch, ry, h, rx, w) view where each corner's gradient is
    broadcast over its block instead of gathered per cell (about 3x faster).
    Other shapes take :func:`perlin_noise_gathered`, the plain definition.
    """
    import torch

    H, W = shape
    ry, rx = res
    grads = 2 * math.pi * torch.rand(batch, ry + 1, rx + 1, generator=generator)
    gy, gx = torch.sin(grads), torch.cos(grads)
    if H % ry or W % rx:
        return perlin_noise_gathered(shape, res, gy, gx)
    h, w = H // ry, W // rx
    fy = (torch.arange(h, dtype=torch.float32) / h).view(1, 1, h, 1, 1)
    fx = (torch.arange(w, dtype=torch.float32) / w).view(1, 1, 1, 1, w)

    def corner(dy: int, dx: int):
        cell = (slice(None), slice(dy, dy + ry), None, slice(dx, dx + rx), None)
        return gy[cell] * (fy - dy) + gx[cell] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return (math.sqrt(2) * torch.lerp(top, bottom, uy)).reshape(batch, H, W)


def _fade(t):
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise_gathered(shape: tuple[int, int], res: tuple[int, int], gy, gx):
    """Perlin noise from corner gradients ``gy``, ``gx`` (batch, ry + 1, rx + 1), gathering
    each pixel's four corners: any shape."""
    import torch

    H, W = shape
    ry, rx = res
    py = torch.arange(H, dtype=torch.float32) * ry / H
    px = torch.arange(W, dtype=torch.float32) * rx / W
    iy, ix = py.floor().long(), px.floor().long()
    fy, fx = (py - iy)[:, None], (px - ix)[None, :]

    def corner(dy: int, dx: int):
        cy, cx = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[:, cy, cx] * (fy - dy) + gx[:, cy, cx] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return math.sqrt(2) * torch.lerp(top, bottom, uy)
