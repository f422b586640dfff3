"""scripts/install-chromium: a busy package manager is waited for, and a failure stops the run.

The script runs for real under bash; only `apt-get` and `id` are stand-ins on PATH (the test
must not install anything), and a process named `apt-get` plays the package manager that
holds the lock.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-chromium"


def _bin(tmp_path: Path, apt_exit: int) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$(date +%s.%N) $@" >> {log}\nexit {apt_exit}\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CHROMIUM": str(tmp_path / "no-chromium"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_apt_get_is_asked_to_wait_for_the_lock(tmp_path: Path) -> None:
    done = _run(tmp_path, _bin(tmp_path, 0), APT_LOCK_WAIT="77")
    assert done.returncode == 0, done.stderr
    calls = [c.split(" ", 1)[1] for c in (tmp_path / "apt.log").read_text().splitlines()]
    assert len(calls) == 2  # update, then install
    assert all("DPkg::Lock::Timeout=77" in call for call in calls)
    assert calls[1].endswith("install -y -qq chromium")


def test_a_failed_install_stops_the_run_with_a_reason(tmp_path: Path) -> None:
    done = _run(tmp_path, _bin(tmp_path, 100))
    assert done.returncode == 1
    assert "could not install chromium" in done.stderr and "not run" in done.stderr


def _holder(tmp_path: Path, name: str, seconds: float) -> subprocess.Popen[bytes]:
    """A process called `name` (as apt-get or dpkg would be) that runs for `seconds` and then
    notes when it ended; reaped at once, as its real parent would."""
    holder = tmp_path / "holder" / name
    holder.parent.mkdir()
    holder.write_text(f"#!/bin/sh\nsleep {seconds}\ndate +%s.%N > {tmp_path / 'ended'}\n")
    holder.chmod(0o755)
    busy = subprocess.Popen([str(holder)])
    threading.Thread(target=busy.wait, daemon=True).start()
    return busy


def test_a_busy_package_manager_is_waited_for_and_named(tmp_path: Path) -> None:
    bin_dir = _bin(tmp_path, 0)
    busy = _holder(tmp_path, "apt-get", 2)
    try:
        done = _run(tmp_path, bin_dir, APT_LOCK_WAIT="30")
    finally:
        busy.kill()
    assert done.returncode == 0, done.stderr
    assert "waiting (up to 30 s) for another package manager" in done.stderr
    assert "apt-get" in done.stderr.split("waiting", 1)[1]
    ended = float((tmp_path / "ended").read_text())
    first_apt_call = float((tmp_path / "apt.log").read_text().split()[0])
    assert first_apt_call >= ended  # apt-get ran only once the other one had finished


def test_a_package_manager_busy_for_too_long_fails_before_any_test(tmp_path: Path) -> None:
    busy = _holder(tmp_path, "dpkg", 30)
    try:
        done = _run(tmp_path, _bin(tmp_path, 0), APT_LOCK_WAIT="1")
    finally:
        busy.kill()
    assert done.returncode == 1
    assert "still busy after 1 s" in done.stderr and "dpkg" in done.stderr
    assert not (tmp_path / "apt.log").exists()


def test_nothing_happens_when_chromium_is_there(tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    done = _run(tmp_path, _bin(tmp_path, 1), CHROMIUM=str(browser))
    assert done.returncode == 0 and not (tmp_path / "apt.log").exists()
