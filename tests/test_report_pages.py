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
from itertools import pairwise
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
    from analysis.figures.forest import forest_rows

    types = [r["machine_type"] for r in recs if r["machine_id"] == "all"]
    if forest_rows(recs, types):  # some verdict rests on a test: its difference is plotted
        assert "Figure 1: Paired held-out score differences" in flat
    else:  # nothing was tested (the harder default data): page 1 says so instead
        assert "no tested difference to plot" in flat
    from analysis.report_text import verdict_label

    for r in (r for r in recs if r["machine_id"] == "all"):
        assert r["machine_type"] in flat
        # the verdict, as the table prints it (a cell may wrap: compare without spaces)
        label = verdict_label(r)
        assert re.sub(r"\s+", "", label) in re.sub(r"\s+", "", first), label
    # no downstream check in the default run: page 1 says the verdict rests on closeness alone
    assert "rest on closeness alone" in flat and "dvc exp run -S downstream.enabled=true" in flat
    assert "SYNTHETIC DATA" in flat
    # at the default (calibrated) strength the banner may claim DCASE-like difficulty
    assert "Its anomalies are as hard as the real ones by two published DCASE 2020" in flat


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


def browser_report(page_html: str, width: int, tmp_path: Path, probe: str = PROBE) -> dict:
    """The probe's findings after Chromium ran the page's scripts. Headless Chromium has no
    window narrower than 500 px, so a narrow screen is an iframe of that width (its own
    viewport: media queries and ``innerWidth`` are the iframe's)."""
    chromium = headless_chromium(
        tmp_path / "profile", f"--window-size={max(width, 500) + 40},1000", budget_ms=15000
    )
    doc = page_html.replace("</body>", probe + "</body>")
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


# --------------------------------------------------------------------------- layout checks


def answer_table_columns_pt(project: Path, page) -> list[float]:
    """The x edges (pt) of the page-1 answer table's columns: the widths Typst was given
    (report.typ) laid over the rule under the table's header."""
    typ = (project / "report/report.typ").read_text()
    head = typ[: typ.index("<tbl-answer>")]
    widths = re.findall(r"columns: \(([^)]*)\)", head)[-1]
    shares = [float(w.strip().rstrip("%")) / 100 for w in widths.split(",") if w.strip()]
    rule = max(page.lines, key=lambda line: line["x1"] - line["x0"])
    x0, width = rule["x0"], rule["x1"] - rule["x0"]
    edges, at = [x0], x0
    for share in shares:
        at += share * width
        edges.append(at)
    return edges


def words_outside_their_cells(project: Path) -> list[str]:
    """Words of the page-1 answer table that cross a column edge (text run into the next
    cell: "ToyConveyornot enough")."""
    import pdfplumber

    with pdfplumber.open(project / "report/_output/report.pdf") as doc:
        page = doc.pages[0]
        edges = answer_table_columns_pt(project, page)
        rule_top = max(page.lines, key=lambda line: line["x1"] - line["x0"])["top"]
        words = page.extract_words(x_tolerance=1.0)
        # the table ends above the forest plot, or above the first paragraph after it (no
        # forest plot where nothing was tested), or else above the page number
        after = [
            w["top"]
            for w, nxt in pairwise(words)
            if (w["text"], nxt["text"]) in {("What", "the"), ("No", "machine")}
            and w["top"] > rule_top
        ]
        table_bottom = min([im["top"] for im in page.images] + after + [page.height - 50])
        # the header row: the last "machine" above the rule (the caption and banner say it too)
        header_top = max(w["top"] for w in words if w["text"] == "machine" and w["top"] < rule_top)
        bad = []
        for w in words:
            if not header_top - 1 <= w["top"] < table_bottom:
                continue
            inside = any(lo - 0.5 <= w["x0"] and w["x1"] <= hi + 0.5 for lo, hi in pairwise(edges))
            if not inside:
                bad.append(w["text"])
        return bad


def stamps_over_figures(project: Path) -> list[str]:
    """Pages where the SYNTHETIC running header touches a figure's box, and figures whose own
    mark prints over their content (recorded when drawn)."""
    import pdfplumber

    bad = []
    with pdfplumber.open(project / "report/_output/report.pdf") as doc:
        for number, page in enumerate(doc.pages, start=1):
            stamps = [w for w in page.extract_words() if "SYNTHETIC" in w["text"]]
            for s in stamps:
                for im in page.images:
                    if (
                        s["x0"] < im["x1"]
                        and im["x0"] < s["x1"]
                        and s["top"] < im["bottom"]
                        and im["top"] < s["bottom"]
                    ):
                        bad.append(f"page {number}")
    manifest = json.loads((project / "report/figures/manifest.json").read_text())["figures"]
    bad += [f["id"] for f in manifest if f.get("mark_over_content")]
    return bad


