"""The benchmark command works (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_relay_benchmark_runs_and_reports_ratios() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "relay_bench.py"),
            "--sizes",
            "2",
            "--duration",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["2"]]
    assert [r[1] for r in rows] == ["direct", "relay"]
    assert len(rows[1]) == 8  # p50, p99, frames/s and the three ratios
    assert float(rows[1][4]) > 0
    assert "per connected charger" in out
