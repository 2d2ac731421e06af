"""One owner for every file that one stage writes and another reads.

Each artifact has a typed reader and a writer here, and nowhere else builds or
parses its keys: the npz key scheme of the localization arrays, the column
order of the CSV tables, the layout of ``build/masks/``. A stage reads its
inputs through the readers and writes its outputs through the writers.

| artifact | writer (stage) | readers |
|---|---|---|
| ``build/features/TYPE/`` | :func:`write_features` (extract) | localize, power, report |
| ``build/localization/TYPE.{npz,json,regions.csv}`` | :func:`write_localization` (localize) | recommend, figures, report |
| ``build/power.{csv,json}`` | :func:`write_power` (power) | figures, report |
| ``build/masks/`` | :func:`write_masks` (masks) | recommend, figures, report |
| ``build/recommendations.{csv,json}``, ``build/metrics.json`` | :func:`write_recommendations` | figures, report, strategies |
| ``build/downstream.{json,csv}`` | :func:`write_downstream` (downstream) | figures, report |
| ``report/figures/manifest.json`` | :func:`write_manifest` (figures) | report |
"""

from __future__ import annotations

import enum
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dcase import GROUND_TRUTH_COLUMNS
from analysis.io import (
    load_npz,
    map_npz_member,
    read_csv,
    read_json,
    save_npz,
    write_csv,
    write_json,
)
from analysis.regions import FEATURE_COLUMNS

# ----------------------------------------------------------------------------- features


SKIPPED_COLUMNS = ("file", "reason")


@dataclass(frozen=True)
class TestFeatures:
    """``test.npz``: the normalized test log-mels of one machine type and their labels."""

    logmel: np.ndarray  # float32 (N, n_mels, target_T)
    label: np.ndarray  # int8 (N,): 0 normal, 1 anomaly
    machine_id: np.ndarray  # str (N,)
    file: np.ndarray  # str (N,): path relative to data.root
    n_frames: np.ndarray  # int32 (N,): real (unpadded) frames of each clip
    # The section layouts' per-clip fields ("" in DCASE 2020): section "00", domain
    # source | target, attributes "key=value; ..."; machine_id holds the unit key.
    section: np.ndarray | None = None  # str (N,)
    domain: np.ndarray | None = None  # str (N,)
    attributes: np.ndarray | None = None  # str (N,)
    layout: str = "dcase2020"

    def text_field(self, name: str) -> np.ndarray:
        """``section``, ``domain`` or ``attributes`` per clip ("" where not given)."""
        value = getattr(self, name)
        return np.full(self.label.shape, "", dtype=str) if value is None else value

    def machine_ids(self) -> list[str]:
        """The machine IDs present, sorted."""
        return sorted(set(self.machine_id.tolist()))

    def pick(self, machine_id: str, label: int) -> np.ndarray:
        """Boolean selector of one ID's clips with one label."""
        return (self.machine_id == machine_id) & (self.label == label)


@dataclass(frozen=True)
class TrainStats:
    """``train_stats.npz``: per-mel-bin statistics over all train frames (before padding)."""

    mean: np.ndarray  # float32 (n_mels,)
    std: np.ndarray  # float32 (n_mels,)
    count: int  # train frames
    n_clips: int  # train clips used


