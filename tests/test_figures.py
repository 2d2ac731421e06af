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
