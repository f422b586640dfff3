"""`harmone init` and `harmone token create`, end to end in a subprocess, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harmone.errors import ConfigError, NotFound, StoreError
from harmone.services.accounts import Accounts
from harmone.services.admin import create_token, init_database
from harmone.store import Store

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-admin-password"


def harmone(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m harmone ARGS` as an operator would, with the package from this tree."""
    full_env = {k: v for k, v in os.environ.items() if k != "HARMONE_DB"}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harmone", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


async def test_init_twice_then_token(db_url: str, password_file: Path) -> None:
    init = ["init", "--db", db_url, "--admin-email", "Root@Example.org"]
    first = harmone(*init, "--admin-password-file", str(password_file))
    assert first.returncode == 0, first.stderr
    assert "root@example.org created" in first.stderr
    assert first.stdout == ""

    second = harmone(*init, "--admin-password-file", str(password_file))
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stderr

    made = harmone("token", "create", "--db", db_url, "--email", "root@example.org")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 1
    assert made.stdout == lines[0] + "\n"

    store = await Store.open(db_url)
    try:
        user = await Accounts(store).user_for_token(lines[0])
        assert user is not None
        assert (user.email, user.role) == ("root@example.org", "admin")
        # the password came from the file without its trailing newline
        await Accounts(store).authenticate("root@example.org", PASSWORD)
        assert len(await Accounts(store).list_users()) == 1
    finally:
        await store.close()


def test_harmone_db_environment_variable(db_url: str, password_file: Path) -> None:
    env = {"HARMONE_DB": db_url}
    init = harmone(
        "init",
        "--admin-email",
        "ops@example.org",
        "--admin-password-file",
        str(password_file),
        env=env,
    )
    assert init.returncode == 0, init.stderr
    made = harmone("token", "create", "--email", "ops@example.org", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("hm_")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/harmone", "unsupported database URL scheme 'mysql'"),
        ("harmone.db", "not a database URL"),
    ],
)
def test_bad_url_exits_2_with_a_clear_message(
    url: str, message: str, password_file: Path, tmp_path: Path
) -> None:
    for args in (
        [
            "init",
            "--db",
            url,
            "--admin-email",
            "a@b.org",
            "--admin-password-file",
            str(password_file),
        ],
        ["token", "create", "--db", url, "--email", "a@b.org"],
    ):
        result = harmone(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [password_file]  # nothing created


def test_missing_database_exits_2(password_file: Path) -> None:
    result = harmone(
        "init", "--admin-email", "a@b.org", "--admin-password-file", str(password_file)
    )
    assert result.returncode == 2
    assert "HARMONE_DB" in result.stderr


def test_unreachable_database_exits_2(password_file: Path) -> None:
    result = harmone(
        "token", "create", "--db", "postgresql://nobody@127.0.0.1:1/none", "--email", "a@b.org"
    )
    assert result.returncode == 2
    assert "cannot open database" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_refuses_a_short_password(db_url: str, tmp_path: Path) -> None:
    short = tmp_path / "pw"
    short.write_text("1234567\n", encoding="utf-8")
    result = harmone(
        "init", "--db", db_url, "--admin-email", "a@b.org", "--admin-password-file", str(short)
    )
    assert result.returncode == 2
    assert "at least 8 characters" in result.stderr


def test_token_for_unknown_user_or_uninitialised_database(db_url: str, password_file: Path) -> None:
    before = harmone("token", "create", "--db", db_url, "--email", "root@example.org")
    assert before.returncode == 2
    assert "harmone init" in before.stderr
    init = harmone(
        "init",
        "--db",
        db_url,
        "--admin-email",
        "root@example.org",
        "--admin-password-file",
        str(password_file),
    )
    assert init.returncode == 0, init.stderr
    unknown = harmone("token", "create", "--db", db_url, "--email", "nobody@example.org")
    assert unknown.returncode == 2
    assert "no user with e-mail 'nobody@example.org'" in unknown.stderr
    assert unknown.stdout == ""


# In process too: the same functions, without a subprocess, for exact assertions.


async def test_admin_functions_in_process(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="at least 8"):
        await init_database(db_url, "root@example.org", "")
    with pytest.raises(StoreError, match="harmone init"):
        await create_token(db_url, "root@example.org")
    assert await init_database(db_url, "root@example.org", PASSWORD) == 0
    assert await init_database(db_url, "root@example.org", "different password") == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "harmone: admin user root@example.org created",
        "harmone: user root@example.org already present (admin), left unchanged",
    ]
    assert await create_token(db_url, "ROOT@example.org") == 0
    token = capsys.readouterr().out
    assert token.count("\n") == 1
    with pytest.raises(NotFound):
        await create_token(db_url, "nobody@example.org")
    async with await Store.open(db_url) as store:
        assert await Accounts(store).user_for_token(token.strip()) is not None
