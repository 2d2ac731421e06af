"""The default report as a reader gets it: PDF pages (count, page 1, overlaps, running header,
reproducible bytes), figure text sizes, and the HTML in a real browser at 390 and 1400 px.

One full default ``dvc repro`` (about a minute) in a throwaway copy; the checks read its
outputs. The overlap detector is tested on a PDF made here with text set on top of text.
"""

from __future__ import annotations

import datetime
import html as html_lib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import headless_chromium, make_project, repro, sh

pytestmark = pytest.mark.slow

MAX_PAGES = 20
HEADER_PT = 45  # the running header lies in the top margin (1.9 cm = 54 pt)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    work = make_project(tmp_path_factory.mktemp("default"), tiny=False)
    repro(work)
    return work


def overlapping_text(page, min_share: float = 0.25) -> list[tuple[str, str]]:
    """Pairs of characters on one PDF page whose boxes overlap by more than ``min_share`` of
    the smaller one (text printed over text), or, on one line, by more than half the narrower
    one's width (kerned neighbours overlap a little).
    Characters, not words: text set over text merges into one garbled "word"."""
    chars = sorted((c for c in page.chars if c["text"].strip()), key=lambda c: (c["x0"], c["top"]))
    found = []
    for i, a in enumerate(chars):
        for b in chars[i + 1 :]:
            if b["x0"] >= a["x1"]:
                break
            dx = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            dy = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
            if dx <= 0 or dy <= 0:
                continue
            same_line = abs(a["top"] - b["top"]) < 0.5 and abs(a["bottom"] - b["bottom"]) < 0.5
            if same_line:  # kerning tucks a comma under a "y": a small share of the width
                if dx > 0.5 * min(a["x1"] - a["x0"], b["x1"] - b["x0"]):
                    found.append((a["text"], b["text"]))
                continue
            smaller = min(
                (a["x1"] - a["x0"]) * (a["bottom"] - a["top"]),
                (b["x1"] - b["x0"]) * (b["bottom"] - b["top"]),
            )
            if dx * dy > min_share * smaller:
                found.append((a["text"], b["text"]))
    return found


def test_the_overlap_detector_sees_text_printed_over_text(tmp_path):
    import pdfplumber
    import typst

    source = tmp_path / "t.typ"
    source.write_text(
        "#set page(width: 10cm, height: 6cm)\n"
        "Clean lines, kerned: way, yes. Only touching.\n\nClean line two.\n\n"
        "#place(dx: 1cm, dy: 3cm)[OOOO]\n#place(dx: 1.1cm, dy: 3.05cm)[XXXX]\n"
        "#place(dx: 1cm, dy: 4.5cm)[MMMM]\n#place(dx: 1.05cm, dy: 4.5cm)[WWWW]\n"
    )
    pdf = tmp_path / "t.pdf"
    typst.compile(str(source), output=str(pdf))
    with pdfplumber.open(pdf) as doc:
        pairs = {frozenset(p) for p in overlapping_text(doc.pages[0])}
    assert pairs == {frozenset("OX"), frozenset("MW")}, pairs  # nothing from the clean lines


def test_the_pdf_is_at_most_20_pages_with_one_localization_figure_per_type(default_run):
    from pypdf import PdfReader

    pages = len(PdfReader(default_run / "report/_output/report.pdf").pages)
    assert pages <= MAX_PAGES, pages
    manifest = json.loads((default_run / "report/figures/manifest.json").read_text())["figures"]
    types = yaml.safe_load((default_run / "params.yaml").read_text())["data"]["machine_types"]
    by_section = {}
    for f in manifest:
        by_section.setdefault(f["section"], []).append(f)
    assert sorted(f["machine_type"] for f in by_section["localization"]) == sorted(types)
    qmd = (default_run / "report/report.qmd").read_text()
    # The seed's per-ID panels are the HTML's detail view only.
    for f in by_section["localization-detail"]:
        before = qmd[: qmd.index(f"#{f['id']} ")]
        assert (
            before.rstrip()
            .rsplit("\n", 2)[-2]
            .startswith('::: {.content-visible when-format="html"}')
        )


def test_page_one_holds_the_verdict_table_and_the_forest_plot(default_run):
    from pypdf import PdfReader

    recs = json.loads((default_run / "build/recommendations.json").read_text())["rows"]
    first = PdfReader(default_run / "report/_output/report.pdf").pages[0].extract_text()
    flat = re.sub(r"\s+", " ", first)
    assert "Table 1: The answer per machine type" in flat
    assert "Figure 1: Paired held-out score differences" in flat
    from analysis.report_text import verdict_label

    for r in (r for r in recs if r["machine_id"] == "all"):
        assert r["machine_type"] in flat
        # the verdict, as the table prints it (a cell may wrap: compare without spaces)
        label = verdict_label(r)
        assert re.sub(r"\s+", "", label) in re.sub(r"\s+", "", first), label
    # no downstream check in the default run: page 1 says the verdict is about closeness only
    assert "about closeness only" in flat and "dvc exp run -S downstream.enabled=true" in flat
    assert "SYNTHETIC DATA" in flat