def headings_at_page_foot(project: Path, min_lines_after: int = 2) -> list[str]:
    """Numbered headings (bold, "3 Where ..." / "3.1 fan") followed on their page by fewer
    than ``min_lines_after`` lines of anything (text, or a figure's box)."""
    import pdfplumber

    bad = []
    with pdfplumber.open(project / "report/_output/report.pdf") as doc:
        for number, page in enumerate(doc.pages, start=1):
            words = page.extract_words(extra_attrs=["fontname", "size"])
            body = [w for w in words if HEADER_PT < w["top"] < page.height - 50]
            lines = sorted({round(w["top"]) for w in body})
            for w in body:
                if not (re.fullmatch(r"[0-9]+(\.[0-9]+)*", w["text"]) and "Bold" in w["fontname"]):
                    continue
                if w["size"] < 10.5:
                    continue
                below = [t for t in lines if t > w["bottom"] + 1]
                below += [im["top"] for im in page.images if im["top"] > w["bottom"]]
                if len(below) < min_lines_after:
                    title = " ".join(x["text"] for x in body if abs(x["top"] - w["top"]) < 1)
                    bad.append(f"page {number}: {title}")
    return bad


def test_page_one_table_text_stays_inside_its_cells(default_run):
    assert words_outside_their_cells(default_run) == []


def test_the_synthetic_stamp_prints_over_no_figure(default_run):
    assert stamps_over_figures(default_run) == []


def test_no_heading_stands_in_the_last_lines_of_a_page(default_run):
    assert headings_at_page_foot(default_run) == []


NARROW_PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const r = {width: innerWidth, page_scroll_width: document.documentElement.scrollWidth,
             forest_px: null, unscrolled: []};
  const img = document.querySelector('#fig-forest img');
  if (img) r.forest_px = img.getBoundingClientRect().width;
  document.querySelectorAll('table').forEach((t) => {
    if (t.closest('.tab-panel[hidden]')) return;
    const box = t.closest('.table-scroll');
    const fits = t.getBoundingClientRect().right <= innerWidth + 1;
    if (!fits && !(box && getComputedStyle(box).overflowX === 'auto')) {
      r.unscrolled.push((t.closest('[id]') || {}).id || t.textContent.slice(0, 60));
    }
  });
  const out = (window.parent || window).document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'PROBE' + JSON.stringify(r) + 'END';
  (window.parent || window).document.body.appendChild(out);
}, 300));</script>"""


def narrow_screen_findings(project: Path, tmp_path: Path, width: int = 390) -> dict:
    """What a phone shows: the forest plot's smallest label in CSS px, tables wider than the
    screen outside a sideways scroller (and the page's own scroll width, for a reader)."""
    page_html = (project / "report/_output/report.html").read_text()
    r = browser_report(page_html, width, tmp_path, probe=NARROW_PROBE)
    manifest = json.loads((project / "report/figures/manifest.json").read_text())["figures"]
    forest = next((f for f in manifest if f["id"] == "fig-forest"), None)
    if forest is not None:  # no forest plot where no verdict rests on a test
        # Rendered px per printed pt: the image's CSS width over the figure's width in pt.
        r["forest_label_px"] = forest["min_font_pt"] * r["forest_px"] / (forest["width_in"] * 72)
    return r


@pytest.mark.browser
def test_on_a_phone_the_forest_plot_reads_and_every_wide_table_scrolls(default_run, tmp_path):
    r = narrow_screen_findings(default_run, tmp_path)
    assert r["width"] == 390
    if "forest_label_px" in r:  # drawn only where some verdict rests on a test
        assert r["forest_label_px"] >= 11, r
    assert r["unscrolled"] == [], r


def test_the_layout_detectors_see_a_heading_at_a_page_foot_and_a_stamp_on_a_figure(tmp_path):
    """Both PDF detectors on a PDF made here: a numbered heading as the last line of its page
    (its text on the next), and a header stamp set over an image."""
    import typst

    project = tmp_path
    (project / "report/_output").mkdir(parents=True)
    (project / "report/figures").mkdir()
    (project / "report/figures/manifest.json").write_text('{"figures": []}')
    from PIL import Image

    Image.new("RGB", (40, 20), "gray").save(project / "report/figures/box.png")
    source = project / "report/t.typ"
    source.write_text(
        '#set page(height: 12cm, header: [SYNTHETIC DATA header])\n#set heading(numbering: "1")\n'
        "= First\n" + "Line of text.\n\n" * 14 + "= Alone at the foot\n#pagebreak()\n"
        "Its text.\n\n= Kept with its text\n" + "Line.\n\n" * 4 + "\n"
        '#place(top + left, dy: -1.6cm, image("figures/box.png", width: 6cm))\n'
    )
    typst.compile(str(source), output=str(project / "report/_output/report.pdf"))
    feet = headings_at_page_foot(project)
    assert len(feet) == 1 and "Alone at the foot" in feet[0], feet
    assert len(stamps_over_figures(project)) == 1  # the one page with the image under its header