def write_features(
    folder: Path,
    test: TestFeatures,
    train: TrainStats,
    skipped: Sequence[tuple[str, str]],
    truth_source: Path | None,
    source: dict[str, Any],
) -> None:
    """Write one machine type's feature folder (``folder`` is the atomic temporary one).

    ``truth_source`` is the data set's ``ground_truth.csv`` (copied), or None
    (real data: a header-only file).
    """
    save_npz(
        folder / "test.npz",
        compress=False,
        logmel=test.logmel,
        label=test.label,
        machine_id=test.machine_id,
        file=test.file,
        n_frames=test.n_frames,
        section=test.text_field("section"),
        domain=test.text_field("domain"),
        attributes=test.text_field("attributes"),
        layout=np.array(test.layout),
    )
    save_npz(
        folder / "train_stats.npz",
        mean=train.mean,
        std=train.std,
        count=np.int64(train.count),
        n_clips=np.int64(train.n_clips),
    )
    write_csv(
        folder / "skipped.csv", [{"file": f, "reason": r} for f, r in skipped], SKIPPED_COLUMNS
    )
    if truth_source is not None:
        shutil.copyfile(truth_source, folder / "ground_truth.csv")
    else:
        write_csv(folder / "ground_truth.csv", [], GROUND_TRUTH_COLUMNS)
    write_json(folder / "source.json", source)


def read_test_features(folder: str | Path) -> TestFeatures:
    """``test.npz``; its log-mels memory-mapped (copy-on-write), so selecting one unit's or one
    label's clips reads only those from disk and the whole array is never loaded at once."""
    path = Path(folder) / "test.npz"
    logmel = map_npz_member(path, "logmel")
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files if not (k == "logmel" and logmel is not None)}
    return TestFeatures(
        data["logmel"] if logmel is None else logmel,
        data["label"],
        data["machine_id"],
        data["file"],
        data["n_frames"],
        data.get("section"),
        data.get("domain"),
        data.get("attributes"),
        str(data["layout"]) if "layout" in data else "dcase2020",
    )


def read_train_stats(folder: str | Path) -> TrainStats:
    data = load_npz(Path(folder) / "train_stats.npz")
    return TrainStats(data["mean"], data["std"], int(data["count"]), int(data["n_clips"]))


def read_ground_truth(folder: str | Path) -> dict[str, list[dict[str, str]]]:
    """Ground-truth rows (``GROUND_TRUTH_COLUMNS``) by clip file; empty for real data."""
    out: dict[str, list[dict[str, str]]] = {}
    for row in read_csv(Path(folder) / "ground_truth.csv"):
        out.setdefault(row["file"], []).append(row)
    return out


def read_skipped(folder: str | Path) -> list[dict[str, str]]:
    return read_csv(Path(folder) / "skipped.csv")


def read_source(folder: str | Path) -> dict[str, Any]:
    """``source.json``: what extract found under the data root (counts, warnings, fingerprint)."""
    return read_json(Path(folder) / "source.json")


# ----------------------------------------------------------------------------- localization

REGION_COLUMNS = (
    "file",
    "machine_id",
    "found",
    *FEATURE_COLUMNS,
    "band_centre_hz",
    "critical_level",
    "truth_kind",
    "iou",
    "centre_error_bins",
    "section",  # the section layouts' per-clip fields ("" in DCASE 2020)
    "domain",
    "attributes",
)
_TEXT_REGION_COLUMNS = ("file", "machine_id", "truth_kind", "section", "domain", "attributes")
POOLED_PARTS = ("all", "fit", "holdout")  # all anomalous clips, and the two halves
_KEY_SEP = "__"  # npz keys: ID__map and ID__pooled_region[_part]


@dataclass(frozen=True)
class LocalizationArrays:
    """``TYPE.npz``: clip-level regions, and per machine ID its maps and pooled regions."""

    regions: np.ndarray  # bool (n_clips, n_mels, T), in region_files order
    region_files: list[str]
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # ID -> name -> map
    pooled: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # ID -> part -> map

    def region_of(self, file: str) -> np.ndarray:
        return self.regions[self.region_files.index(file)]


def _pooled_key(machine_id: str, part: str) -> str:
    return f"{machine_id}{_KEY_SEP}pooled_region" + ("" if part == "all" else f"_{part}")


