"""The figure helpers that compute something: the mask mosaic."""

import numpy as np

from analysis.plotting import map_mosaic


def test_map_mosaic_places_flips_and_upsamples_every_map():
    rng = np.random.default_rng(0)
    full = rng.random((8, 20)) > 0.5
    small = rng.random((2, 5)) > 0.5  # a q-grid 4x coarser on both axes
    image, row_spans, col_spans = map_mosaic([[full, full], [small]], n=2)
    (top0, h0), (top1, h1) = row_spans
    (left0, w0), (left1, w1) = col_spans
    assert (h0, w0, h1, w1) == (8, 20, 8, 20) and top0 == left0 == 0
    assert top1 > top0 + h0 and left1 > left0 + w0  # gaps between tiles
    # The first row of a map (lowest mel bin) is at the bottom of its tile.
    np.testing.assert_array_equal(image[top0 : top0 + 8, left0 : left0 + 20], full[::-1])
    np.testing.assert_array_equal(image[top0 : top0 + 8, left1 : left1 + 20], full[::-1])
    # A q-grid cell covers exactly the 4x4 spectrogram cells it stands for.
    expected = np.kron(small, np.ones((4, 4), dtype=bool))[::-1]
    np.testing.assert_array_equal(image[top1 : top1 + 8, left0 : left0 + 20], expected)
    # The empty slot and the gaps are NaN (drawn blank), and nothing else is.
    assert np.isnan(image[top1 : top1 + 8, left1 : left1 + 20]).all()
    assert np.isnan(image[top0 + 8 : top1]).all() and np.isnan(image[:, left0 + 20 : left1]).all()
    assert np.isnan(image).sum() == image.size - 3 * 8 * 20


def test_map_mosaic_with_a_grid_that_does_not_divide():
    full = np.zeros((7, 10), dtype=bool)
    coarse = np.eye(3, dtype=bool)  # 3x3 onto 7x10: source index floor(i * 3 / 7)
    image, row_spans, _ = map_mosaic([[full], [coarse]], n=1)
    top, height = row_spans[1]
    tile = image[top : top + height, :10][::-1]
    rows, cols = (np.arange(7) * 3) // 7, (np.arange(10) * 3) // 10
    np.testing.assert_array_equal(tile, coarse[rows][:, cols])


