"""The report's words: sentences, fitted settings in words, table cells, the data banner.

Pure functions of the stage outputs (dicts as the artifacts readers return them),
so tests can check what the reader is told without rendering anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from analysis.dcase import unit_label
from analysis.fit import FIT_KEYS
from analysis.mel import MelGeometry
from analysis.render import minus
from analysis.scoring import MIN_HOLDOUT_FOR_CI


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, plural where ``n`` is not 1: "1 ID", "3 IDs", "0 held-out regions"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def status_reason(status: str) -> str:
    """Why an ID was not localized, as a clause: "0 normal test clips, needs at least 4"."""
    reason = status.removeprefix("not enough evidence: ")
    return re.sub(r" \((needs [^()]*)\)$", r", \1", reason)


def _span(lo: Any, hi: Any) -> str:
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _range(span: list[float] | None, fmt: str, unit: str = "") -> str:
    if not span:
        return "–"
    lo, hi = (format(v, fmt) for v in span)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def describe_drawn(drawn: dict[str, Any]) -> str:
    """A fitted setting in words, by the masks it draws (Hz and seconds; 10th–90th
    percentiles): what a researcher would see in a batch of its masks."""
    bands = drawn["bands_per_mask"] or [1, 1]
    band_count = _span(*bands)
    plural = "" if bands[1] == 1 else "s"
    band = (
        f"{band_count} band{plural} of {_range(drawn['band_rows'], '.0f')} mel bins "
        f"({_range([v / 1000 for v in drawn['band_width_hz']], '.2g', ' kHz')} wide) centred at "
        f"{_range([v / 1000 for v in drawn['band_centre_hz']], '.2g', ' kHz')}"
    )
    full = drawn["full_clip_share"]
    cover = _range([100 * v for v in drawn["full_clip_coverage"] or []], ".0f", " %")
    count = _range(drawn["segments_per_mask"], ".0f")
    segments = (
        f"{count} segment{'' if count == '1' else 's'} of "
        f"{_range(drawn['segment_seconds'], '.2g', ' s')}"
    )
    if full >= 0.995:
        time = f"one segment over {cover} of the clip in every mask"
    elif full > 0.005:
        time = f"one segment over {cover} of the clip in {full:.0%} of masks, else {segments}"
    else:
        time = segments
    return f"{band}; {time}"


def describe_fit(row: dict[str, Any], T: int) -> str:
    """A fitted row in words, by the masks it draws (:func:`describe_drawn`); a mixture says
    so and names its IDs' weights. ``T`` (frames per clip) is kept for callers' symmetry."""
    words = describe_drawn(row["drawn"])
    if row.get("form") == "mixture":
        return f"mixture of {len(row['mixture'])} IDs' settings: {words}"
    return words


def _call(cls: str, args: list[str], width: int = 88) -> str:
    """``strategy = cls(...)`` with the arguments packed into lines of at most ``width``
    characters (a short, valid call to paste)."""
    lines, line = [], ""
    for arg in args:
        piece = f"{arg},"
        if line and len(line) + 1 + len(piece) > width - 4:
            lines.append(line)
            line = piece
        else:
            line = f"{line} {piece}" if line else piece
    lines.append(line)
    body = "".join(f"    {x}\n" for x in lines)
    return f"from analysis.strategies import {cls}\n\nstrategy = {cls}(\n{body})"


def strategy_call(row: dict[str, Any], geometry: MelGeometry, q_factor: int | None = None) -> str:
    """A ready-to-paste constructor call with the fitted values, in the training code's convention.

    ``q_factor`` None gives spectrogram-size masks (``q_shape=None``), which the
    model then projects onto its latent grids itself.
    """
    n_mels, T = geometry.spectrogram_shape
    if q_factor is None:
        q_text = "None"
    else:
        q = geometry.q_shape(q_factor)
        q_text = f"({q[0]}, {q[1]})"
    args = [f"({n_mels}, {T})", q_text, str(n_mels), str(T)]
    args += [f"{k}={row[k]!r}" for k in FIT_KEYS]
    return _call("AudioSpecificStrategy", args)


def training_code_call(row: dict[str, Any], geometry: MelGeometry) -> tuple[str, list[str]]:
    """The fitted setting as the training code's own constructor arguments, as far as its
    family reaches, and what of the fit it cannot express.

    The training strategy draws 1..int(n_mels * max_band_frac) rows anywhere on the mel axis,
    one band, and either one segment over 85-100 % of the clip (``full_time_prob``) or
    2..max_segments segments of T // 10..T // 3 frames.
    """
    n_mels, T = geometry.spectrogram_shape
    args = [
        f"({n_mels}, {T})",
        "None",
        str(n_mels),
        str(T),
        "perlin_prob=0.0",
        f"full_time_prob={row['full_time_prob']!r}",
        f"max_band_frac={row['max_band_fraction']!r}",
        f"max_segments={max(2, int(row['max_segments']))}",
    ]
    lost = []
    if round(row["min_band_fraction"] * n_mels) > 1:
        lost.append(f"the minimum band width ({row['min_band_fraction']:.0%} of the mel bins)")
    if row["min_band_position"] > 0 or row["max_band_position"] < 1:
        lost.append(
            f"the band position ({row['min_band_position']:.0%}–{row['max_band_position']:.0%} "
            "of the mel axis)"
        )
    if row["full_time_prob"] > 0 and (
        row.get("min_full_coverage", 0.85) != 0.85 or row.get("max_full_coverage", 1.0) != 1.0
    ):
        lost.append(
            f"the full-clip coverage ({row['min_full_coverage']:.0%}–{row['max_full_coverage']:.0%}"
            " of the clip; the training code draws 85–100 %)"
        )
    if row.get("form") == "mixture":
        lost.append("the mixture of its IDs' settings (these arguments are the single fit's)")
    if row["max_bands"] > 1:
        lost.append(f"several bands at once ({_span(row['min_bands'], row['max_bands'])})")
    if row["full_time_prob"] < 1 and (
        row["min_seg_len"] < T // 10 or row["max_seg_len"] > T // 3 or row["min_segments"] != 2
    ):
        lost.append(
            f"the segments ({_span(row['min_segments'], row['max_segments'])} of "
            f"{_span(row['min_seg_len'], row['max_seg_len'])} frames; the training code draws "
            f"2..max_segments of {T // 10}–{T // 3})"
        )
    return _call("TrainingAudioStrategy", args), lost


def shareable_path(path: str, root: Path | None = None) -> str:
    """A folder as the shared report may print it: relative to the project when inside it,
    else only its last part (no user's absolute paths in a PDF that is mailed around)."""
    root = (root or Path.cwd()).resolve()
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix() or "."
    return f"…/{resolved.name}"


def hz_words(band_hz: list[float] | None) -> str:
    """Where a band lies, from its lower to its upper edge: "1.1–1.3 kHz", "820 Hz" where
    both round alike (empty when unknown). Never a range of band centres."""
    if not band_hz:
        return ""

    def one(f: float) -> str:
        return f"{f / 1000:.1f} kHz" if f >= 1000 else f"{f:.0f} Hz"

    lo, hi = one(band_hz[0]), one(band_hz[1])
    if lo == hi:
        return lo
    for unit in (" kHz", " Hz"):
        if lo.endswith(unit) and hi.endswith(unit):
            return f"{lo.removesuffix(unit)}–{hi}"
    return f"{lo}–{hi}"


def shape_words(features: dict[str, float | None], seconds_per_frame: float, T: int) -> str:
    """What a set of regions looks like, from their median features: band width, several lines,
    and time structure (over the whole clip, or N segments of about S s)."""
    band = features.get("band_fraction") or 0.0
    bands = features.get("n_bands") or 1.0
    coverage = features.get("time_coverage") or 0.0
    segments = features.get("n_segments") or 1.0
    width = "narrow band" if band <= 0.12 else "broad band"
    lines = " (several lines)" if bands >= 2 else ""
    if coverage >= 0.8 and segments <= 2:
        time = "over the whole clip"
    else:
        length_s = (features.get("mean_seg_len_frames") or 0.0) * seconds_per_frame
        n = max(1, round(segments))
        time = f"in {n} segment{'s' if n != 1 else ''} of about {length_s:.1f} s"
    return f"{width}{lines} {time}"


def id_description(summary: dict[str, Any], seconds_per_frame: float, T: int) -> tuple[str, str]:
    """One machine ID's evidence in words: ``(shape, where)``; shape "" when nothing was found.

    The clip level speaks where regions stand out in at least half of the ID's anomalous
    clips; else the ID-level (pooled) region where the pooled test found one; else nothing.
    """
    if summary.get("status") != "ok":
        return "", ""
    clip = summary.get("clip_features_median")
    if clip and summary["n_regions_found"] >= 0.5 * summary["n_anomaly"]:
        return shape_words(clip, seconds_per_frame, T), hz_words(summary.get("clip_band_hz"))
    pooled = (summary.get("id_level") or {}).get("all") or {}
    if pooled.get("found") and pooled.get("features"):
        where = hz_words(summary.get("pooled_band_hz"))
        return shape_words(pooled["features"], seconds_per_frame, T) + " (pooled over clips)", where
    return "", ""


def type_description(
    machine_type: str, loc: dict[str, Any], seconds_per_frame: float, T: int
) -> str:
    """A machine type's evidence, built from its IDs' descriptions (never a median over IDs):
    "fan: 2 of 4 IDs: narrow band over the whole clip (id_00 at 1.1–1.2 kHz, id_02 at 1.3 kHz);
    nothing found in id_04; id_06 not localized (0 normal test clips, needs at least 4)".
    An ID that could not be localized is never "nothing found": its own reason is given."""
    ids = loc["ids"]
    if not ids:
        return f"{machine_type}: no machine ID with labelled test clips, so nothing to localize."
    if not any(s.get("n_anomaly") for s in ids.values()):
        return f"{machine_type}: no labelled anomalous test clips, so nothing to localize."
    groups: dict[str, list[str]] = {}
    nothing, not_localized = [], []
    for mid, summary in ids.items():
        if summary.get("status", "ok") != "ok":
            not_localized.append(
                f"{unit_label(mid)} not localized ({status_reason(summary['status'])})"
            )
            continue
        shape, where = id_description(summary, seconds_per_frame, T)
        if shape:
            label = unit_label(mid)
            groups.setdefault(shape, []).append(f"{label} at {where}" if where else label)
        else:
            nothing.append(unit_label(mid))
    noun = "IDs" if all(unit_label(m) == m for m in ids) else "sections (domains)"
    parts = [
        f"{len(members)} of {len(ids)} {noun}: {shape} ({', '.join(members)})"
        if len(ids) > 1
        else f"{shape} ({', '.join(members)})"
        for shape, members in groups.items()
    ]
    if nothing:
        parts.append(f"nothing found in {', '.join(nothing)}")
    return f"{machine_type}: " + "; ".join(parts + not_localized) + "."


def comparison_sentence(row: dict[str, Any], T: int) -> str:
    """What one row's paired interval supports, in words (evidence and held-out count included);
    ``T`` is the clip length in frames."""
    t, best, n = row["machine_type"], row["best_preset"], row["n_independent_holdout"]
    regions = f"{n} independent held-out region{'s' if n != 1 else ''}"
    head = f"{t} ({row['evidence']} evidence, {regions}): {row['verdict']}; "
    if not row.get("intervals"):
        return (
            head + f"too few for an interval (fewer than {MIN_HOLDOUT_FOR_CI}); the fitted "
            f"setting and '{best}' are not distinguishable."
        )
    diff = minus(
        f"{row['diff_fitted_vs_best']:+.3f} [{row['diff_fitted_vs_best_ci_low']:+.3f}, "
        f"{row['diff_fitted_vs_best_ci_high']:+.3f}]"
    )
    verdict = row["diff_fitted_vs_best_verdict"]
    if verdict == "closer":
        claim = f"the fitted setting ({describe_fit(row, T)}) is closer than '{best}', the closest preset"
    elif verdict == "farther":
        claim = f"'{best}', the closest preset, is closer than the fitted setting"
    else:
        claim = f"the fitted setting and '{best}', the closest preset, are not distinguishable with {plural(n, 'held-out region')}"
    floor = f"{row['score_floor']:.3g}"
    return (
        head + f"{claim} (score difference fitted − {best} {diff}; the floor is "
        f"{floor}, '{best}' scores {row[f'score_{best}']:.3g})."
    )


def negative_control_words(loc: dict[str, Any]) -> str:
    """What the negative control (normal clips posing as anomalous) found across a type's IDs."""
    tested, flagged = 0, []
    for mid, summary in loc["ids"].items():
        control = (summary.get("id_level") or {}).get("negative_control")
        if control is None:
            continue
        tested += 1
        if control.get("found"):
            flagged.append(mid)
    if not tested:
        if not loc["ids"]:
            return "negative control not run (no labelled test clips)"
        localized = any(s.get("status", "ok") == "ok" for s in loc["ids"].values())
        return f"negative control not run ({'too few normal clips' if localized else 'no ID localized'})"
    if not flagged:
        return f"control clean in {tested}/{plural(tested, 'ID')}"
    return (
        f"control found a region in {', '.join(flagged)} (left out of every fit), clean in "
        f"{tested - len(flagged)}/{tested}"
    )


def evidence_words(
    type_row: dict[str, Any], id_rows: list[dict[str, Any]], loc: dict[str, Any]
) -> str:
    """A type's evidence in one cell: which localization found its IDs' regions, and the
    negative control ("clip level in 3 IDs, ID level in 1; negative control clean in 4 of 4 IDs")."""
    mine = [r for r in id_rows if r["machine_type"] == type_row["machine_type"]]
    used = [r["evidence"] for r in mine if r.get("status") == "ok"]
    counts = {level: used.count(level) for level in ("clip-level", "ID-level") if level in used}
    if counts:
        levels = ", ".join(
            f"{level.replace('-', ' ')} in {n} ID{'s' if n != 1 else ''}"
            for level, n in counts.items()
        )
    elif type_row.get("status") == "ok":  # a type-level fit from IDs without a row of their own
        levels = f"{type_row['evidence'].replace('-', ' ')} (pooled over its IDs)"
    else:
        levels = lacking_words(loc)
    return f"{levels}; {negative_control_words(loc)}"


def lacking_words(loc: dict[str, Any]) -> str:
    """Why a type without a fit has none, per its IDs: too little found in the localized
    ones, and each one not localized with its own reason."""
    ids = loc["ids"]
    if not ids:
        return "no machine ID with labelled test clips"
    localized = [mid for mid, s in ids.items() if s.get("status", "ok") == "ok"]
    parts = []
    if localized:
        n = len(localized)
        scope = "its" if n == len(ids) == 1 else ("all" if n == len(ids) else f"{n} of")
        parts.append(f"too little in {scope} {plural(len(ids) if scope != 'its' else 1, 'ID')}")
    parts += [
        f"{mid} not localized ({status_reason(s['status'])})"
        for mid, s in ids.items()
        if s.get("status", "ok") != "ok"
    ]
    return "; ".join(parts)


def lead_sentence(type_rows: list[dict[str, Any]]) -> str:
    """The sentence above the answer table when no machine type has a fit (else empty)."""
    if any(r.get("status") == "ok" for r in type_rows):
        return ""
    return (
        "Nothing to recommend in this run: no machine type has enough evidence of where its "
        "anomalies sit for a fit, so no preset can be judged against them."
    )


def findings(context: dict[str, Any]) -> list[str]:
    """The first page's summary, written from the numbers."""
    out = []
    for t in context["machine_types"]:
        out.append(context["descriptions"][t])
    ok = [r for r in context["type_rows"] if r.get("status") == "ok"]
    if ok:
        by_verdict = {
            v: [r["machine_type"] for r in ok if r["diff_fitted_vs_best_verdict"] == v]
            for v in ("closer", "farther", "not distinguishable")
        }
        words = {
            "closer": "the fitted setting is closer than the closest preset",
            "farther": "the closest preset is closer than the fitted setting",
            "not distinguishable": "the two are not distinguishable with their held-out clips",
        }
        out.append(
            f"Held-out comparison of the fitted setting with the closest preset (chosen on the "
            f"fit half; a claim only where the {context['ci_level']:.0%} paired interval of the "
            "score difference excludes 0): "
            + "; ".join(
                f"{words[v]} for {', '.join(types)}" for v, types in by_verdict.items() if types
            )
            + "."
        )
        for r in ok:
            out.append(comparison_sentence(r, context["T"]))
    lacking = [r["machine_type"] for r in context["type_rows"] if r.get("status") != "ok"]
    if lacking:
        out.append(
            f"Not enough evidence for a fit: {', '.join(lacking)} (the reason per machine ID is "
            "in the recommendations per machine ID)."
        )
    worst = max(context["fidelity"], key=lambda r: float(r["vanished_share"]), default=None)
    if worst and float(worst["vanished_share"]) > 0:
        out.append(
            f"Resizing: up to {float(worst['vanished_share']):.1%} of '{worst['preset']}' masks vanish on the "
            f"{worst['grid']} grid with {worst['method']} resize; the any-cell projection never loses a masked cell."
        )
    return out


def data_found(sources: dict[str, dict[str, Any]]) -> str:
    """What the extract stage found under the data root, in one line (for the data banner)."""
    ids = sum(len(s["per_id"]) for s in sources.values())
    kinds = {unit_label(m) != m for s in sources.values() for m in s["per_id"]}
    noun = {frozenset({True}): "section-domain unit", frozenset({True, False}): "unit"}.get(
        frozenset(kinds), "machine ID"
    )
    normal = sum(c["test_normal"] for s in sources.values() for c in s["per_id"].values())
    anomaly = sum(c["test_anomaly"] for s in sources.values() for c in s["per_id"].values())
    train = sum(s["n_train_used"] for s in sources.values())
    skipped = sum(s["n_skipped"] for s in sources.values())
    return (
        f"{len(sources)} machine type{'s' if len(sources) != 1 else ''} "
        f"({', '.join(sources)}), {ids} {noun}{'s' if ids != 1 else ''}, {train} train clips, "
        f"{normal} normal and {anomaly} anomalous test clips used"
        + (f", {skipped} file{'s' if skipped != 1 else ''} skipped" if skipped else "")
    )