def write_localization(
    out_dir: Path,
    machine_type: str,
    arrays: LocalizationArrays,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
) -> None:
    """Write ``TYPE.npz``, ``TYPE.regions.csv`` (``REGION_COLUMNS``) and ``TYPE.json``."""
    flat: dict[str, np.ndarray] = {}
    for machine_id, maps in arrays.maps.items():
        flat.update({f"{machine_id}{_KEY_SEP}{name}": m for name, m in maps.items()})
    for machine_id, parts in arrays.pooled.items():
        flat.update({_pooled_key(machine_id, part): m for part, m in parts.items()})
    save_npz(
        out_dir / f"{machine_type}.npz",
        regions=arrays.regions,
        region_files=np.array(arrays.region_files, dtype=str),
        **flat,
    )
    write_csv(out_dir / f"{machine_type}.regions.csv", rows, REGION_COLUMNS)
    write_json(out_dir / f"{machine_type}.json", summary)


def read_localization_arrays(loc_dir: str | Path, machine_type: str) -> LocalizationArrays:
    data = load_npz(Path(loc_dir) / f"{machine_type}.npz")
    out = LocalizationArrays(data.pop("regions"), data.pop("region_files").tolist())
    pooled_names = {
        _pooled_key("", part).removeprefix(_KEY_SEP): part for part in POOLED_PARTS
    }  # "pooled_region" -> all, "pooled_region_fit" -> fit, ...
    for key, value in data.items():
        machine_id, _, name = key.partition(_KEY_SEP)
        if name in pooled_names:
            out.pooled.setdefault(machine_id, {})[pooled_names[name]] = value
        else:
            out.maps.setdefault(machine_id, {})[name] = value
    return out


def _region_value(column: str, text: str) -> Any:
    if column in _TEXT_REGION_COLUMNS:
        return text
    if column == "found":
        return text == "1"
    return float(text) if text else float("nan")


def parse_region_row(row: dict[str, str]) -> dict[str, Any]:
    """One ``regions.csv`` row with types: ``found`` bool, numbers float (NaN where blank);
    columns the row lacks stay out."""
    return {c: _region_value(c, row[c]) for c in REGION_COLUMNS if c in row}


def read_region_rows(loc_dir: str | Path, machine_type: str) -> list[dict[str, Any]]:
    """``TYPE.regions.csv``, each row through :func:`parse_region_row`."""
    return [parse_region_row(r) for r in read_csv(Path(loc_dir) / f"{machine_type}.regions.csv")]


