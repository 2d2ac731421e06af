"""The report's words: sentences, fitted settings in words, table cells, the data banner.

Pure functions of the stage outputs (dicts as the artifacts readers return them),
so tests can check what the reader is told without rendering anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from analysis.artifacts import FITTED, Verdict, is_ok, row_verdict
from analysis.dcase import unit_label, unit_words
from analysis.fit import FIT_KEYS
from analysis.mel import MelGeometry
from analysis.records import MaskSetting, lacking_reason
from analysis.render import minus
from analysis.scoring import MIN_HOLDOUT_FOR_CI


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, plural where ``n`` is not 1: "1 ID", "3 IDs", "0 held-out regions"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def status_reason(status: str) -> str:
    """Why an ID was not localized, as a clause: "0 normal test clips, needs at least 4"."""
    reason = lacking_reason(status)
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


# A class per preset kind (``kind: python`` presets go through build_strategy).
KIND_CLASSES = {
    "audio_specific": "AudioSpecificStrategy",
    "training_audio": "TrainingAudioStrategy",
    "dsr_perlin": "TrainingPerlinStrategy",
    "perlin": "PerlinStrategy",
}
NOT_SWITCHING = "every type whose verdict is not switch"  # the shared block's heading
REBUILD_SEED = 0  # the seed the printed code passes (None: the process's RNGs, as training does)


def _literal(value: Any) -> str:
    """A Python literal that reads back to ``value`` exactly (floats by repr)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def rebuild_code(
    machine_type: str, name: str, setting: MaskSetting, verdict_words: str, geometry: MelGeometry
) -> str:
    """Code that builds exactly the strategy a type's verdict recommends (``name`` and
    ``setting`` as :func:`analysis.artifacts.recommended_settings` gives them): the fitted
    setting, every component of a mixture with its weight, or a preset. One argument per line,
    every line inside the call's brackets, so it runs from the PDF's text too (which loses
    indentation)."""
    n_mels, T = geometry.spectrogram_shape
    head = [f"# {machine_type}: {verdict_words} ({name})"]
    shape = [f"({n_mels}, {T})", "None", str(n_mels), str(T)]
    kind, options = setting.kind, setting.options
    if kind == "mixture":  # (indent level, line) pairs, arguments packed into short lines
        cls, args = "MixtureStrategy", [(1, _packed(shape)), (1, "components=[")]
        for c in options["components"]:
            args += [(2, f"{{'weight': {c['weight']!r}, 'fitted': {{  # {c['machine_id']}")]
            args += [(3, line) for line in _packed_lines(c["fitted"], ": ", 88 - 12)]
            args += [(2, "}},")]
        args.append((1, "],"))
    else:
        if kind in KIND_CLASSES:
            cls, items = (
                KIND_CLASSES[kind],
                shape + [f"{k}={_literal(v)}" for k, v in options.items()],
            )
        else:
            cls, items = (
                "build_strategy",
                [_literal(setting.to_json()), f"({n_mels}, {T})", "None"],
            )
        args = [(1, line) for line in _pack([*items, f"seed={REBUILD_SEED}"], 88 - 4)]
    if kind == "mixture":
        args.append((1, f"seed={REBUILD_SEED},"))
    lines = [*head, f"from analysis.strategies import {cls}", "", f"strategy = {cls}("]
    return "\n".join(lines + ["    " * level + text for level, text in args] + [")"])


def _pack(pieces: list[str], width: int) -> list[str]:
    """``pieces`` joined with ", " into lines of at most ``width`` characters, each ending in a
    comma (inside brackets, so the line breaks do not matter to Python)."""
    lines, line = [], ""
    for piece in pieces:
        item = f"{piece},"
        if line and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    return [*lines, line] if line else lines


def _packed(pieces: list[str]) -> str:
    return " ".join(f"{p}," for p in pieces)


