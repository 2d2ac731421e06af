"""Stage ``report``: the Quarto document, rendered to HTML (to read) and PDF (to share).

Builds the template context from the stage outputs (read through
:mod:`analysis.artifacts`), with the sentences of :mod:`analysis.report_text`,
writes ``report/report.qmd`` and renders it (:mod:`analysis.render`).
"""

from __future__ import annotations

import base64
import collections
import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import yaml

from analysis.artifacts import (
    DownstreamRecord,
    Verdict,
    is_ok,
    read_downstream,
    read_fidelity,
    read_ground_truth,
    read_localization_arrays,
    read_localization_summary,
    read_manifest,
    read_masks_meta,
    read_power,
    read_recommendations,
    read_region_rows,
    read_skipped,
    read_source,
    recommended_settings,
    row_verdict,
)
from analysis.decision import REPEATED_SEARCH_SHARE, STABLE_SHARE
from analysis.detection import (
    FAR_AUC_MARGIN,
    REFERENCE_LABELS,
    combined_verdict,
    curve_answer,
    training_result,
)
from analysis.evidence import AGREEMENT_BINS
from analysis.fit import FIT_KEYS, MIXTURE_MARGIN, SIMPLICITY_TERMS, SIMPLICITY_WEIGHT
from analysis.io import log, write_text
from analysis.localization.id_level import EXTENT_T
from analysis.mel import MelGeometry
from analysis.proxy_calibration import PLANTED_SIZE_SD
from analysis.records import MaskSetting, diff_key, score_key
from analysis.recovery import recovery_cells, recovery_phrase, recovery_rows
from analysis.regions import SCALE_WORDS
from analysis.render import (
    REPORT_DIR,
    choose_engine,
    engine_version,
    render_qmd,
    render_with_pandoc,
    render_with_quarto,
)
from analysis.report_layout import (
    attribute_rows,
    calibration_sentences,
    is_section_layout,
    layout_unit_words,
    layout_words,
)
from analysis.report_text import (
    NOT_SWITCHING,
    data_found,
    describe_fit,
    difference_words,
    evidence_words,
    findings,
    lead_sentence,
    rebuild_code,
    settle_words,
    shareable_path,
    stability_words,
    strategy_call,
    training_code_call,
    type_description,
    verdict_label,
    yardstick_words,
)
from analysis.scoring import MIN_HOLDOUT_FOR_CI
from analysis.yardstick import N_FOLDS as YARDSTICK_FOLDS

# The fitted parameters whose spread over splits the report prints (the rest follow from them).
SPREAD_KEYS = (
    "min_band_fraction",
    "max_band_fraction",
    "min_band_position",
    "max_band_position",
    "full_time_prob",
    "min_segments",
    "max_segments",
    "min_seg_len",
    "max_seg_len",
)

PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "torch",
    "librosa",
    "soundfile",
    "matplotlib",
    "seaborn",
    "jinja2",
    "dvc",
    "pypandoc-binary",
    "typst",
)


