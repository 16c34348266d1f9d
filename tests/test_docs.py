"""The docs say what the program does: every --help pasted in docs/cli.md is the real one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from geoseg.cli import build_parser, main

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BLOCKS = re.findall(r"<summary><code>geoseg ?(\w*) ?--help</code></summary>\n\n```text\n(.*?)\n```", CLI_MD.read_text(), re.S)


def _help(cmd: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", ["geoseg"])
    with pytest.raises(SystemExit):
        main([*([cmd] if cmd else []), "--help"])
    return capsys.readouterr().out.rstrip("\n")


@pytest.mark.parametrize(("cmd", "text"), BLOCKS, ids=[c or "top" for c, _ in BLOCKS])
def test_pasted_help_is_current(cmd: str, text: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _help(cmd, capsys, monkeypatch) == text, f"docs/cli.md: regenerate the help of 'geoseg {cmd}'"


def test_every_command_is_documented() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= {c for c, _ in BLOCKS}
