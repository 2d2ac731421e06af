"""The code the report prints per machine type builds exactly what the verdict recommends: taken
out of the rendered HTML and out of the PDF's text, run, and drawn with a fixed seed, it gives
the same masks as the strategy the pipeline builds from build/recommendations.json, for a
fitted setting, a mixture of per-ID fits and a "keep" verdict.

One tiny ``dvc repro``; the three cases are then planted in its recommendations.json (the
verdict and form of one machine type) and only the report is rendered again for each.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.artifacts import Verdict, VerdictRecord, recommended_settings
from analysis.report_text import NOT_SWITCHING
from analysis.strategies import MachineSpecificStrategy, build_strategy
from tests.test_pipeline import make_project, repro, sh

pytestmark = pytest.mark.slow

SHAPE = (128, 320)
N_DRAWS = 64


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    work = make_project(tmp_path_factory.mktemp("paste"))
    repro(work)
    return work


def html_code_blocks(html: str) -> list[str]:
    """The text of every code block of the HTML (highlighting spans removed)."""
    blocks = re.findall(r"<pre[^>]*>(.*?)</pre>", html, flags=re.S)
    return [html_lib.unescape(re.sub(r"<[^>]+>", "", b)) for b in blocks]


def pdf_text(pdf: Path) -> str:
    """The PDF's text with every page's running header and page number taken out, so a code
    block that crosses a page break reads as one."""
    import pdfplumber

    lines = []
    with pdfplumber.open(pdf) as doc:
        for page in doc.pages:
            page_lines = page.extract_text().splitlines()[1:]  # the running header
            if page_lines and page_lines[-1].strip().isdigit():
                page_lines = page_lines[:-1]
            lines += page_lines
    return "\n".join(lines)


def code_after(text: str, heading: str) -> str:
    """From the line starting with ``heading`` to the ``)`` that closes ``strategy = ...(``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == ")")
    return "\n".join(lines[start : end + 1])


def drawn(code: str) -> np.ndarray:
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the report's own code, the point of the test
    return namespace["strategy"].full_size(N_DRAWS)


def plant(work: Path, machine_type: str, case: str) -> dict:
    """Set one type's verdict (and form) in recommendations.json; re-render the report."""
    path = work / "build/recommendations.json"
    recs = json.loads(path.read_text())
    row = next(
        r for r in recs["rows"] if r["machine_type"] == machine_type and r["machine_id"] == "all"
    )
    assert row["status"] == "ok", row["status"]
    kind = Verdict.KEEP if case == "keep" else Verdict.SWITCH
    row["verdict"] = VerdictRecord(
        kind, "fitted", "current", -0.2, -0.3, -0.1, 0.9, 1.0, 5, 8, "planted"
    ).to_json()
    row["form"] = "mixture" if case == "mixture" else "single"
    if case == "mixture":
        other = {**row["fitted"], "full_time_prob": 1.0}
        other.update(min_band_position=0.0, max_band_position=0.3)
        row["mixture"] = [
            {"machine_id": "id_00", "weight": 0.3333, "fitted": row["fitted"]},
            {"machine_id": "id_02", "weight": 0.6667, "fitted": other},
        ]
    path.write_text(json.dumps(recs))
    sh(work, sys.executable, "-m", "analysis", "report")
    return recs


@pytest.mark.parametrize("case", ["fitted", "mixture", "keep"])
def test_the_printed_code_rebuilds_the_recommended_strategy(tiny_run, case):
    t = "valve"
    recs = plant(tiny_run, t, case)
    name, setting = recommended_settings(recs)[t]
    assert name == {"fitted": "fitted", "mixture": "mixture", "keep": "current"}[case]
    pipeline = build_strategy(setting.to_json(), SHAPE, None, "any_cell", seed=0).full_size(N_DRAWS)
    machine = MachineSpecificStrategy(
        SHAPE, None, recommendations=tiny_run / "build/recommendations.json"
    )
    assert machine.choices[t] == name
    heading = f"# {t}: switch to fitted" if case != "keep" else f"# {NOT_SWITCHING}:"
    out = tiny_run / "report/_output"
    html = (out / "report.html").read_text()
    from_html = code_after(next(b for b in html_code_blocks(html) if heading in b), heading)
    pdf = pdf_text(out / "report.pdf")
    codes = [from_html]
    if case == "keep":
        codes.append(code_after(pdf, heading))
    else:  # a switching type's listing is in the HTML only (the PDF keeps its page budget
        # however many types switch); the PDF names the type and says where its code is
        assert heading not in pdf
        flat = " ".join(pdf.split())
        named = re.search(r"should switch \(([^)]*)\)", flat)
        assert named and t in named[1].split(", ") and "in the HTML report" in flat
    for code in codes:
        assert np.array_equal(drawn(code), pipeline), code
    if case == "mixture":  # every component with its weight is in the code
        assert "'weight': 0.3333" in from_html and "'weight': 0.6667" in from_html
