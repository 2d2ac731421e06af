"""A small proxy anomaly detector, trained on synthetic anomalies placed inside masks.

In the spirit of DRAEM/DSR, cheap enough for a CPU: a fully convolutional network sees a
normal log-mel (average-pooled onto the ``q_bot`` grid, where DSR replaces codebook entries)
into which a synthetic anomaly was put inside a mask drawn by a strategy, and learns to
predict the mask. Half of the training items get no mask (as the training code's zero-mask
share). A test clip's score is a high quantile of the predicted map over its real frames.
The DCASE metrics and the data preparation are in :mod:`analysis.detection` (no torch).

Perturbations inside the mask (``downstream.perturbation``):

- ``shifted_copy``: the masked cells are replaced by the same cells of another normal clip
  of the type, shifted along the mel axis by 1..``max_shift_bins`` grid rows (either way):
  the closest cheap analogue of replacing codebook entries by other plausible ones.
- ``additive``: a change of random sign and size, uniform in ``additive_sd`` (units of the
  clip's within-ID cell SD), added to every masked cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

PERTURBATIONS = ("shifted_copy", "additive")


@dataclass(frozen=True)
class ProxyConfig:
    """How one proxy detector is trained and how it scores a clip."""

    steps: int = 250
    batch_size: int = 8
    learning_rate: float = 3e-3
    channels: int = 24
    perturbation: str = "shifted_copy"
    additive_sd: tuple[float, float] = (1.0, 3.0)
    max_shift_bins: int = 4
    score_quantile: float = 0.99


class ProxyDetector(torch.nn.Module):
    """Four convolutions (3x3, dilations 1, 2, 4, then 1x1) from a log-mel to mask logits:
    a receptive field of 15x15 grid cells; 10,681 parameters at 24 channels."""

    def __init__(self, channels: int = 24) -> None:
        super().__init__()
        c = channels
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, c, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(c, c, 3, padding=2, dilation=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(c, c, 3, padding=4, dilation=4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(c, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def perturb(
    x: torch.Tensor,
    masks: torch.Tensor,
    donors: torch.Tensor,
    cell_sd: torch.Tensor,
    cfg: ProxyConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """``x`` (B, 1, H, W) with a synthetic anomaly inside ``masks`` (see the module text)."""
    if cfg.perturbation == "shifted_copy":
        b = x.shape[0]
        shift = torch.randint(1, cfg.max_shift_bins + 1, (b,), generator=gen)
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1, 1)
        moved = torch.stack(
            [torch.roll(d, int(s * k), dims=1) for d, s, k in zip(donors, sign, shift, strict=True)]
        )
        return x * (1 - masks) + moved * masks
    if cfg.perturbation == "additive":
        b = x.shape[0]
        lo, hi = cfg.additive_sd
        size = lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=gen)
        sign = torch.where(torch.rand(b, 1, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
        return x + masks * sign * size * cell_sd.view(-1, 1, 1, 1)
    raise ValueError(f"unknown perturbation {cfg.perturbation!r}; one of {PERTURBATIONS}")


def donor_groups(groups: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For clips sorted by group (the stage's order), each clip's group start and size."""
    groups = np.asarray(groups)
    if len(groups) > 1 and np.any(groups[1:] < groups[:-1]):
        raise ValueError("train clips must be sorted by machine ID")
    _, first, counts = np.unique(groups, return_index=True, return_counts=True)
    starts = np.repeat(first, counts)
    sizes = np.repeat(counts, counts)
    return torch.from_numpy(starts.astype(np.int64)), torch.from_numpy(sizes.astype(np.int64))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), as DRAEM and DSR train their anomaly maps: cells
    already classified well weigh less, so a few masked cells among many are learnt quickly."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-bce)
    return ((1 - p_true) ** gamma * bce).mean()


def train_detector(
    train_grid: np.ndarray,
    cell_sd: np.ndarray,
    draw_masks: Callable[[int], torch.Tensor],
    cfg: ProxyConfig,
    seed: int,
    groups: np.ndarray | None = None,
) -> ProxyDetector:
    """A proxy detector trained on ``train_grid`` (N, H, W) normal clips with anomalies inside
    masks from ``draw_masks(batch_size)`` ((B, 1, H, W) 0/1); half of the items unmasked.
    ``groups`` (N,), the clips' machine IDs: a donor clip comes from the item's own ID (else
    from any clip), so a shifted copy carries no other ID's spectral signature."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ProxyDetector(cfg.channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(train_grid, dtype=np.float32)).unsqueeze(1)
    sd = torch.from_numpy(cell_sd.astype(np.float32))
    n = data.shape[0]
    start, size = donor_groups(np.zeros(n, dtype=int) if groups is None else groups)
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        step = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        other = (
            start[idx]
            + (idx - start[idx] + 1 + step % torch.clamp(size[idx] - 1, min=1)) % size[idx]
        )
        masks = draw_masks(cfg.batch_size).to(torch.float32)
        keep = (torch.rand(cfg.batch_size, generator=gen) < 0.5).view(-1, 1, 1, 1)
        masks = masks * keep
        x = perturb(data[idx], masks, data[other], sd[idx], cfg, gen)
        loss = focal_loss(model(x), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def clip_scores(
    model: ProxyDetector, grid: np.ndarray, real_cols: np.ndarray, quantile: float
) -> np.ndarray:
    """Each clip's anomaly score: the ``quantile`` of its predicted mask probability over the
    grid columns its real (unpadded) frames cover."""
    model.eval()
    out = np.empty(len(grid), dtype=np.float64)
    for start in range(0, len(grid), 64):
        x = torch.from_numpy(np.ascontiguousarray(grid[start : start + 64], dtype=np.float32))
        prob = torch.sigmoid(model(x.unsqueeze(1)))[:, 0].numpy()
        for k, p in enumerate(prob):
            cols = max(1, int(real_cols[start + k]))
            out[start + k] = float(np.quantile(p[:, :cols], quantile))
    return out
