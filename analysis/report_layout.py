"""The report's words for the data layouts: which layout each type was read in, how its
units were calibrated (source and target domains), and which attribute values the found
regions fall in. Pure functions on the stage outputs' dicts; :func:`analysis.dcase.unit_label`
names the units.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from analysis.dcase import ID_WORDS, SECTION_LAYOUT, SECTION_WORDS, UnitWords, unit_label

LAYOUT_NAMES = {
    "dcase2020": "DCASE 2020 Task 2 file layout: machine IDs",
    SECTION_LAYOUT: "DCASE 2021+ Task 2 file layout: sections with source and target domains",
}


def layout_words(sources: dict[str, dict[str, Any]]) -> str:
    """The layout(s) the data were read in, and whether ``auto`` chose them from the names."""
    by_layout: dict[str, list[str]] = {}
    for machine_type, source in sources.items():
        by_layout.setdefault(source.get("layout", "dcase2020"), []).append(machine_type)
    detected = any(s.get("layout_param", "auto") == "auto" for s in sources.values())
    how = "detected from the clip names" if detected else "as data.layout sets"
    if len(by_layout) == 1:
        return f"{LAYOUT_NAMES[next(iter(by_layout))]} ({how})"
    return (
        "; ".join(
            f"{LAYOUT_NAMES[layout]} for {', '.join(types)}" for layout, types in by_layout.items()
        )
        + f" ({how})"
    )


def is_section_layout(sources: dict[str, dict[str, Any]]) -> bool:
    return any(s.get("layout") == SECTION_LAYOUT for s in sources.values())


def layout_unit_words(sources: dict[str, dict[str, Any]]) -> UnitWords:
    """What the report calls its unit of analysis, for the run's layout."""
    return SECTION_WORDS if is_section_layout(sources) else ID_WORDS


def calibration_sentences(loc: dict[str, Any]) -> list[str]:
    """How a section-layout type's units were calibrated, in words (nothing for 2020 IDs):
    each domain on its own normal clips where it has enough, else what is used instead."""
    record = loc.get("calibration_by_domain") or {}
    out = []
    for domain in ("source", "target"):
        entry = record.get(domain)
        if entry is None:
            continue
        if entry["own"]:
            out.append(
                f"The {domain} domain's clip-level threshold is calibrated on its own "
                f"{entry['n_normal']} normal test clips."
            )
        else:
            out.append(
                f"The target domain has {entry['n_normal']} normal test clips in all, too few "
                f"for its own threshold at this false-region rate (it needs "
                f"{entry['n_needed']}): it uses the source domain's threshold, and its "
                "false-region rate is measured on its own normal clips at that threshold."
            )
    for key, summary in loc.get("ids", {}).items():
        reference = summary.get("reference")
        if reference:
            out.append(
                f"{unit_label(key)} has only {reference['n_own_normal']} normal test clips, "
                "too few for a reference of its own: its anomalous "
                f"clips are compared with {unit_label(reference['unit'])}'s "
                f"{reference['n_reference_normal']} normal clips and its own, and it uses the "
                "source domain's threshold."
            )
    return out


def attribute_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attribute value (``key=value``): anomalous clips and those with a clip-level region,
    sorted by attribute; empty when no clip has attributes."""
    clips: Counter = Counter()
    found: Counter = Counter()
    for row in rows:
        for pair in filter(None, (p.strip() for p in str(row.get("attributes", "")).split(";"))):
            clips[pair] += 1
            found[pair] += bool(row.get("found"))
    return [
        {"attribute": pair, "n_anomaly": clips[pair], "n_found": found[pair]}
        for pair in sorted(clips)
    ]
