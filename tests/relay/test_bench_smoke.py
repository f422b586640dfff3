"""The benchmark command works (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_relay_benchmark_runs_and_reports_ratios() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "relay_bench.py"),
            "--chargers",
            "2",
            "--loop-chargers",
            "2",
            "--duration",
            "0.5",
            "--targets",
            "direct,harmone",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    direct, relay = rows["direct"], rows["harmone"]
    assert len(relay) == 10  # calls/s, two ratios, p50, p99, their additions, memory, CPU
    assert float(relay[1].replace(",", "")) > 0  # calls per second through HARMON-E
    assert float(relay[2]) > 0  # and its ratio to the direct path
    assert direct[2] == "1.00"
    assert float(relay[8]) > 0  # kB of memory per connected charger
    assert float(relay[9]) > 0  # its CPU time per call
