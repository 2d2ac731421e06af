"""The training code's mask model, transcribed plainly from its statement (not from the project's
code): the reference the distribution tests and the mask benchmark compare against.

Band: width uniform in 1..max(1, int(n_mels * max_band_frac)), lowest row uniform in
0..n_mels - width. Time: with probability full_time_prob one segment, coverage uniform in
[0.85, 1], length int(T * coverage), start uniform in 0..T - length; else n_seg uniform in
2..max_segments, each segment up to 400 tries of (length uniform in T//10..T//3, start uniform
in 0..T - length), a try rejected when it overlaps a placed half-open interval; a segment that
fails 400 tries ends the placement. Python's random draws everything (randint inclusive).

Perlin mode: per axis a lattice of 2**k cells, k uniform in 1..5; the noise rotated in pixel
space by U(-90, 90) degrees (bilinear, zero fill, same size); threshold uniform in [0.3, 0.6].
"""

from __future__ import annotations

import math
import random

import numpy as np


def training_frames(rnd: random.Random, n_mels: int, T: int, full_time_prob=0.3, max_band_frac=0.1,
                    max_segments=5) -> tuple[int, int, np.ndarray]:  # fmt: skip
    """One mask as (band width, band lowest row, (T,) bool frame vector)."""
    width = rnd.randint(1, max(1, int(n_mels * max_band_frac)))
    low = rnd.randint(0, n_mels - width)
    frames = np.zeros(T, dtype=bool)
    if rnd.random() < full_time_prob:
        length = int(T * rnd.uniform(0.85, 1.0))
        start = rnd.randint(0, T - length)
        frames[start : start + length] = True
        return width, low, frames
    taken: list[tuple[int, int]] = []
    for _ in range(rnd.randint(2, max_segments)):
        placed = False
        for _try in range(400):
            length = rnd.randint(T // 10, T // 3)
            start = rnd.randint(0, T - length)
            end = start + length
            if not any(start < b and a < end for a, b in taken):
                taken.append((start, end))
                placed = True
                break
        if not placed:
            break
    for a, b in taken:
        frames[a:b] = True
    return width, low, frames


def training_item(rnd: random.Random, n_mels: int = 128, T: int = 320):
    """The training dataset's per-item call, transcribed: a (1, 1, n_mels, T) float tensor."""
    import torch

    width, low, frames = training_frames(rnd, n_mels, T)
    mask = np.zeros((1, 1, n_mels, T), dtype=np.float32)
    mask[0, 0, low : low + width] = frames
    return torch.from_numpy(mask)


def _fade(t):
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise_np(rng: np.random.Generator, shape: tuple[int, int], res: tuple[int, int]):
    """DRAEM's 2-D Perlin noise (numpy), any shape: gradients at lattice corners, faded blend."""
    H, W = shape
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    py, px = np.arange(H) * res[0] / H, np.arange(W) * res[1] / W
    iy, ix = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = (py - iy)[:, None], (px - ix)[None, :]

    def corner(dy, dx):
        cy, cx = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[cy, cx] * (fy - dy) + gx[cy, cx] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2) * (top + uy * (bottom - top))


def training_perlin_mask(rnd: random.Random, rng: np.random.Generator, shape=(128, 320)):
    """One Perlin-mode mask, transcribed: (H, W) bool."""
    from scipy import ndimage

    H, W = shape
    res = (2 ** rnd.randint(1, 5), 2 ** rnd.randint(1, 5))
    noise = perlin_noise_np(rng, shape, (min(res[0], H), min(res[1], W)))
    angle = math.radians(rnd.uniform(-90, 90))
    # Rotation about the centre in pixel units: output pixel p samples R(-angle) (p - c) + c.
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c, -s], [s, c]])  # (row, col) coordinates
    centre = np.array([(H - 1) / 2, (W - 1) / 2])
    offset = centre - matrix @ centre
    rotated = ndimage.affine_transform(noise, matrix, offset=offset, order=1, cval=0.0)
    return rotated > rnd.uniform(0.3, 0.6)
