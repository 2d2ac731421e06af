"""localize at scale: pool tasks carry clip rows, not clips; workers hand freed heap back."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from analysis.artifacts import read_test_features
from analysis.io import save_npz
from analysis.localize import split_by_id

N_MELS, FRAMES = 16, 30


def write_test_npz(path, n_per_id: int, compress: bool, seed: int = 0) -> np.ndarray:
    """Two IDs, ``n_per_id`` normal and ``n_per_id`` anomalous clips each; id_02's clips have
    fewer real frames. Returns the log-mels."""
    rng = np.random.default_rng(seed)
    n = 4 * n_per_id
    logmel = rng.standard_normal((n, N_MELS, FRAMES)).astype(np.float32)
    machine_id = np.repeat(["id_00", "id_02"], 2 * n_per_id)
    label = np.tile(np.repeat([0, 1], n_per_id), 2).astype(np.int8)
    n_frames = np.where(machine_id == "id_00", FRAMES, FRAMES - 7).astype(np.int32)
    save_npz(
        path,
        compress=compress,
        logmel=logmel,
        label=label,
        machine_id=machine_id,
        file=np.array([f"test/clip_{i:05d}.wav" for i in range(n)]),
        n_frames=n_frames,
    )
    return logmel


@pytest.mark.parametrize("compress", [False, True])
def test_clip_rows_load_the_units_clips_and_real_frames(tmp_path, params, compress):
    """What a worker reads is what the stage used to cut from the array: the unit's clips
    with one label, in file order, its real frames only, as float64."""
    logmel = write_test_npz(tmp_path / "test.npz", 5, compress)
    test = read_test_features(tmp_path)
    by_id, per_id = split_by_id(test, params["localization"], "fan", tmp_path / "test.npz")
    assert list(by_id) == ["id_00", "id_02"]
    for mid, frames, first in (("id_00", FRAMES, 0), ("id_02", FRAMES - 7, 10)):
        normal, anomaly, files = by_id[mid]
        assert per_id[mid] == {"n_normal": 5, "n_anomaly": 5, "n_real_frames": frames}
        expected_normal = logmel[first : first + 5, :, :frames].astype(np.float64)
        expected_anomaly = logmel[first + 5 : first + 10, :, :frames].astype(np.float64)
        assert normal.load().dtype == np.float64
        assert np.array_equal(normal.load(), expected_normal)
        assert np.array_equal(anomaly.load(), expected_anomaly)
        assert files == [f"test/clip_{i:05d}.wav" for i in range(first + 5, first + 10)]


def test_pool_tasks_carry_no_clips(tmp_path, params):
    """The stage process used to hold every unit's clips and pickle them to the workers: a
    unit's task now grows by its row indices (8 bytes a clip), never by its clips (here
    16 x 30 x 4 = 1,920 bytes a clip, 160 KB at the real size)."""
    sizes = {}
    for n in (5, 500):
        folder = tmp_path / str(n)
        folder.mkdir()
        write_test_npz(folder / "test.npz", n, compress=False)
        by_id, _ = split_by_id(
            read_test_features(folder), params["localization"], "fan", folder / "test.npz"
        )
        sizes[n] = len(pickle.dumps(by_id["id_00"][:2]))
    clip_bytes = N_MELS * FRAMES * 4
    assert sizes[500] - sizes[5] <= 2 * 495 * 8 + 256  # rows of normal and anomalous clips
    assert sizes[500] < 2 * 500 * clip_bytes / 20


def test_return_freed_memory_hands_the_heap_back():
    """After keep_freed_memory (freed buffers stay in the heap), 200 MB of 1 MB arrays freed
    stay resident until return_freed_memory trims the heap. In a child process: the test
    process's allocator settings stay as they are."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc_trim")
    code = textwrap.dedent(
        """
        import numpy as np, psutil
        from analysis.workers import keep_freed_memory, return_freed_memory
        keep_freed_memory()
        rss = lambda: psutil.Process().memory_info().rss
        before = rss()
        blocks = [np.ones(2**17) for _ in range(200)]  # 200 x 1 MB, below the mmap threshold
        del blocks
        held = rss()
        return_freed_memory()
        print((held - before) >> 20, (rss() - before) >> 20)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    held_mb, after_mb = map(int, out.split())
    assert held_mb > 150, out  # the freed blocks were still resident
    assert after_mb < 30, out  # and are handed back


def test_out_of_fold_levels_hold_samples_not_maps(params):
    """The cause of localize's 12.8 GB at ToyConveyor: each clip's strided sample of its z-map
    and its 16 band profiles was a view keeping the whole maps alive until the end (about
    5 MB a clip at 128 x 320, 4 GB for 800 clips). The peak must stay within the samples
    (about a tenth of the maps here) plus a few copies of the clips."""
    import tracemalloc

    from analysis.localization.clip_level import out_of_fold_levels

    normal = np.random.default_rng(1).standard_normal((24, 64, 640))
    tracemalloc.start()
    try:
        levels, folds, cells, by_height = out_of_fold_levels(normal, params["localization"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    samples = cells.nbytes + sum(p.nbytes for p in by_height)
    maps_per_clip = 64 * 640 * 8 * 17  # the z-map and 16 band profiles (at most this big)
    assert samples < 24 * maps_per_clip / 5
    assert peak - samples < 3 * normal.nbytes + 5 * 2**20, (peak >> 20, samples >> 20)
    assert levels.shape == folds.shape == (24,)
