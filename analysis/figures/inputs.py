"""What the figures stage reads, once: :class:`FigureInputs` (the jobs take the parts they draw)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import (
    fitted_settings,
    read_ground_truth,
    read_localization_arrays,
    read_localization_summary,
    read_mask_samples,
    read_masks_meta,
    read_recommendations,
    read_region_rows,
    read_source,
)
from analysis.mel import MelGeometry
from analysis.records import MaskSetting


@dataclass(frozen=True)
class FigureInputs:
    """What the figures stage reads, once (the jobs take the parts they draw)."""

    geometry: MelGeometry
    cfg: dict[str, Any]
    machine_types: list[str]
    presets: dict[str, dict[str, Any]]
    grids: dict[str, tuple[int, int]]
    resize_methods: list[str]
    samples: dict[str, dict[str, np.ndarray]]
    recs: list[dict[str, Any]]
    fitted: dict[str, MaskSetting]  # the fitted setting (single form) per type with a fit
    loc_arrays: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    region_rows: dict[str, list[dict[str, Any]]]
    truth: dict[str, dict[str, list[dict[str, str]]]]  # type -> file -> ground-truth rows
    synthetic: bool
    seed: int
    ci_level: float

    @property
    def anomaly_words(self) -> str:
        """What the anomalies are called: real recordings' or the synthetic test clips'."""
        return "anomalous test clips" if self.synthetic else "real anomalous clips"


def read_inputs(params: dict[str, Any], build_dir: Path) -> FigureInputs:
    masks_meta = read_masks_meta(build_dir / "masks")
    recs = read_recommendations(build_dir / "recommendations.json")
    machine_types = params["data"]["machine_types"]
    loc_dir = build_dir / "localization"
    sources = {t: read_source(build_dir / "features" / t) for t in machine_types}
    return FigureInputs(
        geometry=MelGeometry.from_params(params),
        cfg=params["figures"],
        machine_types=machine_types,
        presets=masks_meta["presets"],
        grids=masks_meta["grids"],
        resize_methods=masks_meta["resize_methods"],
        samples=read_mask_samples(build_dir / "masks"),
        recs=recs["rows"],
        fitted=fitted_settings(recs),
        loc_arrays={t: read_localization_arrays(loc_dir, t) for t in machine_types},
        summaries={t: read_localization_summary(loc_dir, t) for t in machine_types},
        region_rows={t: read_region_rows(loc_dir, t) for t in machine_types},
        truth={t: read_ground_truth(build_dir / "features" / t) for t in machine_types},
        synthetic=any(s["synthetic"] for s in sources.values()),
        seed=params["masks"]["seed"],
        ci_level=params["recommend"]["ci_level"],
    )
