"""The command line as a newcomer meets it: help that explains, errors in one line."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import harmone_server

from harmone.cli import build_parser
from harmone.sim.cli import run_simulate


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_options(sub, (*path, name)))
        else:
            found.append((*path, *action.option_strings, action.help or ""))
    return found


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    missing = [opt[:-1] for opt in _options(build_parser()) if not opt[-1]]
    assert missing == []


def test_options_with_a_default_show_it() -> None:
    parser = build_parser()
    for path in (["serve"], ["simulate"], ["simulate-cpms"]):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
            path[0]
        ]
        for action in sub._actions:
            if action.default not in (None, argparse.SUPPRESS, False) and action.help:
                assert "default" in action.help, (path, action.option_strings)


def test_the_help_opens_with_what_harmone_does_for_its_user() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "harmone", "--help"], capture_output=True, text=True, check=True
    ).stdout
    description = text.split("\n\n")[1]
    assert "EV chargers" in description and "CPMS" in description
    assert "config objects" not in description


def test_simulate_with_an_http_url_is_one_line_and_exit_status_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harmone", "simulate", "--url", "http://127.0.0.1:9/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "ws://" in lines[0] and "Control Hub" in lines[0]


async def test_a_refused_simulated_charger_shows_the_reason_the_server_gave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harmone_server(tmp_path) as srv:
        url = srv.url.replace("http://", "ws://") + "/no-such-site"
        status = await run_simulate(url=url, chargers=1, version="1.6", duration=1)
    assert status == 1
    out = capsys.readouterr().out
    assert "handshake refused with HTTP 404: no such site" in out


def test_host_and_port_come_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARMONE_HOST", "0.0.0.0")
    monkeypatch.setenv("HARMONE_PORT", "8085")
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("0.0.0.0", 8085)
    args = build_parser().parse_args(["serve", "--port", "8083", "--host", "127.0.0.1"])
    assert (args.host, args.port) == ("127.0.0.1", 8083)


def test_a_port_in_use_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harmone",
                "serve",
                "--db",
                f"sqlite:///{tmp_path / 'h.db'}",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("harmone: error: cannot listen on")
    assert "Address already in use" in line and "HARMONE_PORT" in line
