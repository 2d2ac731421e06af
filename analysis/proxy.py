"""A small proxy anomaly detector, trained on synthetic anomalies placed inside masks.

In the spirit of DRAEM/DSR, cheap enough for a CPU: a fully convolutional network sees a
normal log-mel (average-pooled onto the ``q_bot`` grid, where DSR replaces codebook entries)
into which a synthetic anomaly was put inside a mask drawn by a strategy, and learns to
predict the mask. Half of the training items get no mask (as the training code's zero-mask
share). A test clip's score is a high quantile of the predicted map over its real frames.
The DCASE metrics (AUC, pAUC at FPR <= 0.1) and their paired intervals are here too.

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

    steps: int = 80
    batch_size: int = 16
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


def pool_to_grid(logmel: np.ndarray, factor: int) -> np.ndarray:
    """(N, n_mels, T) log-mels averaged over ``factor`` x ``factor`` cells (the grid DSR's
    anomalies are made on); trailing rows or frames that do not fill a cell are dropped."""
    n, h, w = logmel.shape
    h, w = h // factor, w // factor
    cut = logmel[:, : h * factor, : w * factor].astype(np.float32)
    return cut.reshape(n, h, factor, w, factor).mean(axis=(2, 4))


def cell_sd_per_clip(grid: np.ndarray, machine_ids: np.ndarray) -> np.ndarray:
    """Each clip's within-ID cell SD: the RMS over cells of its ID's clips' deviation from the
    ID's mean clip (one number per ID, repeated per clip); 1 where an ID has one clip."""
    out = np.ones(len(grid), dtype=np.float32)
    for mid in np.unique(machine_ids):
        pick = machine_ids == mid
        if pick.sum() > 1:
            dev = grid[pick] - grid[pick].mean(axis=0, keepdims=True)
            out[pick] = max(float(np.sqrt(np.mean(dev**2))), 1e-3)
    return out


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


def train_detector(
    train_grid: np.ndarray,
    cell_sd: np.ndarray,
    draw_masks: Callable[[int], torch.Tensor],
    cfg: ProxyConfig,
    seed: int,
) -> ProxyDetector:
    """A proxy detector trained on ``train_grid`` (N, H, W) normal clips with anomalies inside
    masks from ``draw_masks(batch_size)`` ((B, 1, H, W) 0/1); half of the items unmasked."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ProxyDetector(cfg.channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(train_grid, dtype=np.float32)).unsqueeze(1)
    sd = torch.from_numpy(cell_sd.astype(np.float32))
    n = data.shape[0]
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        other = (idx + torch.randint(1, max(n, 2), (cfg.batch_size,), generator=gen)) % n
        masks = draw_masks(cfg.batch_size).to(torch.float32)
        keep = (torch.rand(cfg.batch_size, generator=gen) < 0.5).view(-1, 1, 1, 1)
        masks = masks * keep
        x = perturb(data[idx], masks, data[other], sd[idx], cfg, gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), masks)
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


def auc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve: the chance that an anomalous clip scores above a normal one
    (ties count half); NaN without both kinds of clip."""
    if len(normal) == 0 or len(anomalous) == 0:
        return float("nan")
    diff = np.asarray(anomalous, dtype=float)[:, None] - np.asarray(normal, dtype=float)[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def pauc(normal: np.ndarray, anomalous: np.ndarray, max_fpr: float = 0.1) -> float:
    """DCASE's pAUC: the ROC area up to ``max_fpr``, McClish-standardized (0.5 for chance,
    1 for a perfect ranking), as ``sklearn.metrics.roc_auc_score(max_fpr=0.1)`` gives it."""
    if len(normal) == 0 or len(anomalous) == 0:
        return float("nan")
    scores = np.concatenate([normal, anomalous]).astype(float)
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last of each tie
    tps = np.cumsum(labels)[distinct]
    fps = np.cumsum(1 - labels)[distinct]
    tpr = np.r_[0.0, tps / len(anomalous)]
    fpr = np.r_[0.0, fps / len(normal)]
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.r_[fpr[:stop], max_fpr]
    y = np.r_[tpr[:stop], np.interp(max_fpr, fpr, tpr)]
    area = float(np.trapezoid(y, x))
    min_area = 0.5 * max_fpr**2
    return 0.5 * (1 + (area - min_area) / (max_fpr - min_area))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two equally long sequences (average ranks for ties); NaN when
    either is constant or shorter than 3."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3:
        return float("nan")

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class TestSet:
    """One machine type's test clips as the metrics see them."""

    label: np.ndarray  # 0 normal, 1 anomalous
    machine_id: np.ndarray


def type_metrics(scores: np.ndarray, test: TestSet) -> tuple[float, float]:
    """Mean over the type's IDs of AUC and of pAUC for one detector's clip scores."""
    aucs, paucs = [], []
    for mid in np.unique(test.machine_id):
        pick = test.machine_id == mid
        normal = scores[pick & (test.label == 0)]
        anomalous = scores[pick & (test.label == 1)]
        aucs.append(auc(normal, anomalous))
        paucs.append(pauc(normal, anomalous))
    return float(np.nanmean(aucs)), float(np.nanmean(paucs))


def bootstrap_metrics(
    scores: dict[str, np.ndarray],
    test: TestSet,
    n_bootstrap: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Per setting, ``n_bootstrap`` resampled (AUC, pAUC) type means, shape (n_bootstrap, 2).

    ``scores[setting]`` is (n_seeds, n_clips). Every resample draws the test clips again
    within each ID and label, the same clips for every setting (so differences are paired),
    and the training seeds again, independently per setting (so seed-to-seed variation
    widens the intervals); the metric is the mean over the drawn seeds.
    """
    rng = np.random.default_rng(seed)
    groups = [
        np.flatnonzero((test.machine_id == mid) & (test.label == lab))
        for mid in np.unique(test.machine_id)
        for lab in (0, 1)
    ]
    out = {name: np.empty((n_bootstrap, 2)) for name in scores}
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups if len(g)])
        resampled = TestSet(test.label[idx], test.machine_id[idx])
        for name, per_seed in scores.items():
            seeds = rng.integers(0, per_seed.shape[0], size=per_seed.shape[0])
            values = [type_metrics(per_seed[s, idx], resampled) for s in seeds]
            out[name][b] = np.mean(values, axis=0)
    return out


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def difference_verdict(low: float, high: float) -> str:
    """ "higher" / "lower" where the paired interval excludes 0, else "not distinguishable"."""
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "not distinguishable"


def closeness_sentence(low: float, high: float, n_settings: int, n_clips: int) -> str:
    """What the rank correlation of closeness (minus the mask score) and AUC supports."""
    if n_settings < 3 or not np.isfinite(low) or not np.isfinite(high):
        return f"not distinguishable: {n_settings} settings are too few to rank"
    if low > 0:
        return "closer masks trained better detectors here"
    if high < 0:
        return "closer masks did not train better detectors here (they trained worse)"
    return f"not distinguishable with {n_clips} test clips"
