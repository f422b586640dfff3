"""The README's first ten minutes, checked against the files it describes (issue 10, items 10
and 12): a newcomer follows it literally, so its order and its lists must be true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# What creates .venv: the two set-up scripts (they run `python -m venv .venv`) or venv itself.
_CREATES_VENV = re.compile(r"bash scripts/(run|test)\b|-m venv \.venv")
_USES_VENV = re.compile(r"\.venv/bin/")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _indented_commands(text: str) -> list[str]:
    """The lines of the section's code blocks (indented by four spaces), comments dropped."""
    lines = []
    for line in text.splitlines():
        if line.startswith("    ") and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def _first(pattern: re.Pattern[str], lines: list[str]) -> int | None:
    return next((i for i, line in enumerate(lines) if pattern.search(line)), None)


def test_scripts_create_the_venv_they_are_documented_to_install_into() -> None:
    for script in ("run", "test"):
        text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
        assert re.search(r"-m venv \.venv", text), f"scripts/{script} no longer creates .venv"


def test_the_quick_start_creates_the_venv_before_it_uses_it() -> None:
    commands = _indented_commands(_section("Quick start without hardware"))
    created = _first(_CREATES_VENV, commands)
    used = _first(_USES_VENV, commands)
    assert created is not None, "the quick start never installs HARMON-E"
    assert used is None or created < used, (
        f"the quick start uses .venv ({commands[used]!r}) before creating it"
    )


def _variables_read() -> set[str]:
    """Every HARMONE_* variable the package and the set-up scripts read."""
    found: set[str] = set()
    sources = [*(ROOT / "harmone").rglob("*.py"), ROOT / "scripts" / "run"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r"environ(?:\.get)?\(\s*\"(HARMONE_[A-Z_]+)\"", text))
        found |= set(re.findall(r"\$\{(HARMONE_[A-Z_]+)", text))
    return found


def test_every_environment_variable_harmone_reads_is_in_the_readme() -> None:
    read = _variables_read()
    # the search itself must find what cli.py is known to read, or it proves nothing
    assert {"HARMONE_DB", "HARMONE_HOST", "HARMONE_PORT", "HARMONE_ADMIN_EMAIL"} <= read
    missing = sorted(v for v in read if f"`{v}" not in README and f"${v}" not in README)
    assert not missing, f"read by HARMON-E but not in the README: {missing}"


def test_the_readme_says_how_to_get_another_token_and_that_tests_install_chromium() -> None:
    setup = _section("Set-up: two commands")
    assert "harmone token create" in setup
    assert "chromium" in setup and "scripts/test" in setup
