"""Run every benchmark: extraction, mask generation, the cold pipeline, the downstream check."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("bench_extract.py", "bench_masks.py", "bench_pipeline.py", "bench_downstream.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
