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


def test_clipper_creek_rates_are_rounded_fairly_over_time() -> None:
    """A ClipperCreek car (0/8/16/24/32 A) whose equal share is 11 A is not always rounded
    down to 8 A: what rounding takes is owed to it, so its grants average about 11 A, every
    grant is an allowed rate, and the fuse holds."""
    from datetime import timedelta

    bench = _bench()
    from harmone.loadmgmt import ChargerSpec, Demand, Node

    sched = bench.HarmoneScheduler(30, False, bench.OPTIONS)
    sched.tree = Node(
        "site",
        22,
        children=(ChargerSpec("cc", 32, min_current=8, phases=1), ChargerSpec("av", 32, phases=1)),
    )
    sched.clipper = {"cc"}
    arrived = bench.START
    demands = {"s-cc": Demand("cc", 1, arrived), "s-av": Demand("av", 1, arrived)}
    given = []
    for period in range(1, 41):
        alloc = sched.allocate_rounded(demands, arrived + period * bench.PERIOD)
        cc = alloc.connector("cc", 1).limit_to_send
        av = alloc.connector("av", 1).limit_to_send
        assert cc in bench.CC_RATES and cc + av <= 22
        given.append(cc)
    assert set(given) == {8, 16}
    assert abs(sum(given) / len(given) - 11) <= 0.5
    # Without it (the old rounding) the car would get 8 A every time.
    sched_down = bench.HarmoneScheduler(30, False, bench.OPTIONS, dither=False)
    sched_down.tree, sched_down.clipper = sched.tree, {"cc"}
    alloc = sched_down.allocate_rounded(demands, arrived + timedelta(minutes=5))
    assert alloc.connector("cc", 1).limit_to_send == 8
