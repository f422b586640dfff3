"""A few hours of real sessions through bench/acn_bench.py: HARMON-E breaks no line limit of
ACN-Sim's model of the Caltech garage, and the comparison table is printed."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "acn_bench.py"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("acn_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["acn_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_a_few_hours_of_real_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    data = Path(os.environ.get("HARMONE_ACN_DATA", bench.DEFAULT_DATA))
    if not data.exists():
        pytest.skip(f"no session data at {data} (set HARMONE_ACN_DATA)")
    names = ["round robin", "HARMON-E", "HARMON-E +departure"]
    argv = ["--data", str(data), "--limits", "30", "--splits", "week2", "--hours", "9"]
    assert bench.main([*argv, "--jobs", "1", "--algorithms", ",".join(names)]) == 0
    out = capsys.readouterr().out
    assert "model check" in out
    rows = {}
    for line in out.splitlines():
        for name in names:
            if line.startswith("  30kW " + name + " ") or line.startswith(f"  30kW {name:<21}"):
                rows[name] = line.split()
    assert set(rows) == set(names), out
    for name in ("HARMON-E", "HARMON-E +departure"):
        energy, jain, violations = rows[name][-7], rows[name][-6], rows[name][-5]
        assert int(violations) == 0, rows[name]
        assert 0 < float(energy) <= 100 and 0 < float(jain) <= 1