def _packed_lines(mapping: dict[str, Any], sep: str, width: int) -> list[str]:
    return _pack([f"{k!r}{sep}{_literal(v)}" for k, v in mapping.items()], width)


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
        lost.append("the mixture's components (these arguments are the single fit's)")
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
        return f"{machine_type}: no machine ID or section with labelled test clips, so nothing to localize."
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
    noun = unit_words(ids).shorts
    parts = [
        f"{len(members)} of {len(ids)} {noun}: {shape} ({', '.join(members)})"
        if len(ids) > 1
        else f"{shape} ({', '.join(members)})"
        for shape, members in groups.items()
    ]
    if nothing:
        parts.append(f"nothing found in {', '.join(nothing)}")
    return f"{machine_type}: " + "; ".join(parts + not_localized) + "."


def verdict_label(row: dict[str, Any]) -> str:
    """A row's verdict in three words: "switch to fitted", "keep current", "not enough evidence"."""
    v = row_verdict(row)
    if v.kind is Verdict.SWITCH:
        return f"switch to {v.candidate}"
    if v.kind is Verdict.KEEP:
        return f"keep {v.user_setting}"
    return "not enough evidence"


def difference_words(row: dict[str, Any]) -> str:
    """The tested difference and its corrected interval ("fitted − current −0.178 [−0.346,
    −0.083], 97.5 % interval"), or why no test ran."""
    v = row_verdict(row)
    if v.ci_low is None:
        n = v.n_independent_holdout
        return (
            f"no test: {n} independent held-out region{'s' if n != 1 else ''} (a test needs "
            f"{MIN_HOLDOUT_FOR_CI})"
        )
    return minus(
        f"{v.candidate} − {v.user_setting} {v.difference:+.3f} [{v.ci_low:+.3f}, "
        f"{v.ci_high:+.3f}], {v.corrected_level:.1%} interval"
    )


def stability_words(row: dict[str, Any]) -> str:
    """ "switch to fitted in 9 of 10 splits" (empty where the verdict is "not enough evidence":
    its reason says how the splits went)."""
    v = row_verdict(row)
    if v.kind is Verdict.NOT_ENOUGH_EVIDENCE or v.stability_share is None:
        return ""
    n_same = round(v.stability_share * v.n_splits)
    return f"{verdict_label(row)} in {n_same} of {v.n_splits} split{'s' if v.n_splits != 1 else ''}"


def yardstick_words(row: dict[str, Any]) -> str:
    """The classifier two-sample AUC of the user's setting and of the tested candidate against
    the held-out regions ("current 0.97 [0.93, 1.00]; fitted 0.62 [0.48, 0.75]"), or "–"."""
    v, sticks = row_verdict(row), row.get("yardstick") or {}
    parts = []
    for name in dict.fromkeys([v.user_setting, v.candidate]):
        stick = sticks.get(name)
        if stick:
            parts.append(
                f"{name} {stick['auc']:.2f} [{stick['ci_low']:.2f}, {stick['ci_high']:.2f}]"
            )
    return "; ".join(parts) or "–"


def settle_words(row: dict[str, Any]) -> str:
    """What would settle a "not enough evidence" verdict (empty for the others)."""
    v = row_verdict(row)
    if v.kind is not Verdict.NOT_ENOUGH_EVIDENCE:
        return ""
    if v.clips_needed is None:
        return "more clips may not help"
    return f"about {v.clips_needed} more clips"


def comparison_sentence(row: dict[str, Any], T: int) -> str:
    """What one row's verdict rests on, in words (evidence, held-out count, the tested
    difference with its corrected interval, stability); ``T`` is the clip length in frames."""
    v = row_verdict(row)
    n = v.n_independent_holdout
    regions = plural(n, "independent held-out region")
    head = f"{row['machine_type']} ({row['evidence']} evidence, {regions}): "
    head += f"{verdict_label(row)}"
    if v.candidate == FITTED and is_ok(row):
        tested = f"the fitted setting ({describe_fit(row, T)})"
    else:
        tested = f"'{v.candidate}'"
    if v.kind is Verdict.SWITCH:
        claim = f"{tested} is closer than '{v.user_setting}', the setting you run"
    elif v.kind is Verdict.KEEP:
        claim = (
            f"no candidate is distinguishably closer than '{v.user_setting}', the setting you run "
            f"(tested: {tested}, the closest on the fit half)"
        )
    else:  # without a test, the difference words say why; else the reason (a flip) does
        claim = v.reason if v.ci_low is not None else ""
    parts = [claim, difference_words(row), stability_words(row), settle_words(row)]
    return minus(head + "; " + "; ".join(p for p in parts if p) + ".")


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
        words = unit_words(loc["ids"])
        why = "too few normal clips" if localized else f"no {words.short} localized"
        return f"negative control not run ({why})"
    if not flagged:
        return f"control clean in {tested}/{unit_words(loc['ids']).count(tested)}"
    return (
        f"control found a region in {', '.join(map(unit_label, flagged))} (left out of every "
        "fit), clean in "
        f"{tested - len(flagged)}/{tested}"
    )