def git_state(cwd: Path = Path(".")) -> dict[str, Any]:
    """The commit the report was made from and whether tracked files had changes."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {
        "commit": commit or "unknown (not a git checkout)",
        "dirty": dirty,
        "commit_date": run("log", "-1", "--format=%cs") if commit else "",
        "commit_epoch": run("log", "-1", "--format=%ct") if commit else "",
    }


def report_epoch(git: dict[str, Any], date: str = "commit") -> int | None:
    """The report's moment, for its printed date and the PDF's dates: ``report.date`` when it is
    a day (its midnight, UTC), else ``SOURCE_DATE_EPOCH`` when set, else the last commit's time;
    None when none is known (outside a git checkout): the report is then undated."""
    if date != "commit":
        day = _dt.date.fromisoformat(date)
        return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp())
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return int(epoch)
    commit = str(git.get("commit_epoch") or "").strip()
    return int(commit) if commit.isdigit() else None


def report_date(git: dict[str, Any], date: str = "commit") -> str:
    """The date printed on the report, labelled with where it comes from (``report.date``,
    ``SOURCE_DATE_EPOCH`` or the last commit). Never the day it is rendered: the same inputs
    give the same report, so without any of them the report says it is undated."""
    epoch = report_epoch(git, date)
    if epoch is None:
        return "Undated (not a git checkout: set report.date or SOURCE_DATE_EPOCH to date it)"
    day = _dt.datetime.fromtimestamp(epoch, _dt.UTC).date().isoformat()
    if date != "commit":
        return f"Date (report.date): {day}"
    if os.environ.get("SOURCE_DATE_EPOCH", "").strip().isdigit():
        return f"Date (SOURCE_DATE_EPOCH): {day}"
    return f"Date of commit {git['commit'][:12]}: {day}"


# The PDF's own dates when the report is undated: a fixed moment (the epoch), not the clock.
UNDATED_EPOCH = 0


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def layout_context(
    machine_types: list[str], sources: dict[str, dict[str, Any]], build_dir: Path
) -> dict[str, Any]:
    """The data layout's words: layout, unit noun, per-domain calibration, attribute tables."""
    loc_dir = build_dir / "localization"
    return {
        "layout_words": layout_words(sources),
        "u": layout_unit_words(sources),
        "section_layout": is_section_layout(sources),
        "calibration_notes": {
            t: calibration_sentences(read_localization_summary(loc_dir, t)) for t in machine_types
        },
        "attribute_tables": {
            t: attribute_rows(read_region_rows(loc_dir, t)) for t in machine_types
        },
    }


def data_context(params: dict[str, Any], build_dir: Path) -> dict[str, Any]:
    """What the data were: sources per machine type, skipped files, the data banner."""
    machine_types = params["data"]["machine_types"]
    sources = {t: read_source(build_dir / "features" / t) for t in machine_types}
    return {
        "machine_types": machine_types,
        "synthetic": all(s["synthetic"] for s in sources.values()),
        "any_synthetic": any(s["synthetic"] for s in sources.values()),
        "data_root": params["data"]["root"],
        "data_found": data_found(sources),
        "sources": sources,
        **layout_context(machine_types, sources, build_dir),
        "skipped": [
            {"machine_type": t, **row}
            for t in machine_types
            for row in read_skipped(build_dir / "features" / t)
        ],
        "localization": {
            t: read_localization_summary(build_dir / "localization", t) for t in machine_types
        },
        "power": power_context(read_power(build_dir)),
        "downstream": read_downstream(build_dir),
    }


def training_line(row: dict[str, Any], record: DownstreamRecord) -> dict[str, str]:
    """Page 1's verdict for one type with the training check: closeness combined with the
    candidate's AUC minus the user's setting's (:func:`analysis.detection.combined_verdict`)."""
    v = row_verdict(row)
    closeness = {Verdict.SWITCH: "switch", Verdict.KEEP: "keep"}.get(v.kind, "not enough evidence")
    type_record = record.types.get(row["machine_type"]) if record.enabled else None
    found = None
    if record.enabled:
        found = training_result(type_record, v.candidate or "fitted")
    verdict, words = combined_verdict(closeness, found, record.how_to_run)
    if found is None and record.enabled:
        if row["machine_type"] not in record.types:
            words = "closeness alone: the check has no result for this type"
        elif v.candidate is None and row.get("status") != "ok":
            words = "closeness alone: no fitted setting to train"
        else:
            words = (
                f"closeness alone: {v.candidate or 'fitted'} was not trained "
                "(add it to downstream.presets)"
            )
    trend = trend_words(type_record)
    return {"verdict": verdict, "words": words, "changed": verdict != closeness, "trend": trend}


def trend_words(type_record: dict[str, Any] | None) -> str:
    """Page 1's short form of the dose-response answer for one type (:func:`curve_answer`):
    empty where the check is not valid or named no shape (the full sentence, with ρ and its
    interval, is in the downstream section)."""
    answer = curve_answer(type_record)
    if answer is None:
        return ""
    found = type_record["rank_correlation"]
    if not found.get("ranked", True):
        return answer
    return f"AUC vs closeness, {len(found['settings'])} settings: {answer}"


