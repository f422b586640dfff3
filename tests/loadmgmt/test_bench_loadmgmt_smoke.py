"""The load management benchmark runs and reports every part (tiny sizes; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rows(lines: list[str], first_words: tuple[str, ...]) -> dict[str, list[str]]:
    """Lines that start with one of `first_words`, split after it."""
    out = {}
    for line in lines:
        for word in first_words:
            if line.startswith(word + " ") and word not in out:
                out[word] = line[len(word) :].split()
    return out


def test_load_management_benchmark_runs_and_reports_ratios() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "loadmgmt_bench.py"),
            *("--hours", "0.5", "--step", "60", "--chargers", "6", "--events", "3"),
            *("--alloc-sizes", "10,20", "--repeat", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("HARMON-E load management benchmark")

    # (a) four strategies: energy, capacity used, cars served, steps over a fuse, worst overload
    assert any(line.startswith("(a) energy over a 0.5 h day-part") for line in lines)
    part_a = lines[: next(i for i, line in enumerate(lines) if line.startswith("(b)"))]
    strategies = _rows(
        part_a[2:], ("HARMON-E", "uncontrolled", "static split", "static split, safe")
    )
    assert set(strategies) == {"HARMON-E", "uncontrolled", "static split", "static split, safe"}
    for cols in strategies.values():
        energy, used, served, over, worst = cols[-5:]
        assert float(energy) >= 0 and used.endswith("%") and "/" in served
        assert over.endswith("%") and float(worst) >= 0
    assert float(strategies["HARMON-E"][-2].rstrip("%")) == 0  # never over a fuse
    ratios = [line for line in lines if line.startswith("ratio HARMON-E / ")]
    assert len(ratios) == 3 and all("energy" in r and "cars served" in r for r in ratios)
    assert any("uncontrolled baseline breaks a fuse" in line for line in lines)

    # (b) p50 / p99 and their ratios to the relayed round trip, for each kind of event
    assert any(line.startswith("(b) event -> SetChargingProfile") for line in lines)
    events = _rows(
        lines,
        (
            "relayed round trip (baseline)",
            "car plugs in -> TxProfile received",
            "reading POSTed -> TxProfile received",
            "controller: event seen -> sent",
        ),
    )
    assert len(events) == 4
    for name, cols in events.items():
        n, p50, p99, x50, x99 = cols
        assert int(n) >= 3 and 0 < float(p50) <= float(p99), (name, cols)
        assert float(x50) > 0 and float(x99) > 0
    assert events["relayed round trip (baseline)"][3:] == ["1.00", "1.00"]

    # (c) allocation time per size
    assert any(line.startswith("(c) allocation time, best of 2") for line in lines)
    sizes = {
        line.split()[0]: line.split()[1:] for line in lines if line.split()[:1] in (["10"], ["20"])
    }
    assert set(sizes) == {"10", "20"}
    assert all(float(ms) > 0 for ms, *_ in sizes.values())
    assert sizes["10"][2] == "1.00"

    # (d) enforcement: event -> decrease with a silent charger, give-back, resume, flapping
    assert any(line.startswith("(d) enforcement") for line in lines)
    decrease = next(line for line in lines if line.startswith("event -> decrease sent"))
    words = decrease.split()
    assert int(words[words.index("n") + 1]) >= 3
    assert 0 < float(words[words.index("p50") + 1]) <= float(words[words.index("p99") + 1])
    give_back = next(line for line in lines if line.startswith("give-back:"))
    assert float(give_back.split(" in ")[1].split()[0]) > 0
    resume = next(line for line in lines if line.startswith("resume after"))
    assert float(resume.split(": ")[1].split()[0]) >= 0
    flapping = next(line for line in lines if line.startswith("flapping over"))
    assert int(flapping.split(": ")[1].split()[0]) == 0  # no grant swings back and forth