def evidence_words(
    type_row: dict[str, Any], id_rows: list[dict[str, Any]], loc: dict[str, Any]
) -> str:
    """A type's evidence in one cell: which localization found its IDs' regions, and the
    negative control ("clip level in 3 IDs, ID level in 1; negative control clean in 4 of 4 IDs")."""
    mine = [r for r in id_rows if r["machine_type"] == type_row["machine_type"]]
    used = [r["evidence"] for r in mine if is_ok(r)]
    words = unit_words(loc["ids"])
    counts = {level: used.count(level) for level in ("clip-level", "ID-level") if level in used}
    if counts:
        levels = ", ".join(f"{words.evidence(lv)} in {words.count(n)}" for lv, n in counts.items())
    elif is_ok(type_row):  # a type-level fit from IDs without a row of their own
        levels = f"{words.evidence(type_row['evidence'])} (pooled over its {words.shorts})"
    else:
        levels = lacking_words(loc)
    return f"{levels}; {negative_control_words(loc)}"


def lacking_words(loc: dict[str, Any]) -> str:
    """Why a type without a fit has none, per its IDs: too little found in the localized
    ones, and each one not localized with its own reason."""
    ids = loc["ids"]
    if not ids:
        return "no machine ID or section with labelled test clips"
    localized = [mid for mid, s in ids.items() if s.get("status", "ok") == "ok"]
    parts = []
    if localized:
        n = len(localized)
        scope = "its" if n == len(ids) == 1 else ("all" if n == len(ids) else f"{n} of")
        parts.append(
            f"too little in {scope} {unit_words(ids).count(len(ids) if scope != 'its' else 1)}"
        )
    parts += [
        f"{unit_label(mid)} not localized ({status_reason(s['status'])})"
        for mid, s in ids.items()
        if s.get("status", "ok") != "ok"
    ]
    return "; ".join(parts)


def lead_sentence(type_rows: list[dict[str, Any]]) -> str:
    """The sentence above the answer table when no machine type has a fit (else empty)."""
    if any(is_ok(r) for r in type_rows):
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
        by_verdict: dict[str, list[str]] = {}
        training = context.get("training", {})
        for r in ok:
            label = verdict_label(r)
            line = training.get(r["machine_type"])
            if line and line["changed"]:  # the training check overrode closeness
                label = f"{line['verdict']} (closeness alone: {label})"
            by_verdict.setdefault(label, []).append(r["machine_type"])
        out.append(
            "Against the setting you run (recommend.user_setting, Holm-corrected over the "
            "machine types tested, stable in at least "
            f"{context['stable_share']:.0%} of {context['n_splits']} splits): "
            + "; ".join(f"{v} for {', '.join(types)}" for v, types in by_verdict.items())
            + "."
        )
        # Where a verdict flips between splits, the reason belongs beside it; the rest is in
        # the table above.
        for r in ok:
            v = row_verdict(r)
            if v.kind is Verdict.NOT_ENOUGH_EVIDENCE and v.ci_low is not None:
                out.append(comparison_sentence(r, context["T"]))
    lacking = [r["machine_type"] for r in context["type_rows"] if r.get("status") != "ok"]
    if lacking:
        words = unit_words(
            unit for t in context["machine_types"] for unit in context["localization"][t]["ids"]
        )
        out.append(
            f"Not enough evidence for a fit: {', '.join(lacking)} (the reason per "
            f"{words.one} is in the recommendations per {words.one})."
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
