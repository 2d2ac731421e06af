"""Truth beside the fit (issue 31, item 6): where the data carry ground truth, each type's section
shows per ID the injected band, durations and segment count beside the regions found and the
fitted setting's masks, in the same units; without ground truth there is no table and no word
of it. Expected numbers are computed here from the planted values (mel edges from librosa)."""

from __future__ import annotations

import re
from pathlib import Path

import librosa
import numpy as np

from analysis.artifacts import LocalizationArrays, write_localization
from analysis.dcase import GROUND_TRUTH_COLUMNS, ID_WORDS
from analysis.io import write_csv
from analysis.mel import MelGeometry
from analysis.recovery import recovery_cells
from analysis.render import render_qmd
from analysis.report import recovery_context

GEOMETRY = MelGeometry()
SECONDS_PER_FRAME = 512 / 16000
ROOT = Path(__file__).resolve().parents[1]
SEGMENTS_S = [(1.0, 1.6), (4.0, 4.8), (7.0, 7.5)]


def mel_edges_hz() -> np.ndarray:
    """(n_mels, 2) lower and upper edge of each HTK mel filter, from librosa directly."""
    points = librosa.mel_frequencies(130, fmin=0.0, fmax=8000.0, htk=True)
    return np.stack([points[:-2], points[2:]], axis=1)


def rows_for(lo_hz: float, hi_hz: float) -> np.ndarray:
    """Mel rows whose centre lies in [lo, hi] (what a found region of that band holds)."""
    centres = librosa.mel_frequencies(130, fmin=0.0, fmax=8000.0, htk=True)[1:-1]
    return np.flatnonzero((centres >= lo_hz) & (centres <= hi_hz))


def planted_build(build: Path, with_truth: bool = True) -> None:
    """fan: id_00 a 1.1-1.3 kHz band over every clip (found in 3 of 4 clips, over the 313 real
    frames); id_02 a 3.0-3.4 kHz band in three segments (found in every clip, the same
    frames). The ground truth carries a column the reader does not know (``strength``)."""
    files, regions, truth = [], [], []
    for mid, n in (("id_00", 4), ("id_02", 3)):
        for i in range(n):
            file = f"fan/test/anomaly_{mid}_{i:08d}.wav"
            region = np.zeros((128, 320), bool)
            if mid == "id_00":
                truth.append((file, "tone_added", 1100.0, 1300.0, 0.0, 10.0))
                if i < 3:
                    region[rows_for(1100, 1300), :313] = True
            else:
                rows = rows_for(3000, 3400)
                for t0, t1 in SEGMENTS_S:
                    truth.append((file, "clicks", 3000.0, 3400.0, t0, t1))
                    region[rows, round(t0 / SECONDS_PER_FRAME) : round(t1 / SECONDS_PER_FRAME)] = 1
            files.append(file)
            regions.append(region)
    rows = [
        dict(zip((*GROUND_TRUTH_COLUMNS[:6], "gain_db", "strength"), (*r, 3.0, 1.0), strict=True))
        for r in truth
    ]
    (build / "features" / "fan").mkdir(parents=True)
    write_csv(
        build / "features" / "fan" / "ground_truth.csv",
        rows if with_truth else [],
        # The unknown column sits in the middle: only a reader by column name gets the rest.
        ("file", "kind", "strength", *GROUND_TRUTH_COLUMNS[2:]),
    )
    (build / "localization").mkdir()
    region_rows = [
        {"file": f, "machine_id": re.search(r"id_\d\d", f).group(0), "found": int(r.any())}
        for f, r in zip(files, regions, strict=True)
    ]
    write_localization(
        build / "localization", "fan", LocalizationArrays(np.stack(regions), files), region_rows, {}
    )


def fitted_row(machine_id: str) -> dict:
    """A fitted row: bands within rows 40..47 (positions 40/128 to 48/128), whole clip."""
    return {
        "machine_type": "fan",
        "machine_id": machine_id,
        "status": "ok",
        "min_band_position": 40 / 128,
        "max_band_position": 48 / 128,
        "drawn": {
            "n_masks": 1024,
            "full_clip_share": 1.0,
            "band_width_hz": [151.0, 249.0],
            "bands_per_mask": [1, 1],
            "segments_per_mask": None,
            "segment_seconds": None,
        },
    }