def power_context(power: dict[str, Any]) -> dict[str, Any]:
    """``power.json`` with the planted patterns listed once (the columns of its table)."""
    patterns: list[str] = []
    for summary in power["types"].values():
        for pattern in summary.get("detection_limits", {}):
            if pattern not in patterns:
                patterns.append(pattern)
    return {**power, "patterns": patterns}


# The raw tables the HTML report carries as downloads (file under build/, what it holds).
DOWNLOADS = (
    ("recommendations.csv", "every fitted row, its scores and verdict"),
    ("scores.csv", "the held-out score of every candidate per machine type"),
    ("power.csv", "detection power per machine type, pattern and strength"),
)


def downloads(build_dir: Path) -> list[dict[str, str]]:
    """The raw CSVs as data URIs (the HTML file stays self-contained)."""
    out = []
    for name, what in DOWNLOADS:
        path = build_dir / name
        if path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            out.append({"name": name, "what": what, "uri": f"data:text/csv;base64,{encoded}"})
    return out


def results_context(build_dir: Path, figures_dir: Path, geometry: MelGeometry) -> dict[str, Any]:
    """Recommendations, presets, resize fidelity and the figures (by section)."""
    recs = read_recommendations(build_dir / "recommendations.json")
    presets_meta = read_masks_meta(build_dir / "masks")
    manifest = read_manifest(figures_dir)
    # Every section the template asks for exists, empty where no figure was drawn (a run that
    # found nothing draws no comparison figure and no score heat map).
    figures_by_section: dict[str, list[dict]] = collections.defaultdict(list)
    for entry in manifest:
        figures_by_section.setdefault(entry["section"], []).append(entry)
    rows = recs["rows"]
    type_rows = [r for r in rows if r["machine_id"] == "all"]
    for r in rows:
        if is_ok(r):
            r["summary_words"] = describe_fit(r, geometry.target_T)
    return {
        "rows": rows,
        "type_rows": type_rows,
        "id_rows": [r for r in rows if r["machine_id"] != "all"],
        "lacking_types": [r["machine_type"] for r in type_rows if not is_ok(r)],
        "lead": lead_sentence(type_rows),
        "n_masks_described": next((r["drawn"]["n_masks"] for r in type_rows if is_ok(r)), 0),
        "score_definition": recs["score_definition"],
        "presets": shareable_presets(presets_meta["presets"]),
        "preset_names": list(presets_meta["presets"]),
        "grids": presets_meta["grids"],
        "fidelity": read_fidelity(build_dir / "masks"),
        "figures": figures_by_section,
        "figure_ids": {e["id"] for e in manifest},
        "calls": {r["machine_type"]: strategy_call(r, geometry) for r in type_rows if is_ok(r)},
        "training_calls": {
            r["machine_type"]: training_code_call(r, geometry) for r in type_rows if is_ok(r)
        },
    }


def recovery_context(
    machine_types: list[str], build_dir: Path, rows: list[dict[str, Any]], geometry: MelGeometry
) -> dict[str, list[dict[str, Any]]]:
    """Per machine type with ground truth, per ID: the injected truth, the clip-level regions
    found and the fitted setting's masks (its own fit, else its type's), as table cells;
    types without ground truth (real data) are left out."""
    out = {}
    for t in machine_types:
        truth = read_ground_truth(build_dir / "features" / t)
        region_rows = read_region_rows(build_dir / "localization", t) if truth else []
        if not region_rows:
            continue
        arrays = read_localization_arrays(build_dir / "localization", t)
        regions = dict(zip(arrays.region_files, arrays.regions, strict=True))
        type_fit = [r for r in rows if r["machine_type"] == t and r["machine_id"] == "all"]
        fits = {
            r["machine_id"]: {**r, "scope": "ID"}
            for r in rows
            if r["machine_type"] == t and r["machine_id"] != "all" and is_ok(r)
        }
        if type_fit and is_ok(type_fit[0]):
            for mid in {r["machine_id"] for r in region_rows} - set(fits):
                fits[mid] = {**type_fit[0], "scope": "type"}
        table = recovery_rows(region_rows, regions, truth, fits, geometry)
        out[t] = [
            {
                **r,
                "cells": {
                    k: recovery_phrase(recovery_cells(r[k]))
                    for k in ("injected", "found", "fitted")
                },
            }
            for r in table
        ]
    return {t: v for t, v in out.items() if v}