def test_the_synthetic_mark_never_prints_over_a_figure_with_set_margins(tmp_path):
    """A figure laid out with set margins (no layout engine) whose panel title reaches the top
    edge: the mark, drawn into that corner, would print over the title. It gets a band above
    the panels instead, and the manifest records that it is clear of every axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plotting import FigureSet, add_top_band, mark_over_content

    def crowded():
        fig, axes = plt.subplots(1, 2, figsize=(6.9, 1.5))
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.2, top=0.86)
        for ax in axes:
            ax.plot([0, 1], [0, 1])
            ax.set_title("a panel title that reaches the top right corner", loc="right")
        return fig

    # Without the band the check sees the overlap (so it can fail).
    fig = crowded()
    mark = fig.suptitle("SYNTHETIC DATA", x=0.995, y=0.998, ha="right", va="top", fontsize=7)
    fig.canvas.draw()
    assert mark_over_content(fig, mark)
    plt.close(fig)

    figs = FigureSet(tmp_path, dpi=60, marker="SYNTHETIC DATA")
    fig = crowded()
    axes_inches = [ax.get_position().height * fig.get_figheight() for ax in fig.axes]
    figs.save(fig, "fig-crowded", "caption", "test")
    entry = figs.entries[0]
    assert entry["mark_over_content"] is False
    # The band adds height on top; the panels keep their size in inches.
    fig = crowded()
    add_top_band(fig, 0.16)
    assert abs(fig.get_figheight() - 1.66) < 1e-9
    kept = [ax.get_position().height * fig.get_figheight() for ax in fig.axes]
    assert np.allclose(kept, axes_inches)
    plt.close(fig)


def test_a_constrained_figure_with_a_colorbar_gets_the_mark_clear_of_its_panels(tmp_path):
    """Constrained layout alone left the mark over the top panel's title (measured on the
    default report's heat map, forest plot and feature distributions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plotting import FigureSet

    fig, ax = plt.subplots(figsize=(6.2, 2.0), layout="constrained")
    image = ax.imshow(np.arange(12.0).reshape(3, 4), aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_title("a title across the whole top of the panel " * 2, fontsize=7)
    figs = FigureSet(tmp_path, dpi=60, marker="SYNTHETIC DATA")
    figs.save(fig, "fig-heat", "caption", "test")
    assert figs.entries[0]["mark_over_content"] is False


def test_dose_response_figure_draws_a_panel_per_type_with_its_shape(tmp_path):
    """One panel per type that has a dose-response (a type without one is left out), titled
    with rho, its interval and the shape; saved in the downstream section."""
    import matplotlib

    matplotlib.use("Agg")
    from analysis.artifacts import DownstreamRecord
    from analysis.figures.downstream import _panel_answer, dose_response_figure
    from analysis.plotting import FigureSet

    def setting(score, auc):
        return {
            "mask_score": score,
            "mask_score_ci": [score - 0.05, score + 0.05],
            "auc": auc,
            "auc_ci": [auc - 0.05, auc + 0.05],
        }

    names = ["current", "path_25", "path_50", "path_75", "fitted", "perlin"]
    scores = [0.5, 0.4, 0.3, 0.2, 0.1, 0.8]
    aucs = [0.6, 0.65, 0.7, 0.75, 0.8, 0.55]
    summary = {
        "user_setting": "current",
        "valid": True,
        "settings": {n: setting(s, a) for n, s, a in zip(names, scores, aucs, strict=True)},
        "rank_correlation": {
            "rho": 1.0,
            "ci": [0.6, 1.0],
            "settings": names,
            "shape": "monotone: closer trains better",
        },
    }
    record = DownstreamRecord(True, "cmd", types={"fan": summary, "pump": {"settings": {}}})
    figs = FigureSet(tmp_path, dpi=60)
    dose_response_figure(figs, record, ["fan", "pump"])
    (entry,) = figs.entries
    assert entry["id"] == "fig-dose-response" and entry["section"] == "downstream"
    assert (tmp_path / entry["file"]).is_file()
    empty = FigureSet(tmp_path / "none", dpi=60)
    dose_response_figure(empty, DownstreamRecord(True, "cmd", types={"pump": {}}), ["pump"])
    assert empty.entries == []
    # The title's second line states a shape only where the check may: valid, closeness ranked.
    assert _panel_answer(summary) == "monotone: closer trains better"
    assert _panel_answer({**summary, "valid": False}).startswith("check not valid")
    few = {**summary["rank_correlation"], "ranked": False, "held_out_regions": 1}
    assert "not ranked" in _panel_answer({**summary, "rank_correlation": few})


def test_point_labels_are_stacked_apart_in_their_own_order_and_inside_the_axes():
    """Three labels at one height come out a gap apart, centred where they were; labels
    already apart stay put; labels at the axes' foot are lifted inside it; each label keeps
    its own point's slot in the list. (Broke: the shift not undone -> the centred case is
    0.1 too high and fails.)"""
    from pytest import approx

    from analysis.figures.downstream import spread_labels

    assert spread_labels([0.5, 0.5, 0.5], 0.1) == approx([0.4, 0.5, 0.6])
    assert spread_labels([0.9, 0.1], 0.1) == approx([0.9, 0.1])
    assert spread_labels([0.0, 0.0], 0.1) == approx([0.02, 0.12])
    assert spread_labels([0.55, 0.5], 0.1) == approx([0.575, 0.475])  # order kept
    top = spread_labels([1.0, 1.0], 0.1)
    assert max(top) <= 0.98 + 1e-12 and abs(top[0] - top[1]) >= 0.1 - 1e-12
