"""Drawing primitives the figures share: the figure folder, axis labels in Hz and seconds,
maps, and grids of binary maps drawn as one image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from analysis.mel import MelGeometry  # noqa: E402


def slug(text: str) -> str:
    """A cross-reference-safe id part: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# Width of the PDF's text block (A4 less 1.7 cm margins) in inches: figures are drawn at
# most this wide, so the text in them prints at the size it is set in.
PRINT_WIDTH_IN = 6.9
SYNTHETIC_MARK = "SYNTHETIC DATA"


def printed_font_sizes(fig) -> list[float]:
    """Point sizes of every visible text of a drawn figure as the PDF prints it (scaled
    down where the figure is wider than the text block)."""
    scale = min(1.0, PRINT_WIDTH_IN / fig.get_figwidth())
    return [
        t.get_fontsize() * scale
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.figure is fig
    ]


MARK_BAND_IN = 0.16  # the synthetic mark's band above a figure with set margins


def add_top_band(fig, band_in: float) -> None:
    """Make ``fig`` ``band_in`` inches taller with the new height empty at the top: every
    axes keeps its size and place in inches from the bottom (a figure legend anchored at
    the bottom stays there)."""
    height = fig.get_figheight()
    scale = height / (height + band_in)
    fig.set_figheight(height + band_in)
    for ax in fig.axes:
        pos = ax.get_position()
        ax.set_position([pos.x0, pos.y0 * scale, pos.width, pos.height * scale])


def freeze_layout(fig) -> None:
    """Lay ``fig`` out once with its layout engine (constrained layout) and keep those
    positions (no engine after), so a band added above them stays empty."""
    if fig.get_layout_engine() is not None and fig.get_layout_engine().__class__.__name__ != (
        "PlaceHolderLayoutEngine"
    ):
        fig.canvas.draw()
        fig.set_layout_engine("none")


def mark_over_content(fig, mark) -> bool:
    """Whether the mark's box (after a draw) overlaps any axes with its titles and tick
    labels, or a figure legend."""
    renderer = fig.canvas.get_renderer()
    box = mark.get_window_extent(renderer)
    others = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    others += [legend.get_window_extent(renderer) for legend in fig.legends]
    return any(other is not None and box.overlaps(other) for other in others)


class FigureSet:
    """Saves figures into a folder and records them for the manifest.

    ``marker`` (the synthetic-data mark) is stamped on every figure drawn from the data
    (``data=True``); each manifest entry records the figure's width and the smallest font
    size it prints at, so a test can hold every figure to a readable size.
    """

    def __init__(self, folder: Path, dpi: int, marker: str | None = None) -> None:
        self.folder, self.dpi, self.marker, self.entries = folder, dpi, marker, []

    def save(
        self, fig, fig_id: str, caption: str, section: str, data: bool = True, **extra: Any
    ) -> None:
        file = f"{fig_id.removeprefix('fig-')}.png"
        mark = None
        if self.marker and data:
            freeze_layout(fig)  # a constrained layout would not keep a band empty
            mark = fig.suptitle(
                self.marker,
                x=0.995,
                y=0.998,
                ha="right",
                va="top",
                fontsize=7,
                color="#a04000",
                weight="bold",
            )
        # No bbox_inches="tight": every figure lays itself out (constrained layout or set
        # margins), and "tight" draws each figure twice.
        fig.savefig(self.folder / file, dpi=self.dpi, metadata={"Software": None})
        if mark is not None and mark_over_content(fig, mark):
            # Over the panels: a band of its own above them, drawn again (only these figures).
            add_top_band(fig, MARK_BAND_IN)
            fig.savefig(self.folder / file, dpi=self.dpi, metadata={"Software": None})
        sizes = printed_font_sizes(fig)  # after the draw: tick labels exist only then
        if mark is not None:
            extra = {**extra, "mark_over_content": mark_over_content(fig, mark)}
        entry = {
            "id": fig_id,
            "file": file,
            "caption": caption,
            "section": section,
            "width_in": round(float(fig.get_figwidth()), 2),
            "min_font_pt": round(min(sizes), 2) if sizes else None,
            **extra,
        }
        plt.close(fig)
        self.entries.append(entry)