def region_feature_arrays(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``FEATURE_COLUMNS`` arrays of parsed region (or mask) rows."""
    return {c: np.array([r[c] for r in rows], dtype=float) for c in FEATURE_COLUMNS}


def read_localization_summary(loc_dir: str | Path, machine_type: str) -> dict[str, Any]:
    """``TYPE.json``: the type's summary with ``ids`` (per ID; see :func:`pooled_part`)."""
    return read_json(Path(loc_dir) / f"{machine_type}.json")


@dataclass(frozen=True)
class PooledPart:
    """The ID-level test on one part of an ID's anomalous clips, as ``TYPE.json`` stores it."""

    found: bool
    p_value: float | None
    features: dict[str, float | None] | None  # region features where found
    rows: list[int]  # mel rows of the region


NOT_TESTED = PooledPart(False, None, None, [])


def pooled_part(id_summary: dict[str, Any], part: str) -> PooledPart:
    """One part (``POOLED_PARTS``) of an ID's ID-level evidence; ``NOT_TESTED`` when the ID
    was not localized or the part had no clips."""
    entry = (id_summary.get("id_level") or {}).get(part)
    if not entry:
        return NOT_TESTED
    return PooledPart(
        bool(entry["found"]), entry.get("p_value"), entry.get("features"), entry.get("rows") or []
    )


# ----------------------------------------------------------------------------- power

POWER_COLUMNS = (
    "machine_type",
    "pattern",
    "delta",
    "n_ids",
    "n_spiked",
    "clip_recall",
    "clip_iou",
    "clip_false_region_rate",
    "id_found_share",
    "id_iou",
)


def write_power(build_dir: Path, rows: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """``power.csv`` (``POWER_COLUMNS``) and ``power.json`` (``record`` plus the rows)."""
    write_csv(build_dir / "power.csv", rows, POWER_COLUMNS)
    write_json(build_dir / "power.json", {**record, "rows": rows})


def read_power(build_dir: str | Path) -> dict[str, Any]:
    """``power.json``: ``deltas``, detection rules, ``types`` (status, limits) and ``rows``."""
    return read_json(Path(build_dir) / "power.json")


# ----------------------------------------------------------------------------- downstream


@dataclass(frozen=True)
class DownstreamRecord:
    """``downstream.json``: whether the check ran and, per type (``types``), the proxy rows
    per setting, the reference detectors, per-ID rows, validity and the rank correlation."""

    enabled: bool
    how_to_run: str
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    perturbation: str = ""
    n_parameters: int | None = None
    grid: list[int] = field(default_factory=list)
    baseline: str = ""
    baseline_epochs: int | None = None
    baseline_epochs_published: int | None = None
    train_clips_written: bool = False  # the check wrote its own synthetic train clips
    ci_level: float = 0.9


def write_downstream(
    build_dir: Path, record: dict[str, Any], rows: list[dict[str, Any]], columns: Sequence[str]
) -> None:
    """``downstream.json`` (``record``) and ``downstream.csv`` (per-ID rows in ``columns``)."""
    write_json(build_dir / "downstream.json", record)
    write_csv(build_dir / "downstream.csv", rows, columns)


def read_downstream(build_dir: str | Path) -> DownstreamRecord:
    """``downstream.json`` as a :class:`DownstreamRecord` (a not-run record has no types)."""
    raw = read_json(Path(build_dir) / "downstream.json")
    known = DownstreamRecord.__dataclass_fields__
    return DownstreamRecord(**{k: v for k, v in raw.items() if k in known})


# ----------------------------------------------------------------------------- masks

FIDELITY_COLUMNS = (
    "preset",
    "grid",
    "q_shape",
    "method",
    "vanished_share",
    "retained_area_mean",
    "iou_mean",
    "iou_p10",
)
_FIDELITY_TEXT = ("preset", "grid", "q_shape", "method")
MASK_COLUMNS = ("preset", "mask", *FEATURE_COLUMNS)


@dataclass
class MaskMeasurements:
    """Everything the ``masks`` stage measures, as written to ``build/masks/``."""

    meta: dict[str, Any]  # presets, preset_order, grids, resize_methods, spectrogram_shape
    feature_rows: list[dict[str, Any]]  # MASK_COLUMNS, spectrogram size
    grid_rows: dict[str, list[dict[str, Any]]]  # grid -> MASK_COLUMNS rows, projected
    fidelity_rows: list[dict[str, Any]]  # FIDELITY_COLUMNS
    samples: dict[str, dict[str, np.ndarray]]  # preset -> "full" or sample_key(grid, method)
    per_mask: dict[tuple[str, str, str, str], np.ndarray]  # (preset, grid, method, metric)
    summary: dict[str, Any]


def sample_key(grid: str, method: str) -> str:
    """The key of a preset's samples projected onto ``grid`` with ``method``."""
    return f"{grid}{_KEY_SEP}{method}"


def write_masks(folder: Path, m: MaskMeasurements) -> None:
    """Write ``build/masks/`` (``folder`` is the atomic temporary one)."""
    write_csv(folder / "features.csv", m.feature_rows, MASK_COLUMNS)
    for grid, rows in m.grid_rows.items():
        write_csv(folder / f"features_{grid}.csv", rows, MASK_COLUMNS)
    write_csv(folder / "fidelity.csv", m.fidelity_rows, FIDELITY_COLUMNS)
    save_npz(
        folder / "samples.npz",
        **{
            f"{preset}{_KEY_SEP}{key}": value
            for preset, by_key in m.samples.items()
            for key, value in by_key.items()
        },
    )
    save_npz(
        folder / "fidelity_per_mask.npz",
        **{_KEY_SEP.join(key): value for key, value in m.per_mask.items()},
    )
    write_json(folder / "presets.json", m.meta)
    write_json(folder / "summary.json", m.summary)


def read_masks_meta(masks_dir: str | Path) -> dict[str, Any]:
    """``presets.json`` with ``presets`` in the user's order (JSON keys are sorted) and
    ``grids`` as (H, W) tuples."""
    meta = read_json(Path(masks_dir) / "presets.json")
    meta["presets"] = {name: meta["presets"][name] for name in meta["preset_order"]}
    meta["grids"] = {g: tuple(shape) for g, shape in meta["grids"].items()}
    return meta


def _parse_mask_row(row: dict[str, str]) -> dict[str, Any]:
    return {
        "preset": row["preset"],
        "mask": int(row["mask"]),
        **{c: float(row[c]) if row[c] else float("nan") for c in FEATURE_COLUMNS},
    }


def read_mask_rows(masks_dir: str | Path, grid: str | None = None) -> list[dict[str, Any]]:
    """Per-mask feature rows (NaN features for empty masks), at spectrogram size or on ``grid``."""
    name = "features.csv" if grid is None else f"features_{grid}.csv"
    return [_parse_mask_row(r) for r in read_csv(Path(masks_dir) / name)]


def read_mask_features(
    masks_dir: str | Path, presets: Sequence[str], grid: str | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Feature arrays of every preset's masks (see :func:`read_mask_rows`)."""
    rows = read_mask_rows(masks_dir, grid)
    return {p: region_feature_arrays([r for r in rows if r["preset"] == p]) for p in presets}


def read_fidelity(masks_dir: str | Path) -> list[dict[str, Any]]:
    """``fidelity.csv`` rows with numbers as floats."""
    return [
        {c: r[c] if c in _FIDELITY_TEXT else float(r[c]) for c in FIDELITY_COLUMNS}
        for r in read_csv(Path(masks_dir) / "fidelity.csv")
    ]


def read_mask_samples(masks_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The kept samples: preset -> ``"full"`` or :func:`sample_key` -> (n, H, W) uint8.

    Keys are looked up from ``presets.json`` (presets, grids, methods), never split,
    so names that hold ``__`` themselves cannot be misread.
    """
    meta = read_masks_meta(masks_dir)
    data = load_npz(Path(masks_dir) / "samples.npz")
    keys = ["full"] + [sample_key(g, m) for g in meta["grids"] for m in meta["resize_methods"]]
    return {
        preset: {key: data[f"{preset}{_KEY_SEP}{key}"] for key in keys}
        for preset in meta["presets"]
    }


# ----------------------------------------------------------------------------- recommendations


SCORE_PLOT_COLUMNS = ("machine_type", "candidate", "score")
FITTED = "fitted"  # a verdict's name for the fitted setting, in its recommended form


class Verdict(enum.Enum):
    """What a machine type's user should do with the masks they train with."""

    SWITCH = "switch"  # a candidate is distinguishably closer than the user's setting, stably
    KEEP = "keep"  # the test ran with enough regions and no candidate is distinguishably closer
    NOT_ENOUGH_EVIDENCE = "not_enough_evidence"  # too few regions, or a verdict that flips


@dataclass(frozen=True)
class VerdictRecord:
    """One row's decision against the user's setting (``recommendations.json``: ``verdict``).

    ``difference`` is score(candidate) - score(user_setting) on the first split's held-out half,
    ``ci_low``/``ci_high`` its paired bootstrap interval at ``corrected_level`` (Holm over the
    machine types tested); ``stability_share`` the share of the ``n_splits`` splits that give
    this verdict (for not_enough_evidence: the first split's verdict's share); ``clips_needed``
    about how many more anomalous clips would settle it (None where more clips would not, or
    nothing is unsettled); ``downstream`` is left for what the downstream check's training found.
    """

    kind: Verdict
    candidate: str | None
    user_setting: str
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    corrected_level: float | None
    stability_share: float | None
    n_splits: int
    n_independent_holdout: int
    reason: str
    clips_needed: int | None = None
    downstream: dict[str, Any] | None = None

    @property
    def recommended(self) -> str:
        """The setting to train with: the candidate on switch, else the user's own."""
        return self.candidate if self.kind is Verdict.SWITCH else self.user_setting

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerdictRecord:
        return cls(**{**data, "kind": Verdict(data["kind"])})


def row_verdict(row: dict[str, Any]) -> VerdictRecord:
    """The typed verdict of a recommendations row (as :func:`read_recommendations` gives it)."""
    return VerdictRecord.from_json(row["verdict"])


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its verdict flattened into the CSV's ``verdict*`` columns."""
    v = row_verdict(row)
    return {
        **row,
        "verdict": v.kind.value,
        "verdict_candidate": v.candidate,
        "verdict_stability": v.stability_share,
        "verdict_corrected_level": v.corrected_level,
    }


def write_recommendations(
    build_dir: Path,
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    record: dict[str, Any],
    metrics: dict[str, Any],
    scores: list[dict[str, Any]],
) -> None:
    """``recommendations.csv`` (``columns``), ``recommendations.json`` (``record`` plus the
    rows), ``metrics.json`` and ``scores.csv`` (``SCORE_PLOT_COLUMNS``, for ``dvc plots``)."""
    write_csv(build_dir / "recommendations.csv", [_csv_row(r) for r in rows], columns)
    write_json(build_dir / "recommendations.json", {**record, "rows": rows})
    write_json(build_dir / "metrics.json", metrics)
    write_csv(build_dir / "scores.csv", scores, SCORE_PLOT_COLUMNS)


def read_recommendations(path: str | Path) -> dict[str, Any]:
    """``recommendations.json``: ``score_definition``, ``presets`` and ``rows``."""
    return read_json(path)


def type_rows(recommendations: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-machine-type rows (``machine_id`` ``all``)."""
    return [r for r in recommendations["rows"] if r["machine_id"] == "all"]


def fitted_settings(recommendations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fitted setting of every machine type that has one (rows with status ok)."""
    return {r["machine_type"]: r["fitted"] for r in type_rows(recommendations) if is_ok(r)}


def recommended_settings(recommendations: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per machine type, the setting its verdict says to train with: the candidate on "switch"
    (``("fitted", settings)``, ``("mixture", {"kind": "mixture", "components": ...})`` where the
    fitted form is the mixture of its IDs' settings, or ``(preset name, preset entry)``), and
    the user's own setting on "keep", on "not enough evidence" and where a type had no fit."""
    out = {}
    presets = recommendations["presets"]
    for row in type_rows(recommendations):
        v = row_verdict(row)
        name = v.recommended
        if name != FITTED:
            out[row["machine_type"]] = (name, presets[name])
        elif row.get("form") == "mixture":
            out[row["machine_type"]] = (
                "mixture",
                {"kind": "mixture", "components": row["mixture"]},
            )
        else:
            out[row["machine_type"]] = ("fitted", {"kind": "audio_specific", **row["fitted"]})
    return out


def is_ok(row: dict[str, Any]) -> bool:
    """Whether a recommendations row has a fit and scores (else it says why not)."""
    return row.get("status") == "ok"


# ----------------------------------------------------------------------------- figures


def write_manifest(folder: Path, entries: list[dict[str, Any]]) -> None:
    """``manifest.json``: id, file, caption and section of every figure drawn."""
    write_json(folder / "manifest.json", {"figures": entries})


def read_manifest(folder: str | Path) -> list[dict[str, Any]]:
    return read_json(Path(folder) / "manifest.json")["figures"]