def shareable_presets(presets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Presets with every ``kind: python`` preset's ``path`` made shareable (see
    :func:`~analysis.report_text.shareable_path`)."""
    return {
        name: {**p, "path": shareable_path(p["path"])} if "path" in p else p
        for name, p in presets.items()
    }


def shareable_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the report prints them: shareable preset paths and data root (relative
    to the project, or only its last part: the banner, provenance and params block)."""
    presets = shareable_presets(params["masks"]["presets"])
    data = {**params["data"], "root": shareable_path(params["data"]["root"])}
    return {**params, "data": data, "masks": {**params["masks"], "presets": presets}}


def provenance_context(
    params: dict[str, Any], params_path: str | Path, build_dir: Path, engine: str
) -> dict[str, Any]:
    """Title, date, downloads and what made the report: params (with their hash), the git
    state, package versions and the render engine. ``params`` are the shareable ones."""
    git = git_state()
    return {
        "title": params["report"]["title"],
        "author": params["report"]["author"],
        "date_label": report_date(git, params["report"]["date"]),
        "epoch": report_epoch(git, params["report"]["date"]),
        "downloads": downloads(build_dir),
        "params_sha256": hashlib.sha256(Path(params_path).read_bytes()).hexdigest()
        if Path(params_path).is_file()
        else "–",
        "params": params,
        "params_yaml": yaml.safe_dump(params, sort_keys=False),
        "git": git,
        "versions": package_versions(),
        "engine": engine_version(engine),
    }


def simplicity_terms() -> list[str]:
    """Every term of the fit's simplicity penalty (``analysis.fit.SIMPLICITY_TERMS``) as the
    methods text writes it: its parameter mapped as the score maps the feature it bounds."""
    return [SCALE_WORDS[feature].format(key) for key, feature in SIMPLICITY_TERMS]


def methods_context(params: dict[str, Any], geometry: MelGeometry) -> dict[str, Any]:
    """What the methods text states: the mel geometry, the settings of the decision and the
    constants the code uses, read from the code."""
    return {
        "geometry": geometry,
        "n_mels": geometry.n_mels,
        "T": geometry.target_T,
        "fit_keys": FIT_KEYS,
        "ci_level": params["recommend"]["ci_level"],
        "min_holdout_for_ci": MIN_HOLDOUT_FOR_CI,
        "stable_share": STABLE_SHARE,
        "spread_keys": SPREAD_KEYS,
        "yardstick_folds": YARDSTICK_FOLDS,
        "n_splits": params["recommend"]["n_splits"],
        "user_setting": params["recommend"]["user_setting"],
        "repeated_search_share": REPEATED_SEARCH_SHARE,
        "simplicity_weight": SIMPLICITY_WEIGHT,
        "simplicity_terms": simplicity_terms(),
        "mixture_margin": MIXTURE_MARGIN,
        # The row keys of scores and differences: the template looks them up, never builds them.
        "score_key": score_key,
        "diff_key": diff_key,
        "constants": {"extent_t": EXTENT_T, "agreement_bins": AGREEMENT_BINS},
        "reference_labels": REFERENCE_LABELS,
        "far_auc_margin": FAR_AUC_MARGIN,
        "planted_size_sd": PLANTED_SIZE_SD,
    }


def verdict_context(
    context: dict[str, Any], params: dict[str, Any], build_dir: Path, geometry: MelGeometry
) -> dict[str, Any]:
    """Per machine type the words of its verdict: the label, the training line, the difference,
    the yardstick, stability and evidence; which types switch and the code to rebuild their
    masks (and the user's own setting)."""
    type_rows = context["type_rows"]
    out: dict[str, Any] = {
        "verdict_labels": {r["machine_type"]: verdict_label(r) for r in type_rows},
        "verdict_labels_by_row": {
            f"{r['machine_type']}/{r['machine_id']}": verdict_label(r) for r in context["rows"]
        },
        "difference_words": {r["machine_type"]: difference_words(r) for r in type_rows},
    }
    recommended = recommended_settings(read_recommendations(build_dir / "recommendations.json"))
    out["switching"] = [
        r["machine_type"] for r in type_rows if row_verdict(r).kind is Verdict.SWITCH
    ]
    out["staying"] = [t for t in recommended if t not in out["switching"]]
    # Switching by closeness, but the training check says otherwise (page 1's verdict).
    out["overridden"] = [t for t in out["switching"] if context["training"][t]["changed"]]
    out["rebuild"] = {
        t: rebuild_code(t, name, setting, out["verdict_labels"][t], geometry)
        for t, (name, setting) in recommended.items()
        if t in out["switching"]
    }
    user = params["recommend"]["user_setting"]
    out["rebuild_staying"] = rebuild_code(
        NOT_SWITCHING,
        user,
        MaskSetting.from_json(params["masks"]["presets"][user]),
        "the setting you run",
        geometry,
    )
    out["yardstick_words"] = {r["machine_type"]: yardstick_words(r) for r in type_rows}
    out["stability"] = {r["machine_type"]: stability_words(r) or settle_words(r) for r in type_rows}
    out["evidence_words"] = {
        r["machine_type"]: evidence_words(
            r, context["id_rows"], context["localization"][r["machine_type"]]
        )
        for r in type_rows
    }
    return out


def build_context(
    params: dict[str, Any], params_path: str | Path, build_dir: Path, figures_dir: Path, engine: str
) -> dict[str, Any]:
    """The template's context: data, results, provenance, and the first page's findings."""
    geometry = MelGeometry.from_params(params)
    params = shareable_params(params)
    context = {
        **data_context(params, build_dir),
        **results_context(build_dir, figures_dir, geometry),
        **provenance_context(params, params_path, build_dir, engine),
        **methods_context(params, geometry),
    }
    context["descriptions"] = {
        t: type_description(
            t, context["localization"][t], geometry.seconds_per_frame, geometry.target_T
        )
        for t in context["machine_types"]
    }
    context["training"] = {  # page 1's verdict with the training check (closeness without)
        r["machine_type"]: training_line(r, context["downstream"]) for r in context["type_rows"]
    }
    context["findings"] = findings(context)
    context["recovery"] = recovery_context(
        context["machine_types"], build_dir, context["rows"], geometry
    )
    synthetic_words = context["any_synthetic"]
    context["anomalies"] = "anomalies in the test clips" if synthetic_words else "real anomalies"
    context["anomaly_clips"] = "anomalous test clips" if synthetic_words else "real anomalous clips"
    context.update(verdict_context(context, params, build_dir, geometry))
    return context


def report(
    params: dict[str, Any],
    params_path: str | Path = "params.yaml",
    build_dir: str | Path = "build",
    report_dir: str | Path = REPORT_DIR,
) -> list[Path]:
    """Write ``report/report.qmd`` and render it into ``report/_output/``.

    Parameters
    ----------
    params
        Validated params; reads ``report.*`` (and shows all params in the provenance).
    """
    report_dir = Path(report_dir)
    engine = choose_engine(params["report"]["engine"])
    context = build_context(params, params_path, Path(build_dir), report_dir / "figures", engine)
    qmd = report_dir / "report.qmd"
    write_text(qmd, render_qmd(context, report_dir))
    out_dir = report_dir / "_output"
    out_dir.mkdir(parents=True, exist_ok=True)
    epoch = UNDATED_EPOCH if context["epoch"] is None else context["epoch"]
    try:
        if engine == "quarto":
            made = render_with_quarto(qmd, out_dir, params["report"]["formats"], timestamp=epoch)
        else:
            made = render_with_pandoc(qmd, out_dir, params["report"]["formats"], timestamp=epoch)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(
            f"rendering failed: {' '.join(map(str, err.cmd[:3]))}...\n{err.stderr or ''}"
        ) from None
    log(f"report: {', '.join(str(p) for p in made)} ({engine})")
    return made