def label_frame_axis(ax, geometry: MelGeometry, show: bool = True) -> None:
    """Time ticks in whole seconds on the frame axis; with ``show`` False none at all (a
    small multiple off the bottom row: ticks are most of its drawing time)."""
    if not show:
        ax.set_xticks([])
        return
    seconds = np.arange(0, geometry.frame_to_seconds(geometry.target_T) + 1e-9, 2.0)
    frames = [s * geometry.sr / geometry.hop_length for s in seconds]
    ax.set_xticks(frames, [f"{s:g}" for s in seconds])
    ax.set_xlabel("time (s)")


def label_mel_axis(ax, geometry: MelGeometry, show: bool = True) -> None:
    """Mel-bin ticks labelled with their centre frequency in kHz; with ``show`` False none
    (a small multiple off the left column)."""
    if not show:
        ax.set_yticks([])
        return
    bins = np.linspace(0, geometry.n_mels - 1, 5).round().astype(int)
    ax.set_yticks(bins, [f"{geometry.bin_to_hz(b) / 1000:.1f}" for b in bins])
    ax.set_ylabel("frequency (kHz)")


def map_mosaic(
    rows: list[list[np.ndarray]], n: int, gap_fraction: float = 0.08
) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]]]:
    """0/1 maps tiled into one float image, top row first; NaN in gaps and empty slots.

    Every map is brought to the largest map's shape by nearest-neighbour
    indexing (a q-grid cell covers exactly the spectrogram cells it stands
    for) and flipped so that its first row, the lowest mel bin, is at the
    tile's bottom. Returns the image and the (start, size) in pixels of every
    tile row and tile column.
    """
    maps = [m for row in rows for m in row[:n]]
    tile_h = max(m.shape[0] for m in maps)
    tile_w = max(m.shape[1] for m in maps)
    gap_h = max(1, round(gap_fraction * tile_h))
    gap_w = max(1, round(gap_fraction * tile_w / 2))
    row_spans = [(r * (tile_h + gap_h), tile_h) for r in range(len(rows))]
    col_spans = [(j * (tile_w + gap_w), tile_w) for j in range(n)]
    image = np.full((row_spans[-1][0] + tile_h, col_spans[-1][0] + tile_w), np.nan, np.float32)
    for (top, _), row in zip(row_spans, rows, strict=True):
        for (left, _), tile in zip(col_spans, row[:n], strict=False):
            rows_idx = (np.arange(tile_h) * tile.shape[0]) // tile_h
            cols_idx = (np.arange(tile_w) * tile.shape[1]) // tile_w
            image[top : top + tile_h, left : left + tile_w] = tile[rows_idx[::-1]][:, cols_idx]
    return image, row_spans, col_spans


def binary_map_grid(
    rows: list[tuple[str, list[np.ndarray]]],
    n: int,
    width_in: float,
    row_in: float,
    column_titles=None,
):
    """A grid of 0/1 maps: one labelled row per source, ``n`` columns (black = masked).

    One image in one axes (see :func:`map_mosaic`), with a thin frame around
    every map: a 30-map grid then draws in a fraction of the time that 30
    axes take, and looks the same.
    """
    image, row_spans, col_spans = map_mosaic([maps for _, maps in rows], n)
    fig, ax = plt.subplots(figsize=(width_in, row_in * len(rows) + 0.3), layout="constrained")
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    ax.imshow(image, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="antialiased")
    frames = [
        [
            (x - 0.5, y - 0.5),
            (x + w - 0.5, y - 0.5),
            (x + w - 0.5, y + h - 0.5),
            (x - 0.5, y + h - 0.5),
            (x - 0.5, y - 0.5),
        ]
        for (y, h), (_, maps) in zip(row_spans, rows, strict=True)
        for (x, w), _ in zip(col_spans, maps[:n], strict=False)
    ]
    ax.add_collection(LineCollection(frames, colors="0.55", linewidths=0.6, clip_on=False))
    ax.set_yticks(
        [y + h / 2 for y, h in row_spans],
        [label.replace("_", " ").replace(", ", ",\n") for label, _ in rows],
        fontsize=8,
    )
    if column_titles:
        ax.set_xticks([x + w / 2 for x, w in col_spans], column_titles[:n], fontsize=8)
        ax.xaxis.set_ticks_position("top")
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig
