"""`harmone serve` as an operator runs it: a real process, stopped with SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
from support import RawCpms, charger, wait_for

from harmone import cli


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_relays_and_stops_cleanly_on_signal(tmp_path: Path, sig: int) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-passw0rd\n")
    code, _, err = await _run(
        "init", "--db", db, "--admin-email", "a@example.com", "--admin-password-file", str(pw)
    )
    assert code == 0, err
    code, token, err = await _run(
        "token", "create", "--email", "a@example.com", env={**os.environ, "HARMONE_DB": db}
    )
    assert code == 0, err
    assert len(token.splitlines()) == 1
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        db,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        base = None
        while base is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "serve exited before it was ready"
            m = re.search(r"cloud OCPP URLs start with (ws://\S+)", line)
            base = m.group(1) if m else None
        http = base.replace("ws://", "http://")
        async with (
            RawCpms() as cpms,
            httpx.AsyncClient(
                base_url=http, headers={"Authorization": f"Bearer {token.strip()}"}
            ) as api,
        ):
            site = (
                await api.post(
                    "/api/v1/sites", json={"name": "S", "type": "cloud", "cpms_url": cpms.url}
                )
            ).json()
            assert site["ocpp_url"] == f"{base}/{site['uid']}"
            ws = await charger(f"{site['ocpp_url']}/CP-1")
            await ws.send('[2,"1","Heartbeat",{}]')
            assert '"cpms"' in await asyncio.wait_for(ws.recv(), 5)
            proc.send_signal(sig)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code in (1001, 1012)  # going away / service restart
            await wait_for(lambda: "CP-1" in cpms.closed)
            assert cpms.closed["CP-1"] == 1000  # upstream closed cleanly, not dropped
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_arguments_give_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HARMONE_DB"}
    # a real process for the refusal that reaches furthest (the database is opened)...
    code, _, err = await _run("serve", "--db", "postgresql://nobody@127.0.0.1:1/x", env=env)
    assert code == 2 and "cannot open database" in err and "Traceback" not in err
    # ...and the same function in process (in a thread: it runs its own event loop) for the
    # other refusals
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HARMONE_DB", raising=False)
        code, err = await asyncio.to_thread(_main_in_process, "serve")
        assert code == 2 and "no database" in err
        code, err = await asyncio.to_thread(_main_in_process, "serve", "--db", "mysql://x")
        assert code == 2 and "unsupported database URL scheme 'mysql'" in err
        assert "Traceback" not in err
        code, err = await asyncio.to_thread(
            _main_in_process,
            "serve",
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            "--public-url",
            "https://x",
        )
        assert code == 2 and "--public-url" in err


def _main_in_process(*args: str) -> tuple[int, str]:
    """`harmone ARGS` in this process: its exit status and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, err.getvalue()