def test_the_table_holds_the_planted_truth_the_regions_and_the_fit(tmp_path):
    planted_build(tmp_path)
    context = recovery_context(["fan"], tmp_path, [fitted_row("all")], GEOMETRY)
    by_id = {r["machine_id"]: r for r in context["fan"]}
    edges = mel_edges_hz()

    steady = by_id["id_00"]
    assert recovery_cells(steady["injected"]) == {
        "band": "1,100–1,300",
        "width": "200",
        "bands": "1",
        "segments": "whole clip",
        "length": "10.00",
    }
    rows = rows_for(1100, 1300)
    found = recovery_cells(steady["found"])
    lo, hi = edges[rows[0], 0], edges[rows[-1], 1]
    assert found["band"] == f"{round(lo, -1):,.0f}–{round(hi, -1):,.0f}"
    assert found["segments"] == "whole clip" and found["length"] == f"{313 * SECONDS_PER_FRAME:.2f}"
    assert (steady["found"]["n_clips"], steady["n_anomalous"]) == (3, 4)
    # The type's fit stands for the ID (no fit of its own): rows 40..47.
    assert steady["fit_scope"] == "type"
    fitted = recovery_cells(steady["fitted"])
    assert fitted["band"] == f"{round(edges[40, 0], -1):,.0f}–{round(edges[47, 1], -1):,.0f}"
    assert fitted["segments"] == "whole clip" and fitted["width"] == "150–250"

    segments = {k: recovery_cells(by_id["id_02"][k]) for k in ("injected", "found")}
    # Three clips of the same three segments (0.5, 0.6, 0.8 s): nine lengths whose 10th and
    # 90th percentiles are the shortest and the longest.
    assert segments["injected"]["length"] == "0.50–0.80"
    assert segments["injected"]["segments"] == "3"
    frames = [
        round(t1 / SECONDS_PER_FRAME) - round(t0 / SECONDS_PER_FRAME) for t0, t1 in SEGMENTS_S
    ]
    seconds = [min(frames) * SECONDS_PER_FRAME, max(frames) * SECONDS_PER_FRAME]
    assert segments["found"]["length"] == f"{seconds[0]:.2f}–{seconds[1]:.2f}"
    assert segments["found"]["segments"] == "3"


def truth_block() -> str:
    """The template's ground-truth block and the localization intro's sentence that refers to
    it, exactly as the report template holds them."""
    text = (ROOT / "report" / "report.qmd.j2").read_text()
    start = text.index("{% if recovery[t] is defined %}")
    end = text.index("{% endif %}", text.index("{#tbl-truth-", start)) + len("{% endif %}")
    intro = next(line for line in text.splitlines() if "{% for t in recovery %}" in line)
    return intro + "\n\n{% for t in machine_types %}\n" + text[start:end] + "\n{% endfor %}\n"


def test_the_report_says_it_and_real_data_get_no_table(tmp_path):
    planted_build(tmp_path / "build")
    template = tmp_path / "template"
    template.mkdir()
    (template / "report.qmd.j2").write_text(truth_block())
    context = recovery_context(["fan"], tmp_path / "build", [fitted_row("all")], GEOMETRY)
    text = render_qmd(
        {"machine_types": ["fan"], "recovery": context, "synthetic": True, "u": ID_WORDS}, template
    )
    assert "beside the regions found and the fitted masks: @tbl-truth-fan)" in text
    assert r"| id\_00 | 1,100–1,300 Hz; whole clip | 3 of 4: " in text
    assert "| type's fit: " in text
    assert r"| id\_02 | 3,000–3,400 Hz; 3 × 0.50–0.80 s | 3 of 3: " in text
    assert "{#tbl-truth-fan}" in text

    # Real data: a header-only ground truth; no table and nothing refers to one.
    planted_build(tmp_path / "real", with_truth=False)
    none = recovery_context(["fan"], tmp_path / "real", [fitted_row("all")], GEOMETRY)
    assert none == {}
    text = render_qmd(
        {"machine_types": ["fan"], "recovery": none, "synthetic": False, "u": ID_WORDS}, template
    )
    assert "truth" not in text and "tbl-" not in text and "|" not in text
