"""Regenerate every ``geoseg ... --help`` block pasted in docs/cli.md (tests/test_docs.py checks them).

    python docs/scripts/cli_help.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geoseg.cli import main  # noqa: E402

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BLOCK = re.compile(r"(<summary><code>geoseg ?(\w*) ?--help</code></summary>\n\n```text\n)(.*?)(\n```)", re.S)


def _help(cmd: str) -> str:
    os.environ["COLUMNS"] = "80"
    sys.argv = ["geoseg"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*([cmd] if cmd else []), "--help"])
    return out.getvalue().rstrip("\n")


def main_() -> None:
    text = CLI_MD.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + _help(m.group(2)) + m.group(4), text)
    CLI_MD.write_text(new)
    print(f"{CLI_MD}: {len(BLOCK.findall(text))} help blocks, {'changed' if new != text else 'unchanged'}")


if __name__ == "__main__":
    main_()