def test_no_text_overlaps_and_every_page_header_marks_synthetic_data(default_run):
    import pdfplumber

    with pdfplumber.open(default_run / "report/_output/report.pdf") as doc:
        for number, page in enumerate(doc.pages, start=1):
            assert overlapping_text(page) == [], f"page {number}"
            header = " ".join(w["text"] for w in page.extract_words() if w["bottom"] < HEADER_PT)
            assert "SYNTHETIC DATA" in header, f"page {number}: {header!r}"


def test_two_renders_give_the_same_pdf_bytes_dated_by_the_commit(default_run):
    from pypdf import PdfReader

    pdf = default_run / "report/_output/report.pdf"
    first = pdf.read_bytes()
    sh(default_run, sys.executable, "-m", "analysis", "report")
    assert pdf.read_bytes() == first
    epoch = int(sh(default_run, "git", "log", "-1", "--format=%ct").stdout)
    commit_day = datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()
    info = PdfReader(pdf).metadata
    assert info.creation_date.date().isoformat() == commit_day
    text = PdfReader(pdf).pages[0].extract_text()
    assert "Date of commit" in text and commit_day in text


def test_every_figure_prints_its_text_at_7_pt_or_more(default_run):
    manifest = json.loads((default_run / "report/figures/manifest.json").read_text())["figures"]
    for f in manifest:
        assert f["width_in"] <= 6.9 + 1e-6, f["id"]
        assert f["min_font_pt"] is not None and f["min_font_pt"] >= 7.0 - 1e-6, f


# --------------------------------------------------------------------------- the HTML


PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const r = {width: innerWidth, captions: [], sticky: []};
  const seen = (el) => { const b = el.getBoundingClientRect();
    return b.width > 0 && b.height > 0 && b.left >= -1 && b.right <= innerWidth + 1; };
  document.querySelectorAll('.table-scroll').forEach((box) => {
    const cap = box.previousElementSibling;
    const id = (box.closest('[id]') || {}).id || '';
    r.captions.push({id, caption: !!(cap && cap.classList.contains('table-caption')),
      visible: !!(cap && seen(cap)), inside: box.querySelectorAll('caption').length,
      in_hidden_tab: !!box.closest('.tab-panel[hidden]')});
    if (!box.closest('.tab-panel[hidden]') && box.scrollWidth > box.clientWidth + 4) {
      box.scrollLeft = box.scrollWidth;
      const cell = box.querySelector('tbody tr > :first-child');
      const b = cell.getBoundingClientRect(), frame = box.getBoundingClientRect();
      r.sticky.push({id, scrolled: box.scrollLeft > 0,
        first_column_on_screen: b.left >= frame.left - 1 && b.left < frame.left + 4 && seen(cell)});
    }
  });
  const out = (window.parent || window).document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'PROBE' + JSON.stringify(r) + 'END';
  (window.parent || window).document.body.appendChild(out);
}, 300));</script>"""


def browser_report(page_html: str, width: int, tmp_path: Path) -> dict:
    """The probe's findings after Chromium ran the page's scripts. Headless Chromium has no
    window narrower than 500 px, so a narrow screen is an iframe of that width (its own
    viewport: media queries and ``innerWidth`` are the iframe's)."""
    chromium = headless_chromium(
        tmp_path / "profile", f"--window-size={max(width, 500) + 40},1000", budget_ms=15000
    )
    doc = page_html.replace("</body>", PROBE + "</body>")
    wrapper = (
        "<!doctype html><html><body style='margin:0'>"
        f"<iframe style='width:{width}px;height:900px;border:0' "
        f'srcdoc="{html_lib.escape(doc, quote=True)}"></iframe></body></html>'
    )
    page = tmp_path / f"wrapper-{width}.html"
    page.write_text(wrapper)
    dom = subprocess.run(
        [*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    ).stdout
    found = re.search(r'<pre id="probe">PROBE(.*?)END</pre>', dom, re.S)
    assert found, dom[-1500:]
    return json.loads(html_lib.unescape(found[1]))


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_captions_stay_visible_and_the_first_column_sticks(default_run, tmp_path, width):
    page_html = (default_run / "report/_output/report.html").read_text()
    r = browser_report(page_html, width, tmp_path)
    assert r["width"] == width
    assert len(r["captions"]) >= 10
    for c in r["captions"]:
        assert c["caption"] and c["inside"] == 0, c
        assert c["visible"] or c["in_hidden_tab"], c  # a hidden tab's caption is not on screen
    shown = [c for c in r["captions"] if c["visible"]]
    assert len(shown) >= 5
    # On a phone the long tables are wider than the screen (at 1400 px they may fit); in every
    # table wider than the screen the first column is still on screen when scrolled sideways.
    if width < 600:
        assert len(r["sticky"]) >= 3, "no table wider than the screen: the check would be empty"
    for t in r["sticky"]:
        assert t["scrolled"] and t["first_column_on_screen"], t
