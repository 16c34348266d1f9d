"""A library's message in a geoseg error line: its first line, without the path geoseg names itself."""

from __future__ import annotations

from pathlib import Path

from geoseg.errors import first_line


def test_first_line_cuts_the_path_and_the_following_lines() -> None:
    p = Path("/data/a b/empty.tif")
    e = OSError(f"'{p}' not recognized as being in a supported file format.\nmore GDAL detail")
    assert first_line(e, p) == "not recognized as being in a supported file format."
    assert first_line(ValueError(f"{p}: truncated"), p) == "truncated"
    assert first_line(ValueError("no path here\nsecond"), p) == "no path here"
    assert first_line(KeyError(), p) == "KeyError"
    assert first_line(ValueError(f"'{p}'"), p) == "ValueError"
