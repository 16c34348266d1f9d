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


def test_url_typos_and_credentials_are_caught_in_the_spec_without_repeating_secrets() -> None:
    import pytest

    from geoseg.errors import SpecError
    from geoseg.spec import parse_spec

    def spec(inp: str, out: str) -> object:
        return parse_spec({"inputs": [inp], "output": out, "model": {"name": "ndwi"}})

    assert spec("s3://b/x.tif", "S3://b/o.zarr").output == "s3://b/o.zarr"  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match=r"output: s3:/b/o.zarr has one slash after s3:, which would be a local folder"):
        spec("s3://b/x.tif", "s3:/b/o.zarr")
    for inp, out in (("s3://KEY:SECRET@b/x.tif", "/tmp/o.zarr"), ("s3://b/x.tif", "s3://KEY:SECRET@b/o.zarr")):
        with pytest.raises(SpecError, match=r"s3://\*\*\*@b/.*credentials in the URL are never used") as e:
            spec(inp, out)
        assert "SECRET" not in str(e.value) and "KEY" not in str(e.value).replace("AWS_ACCESS_KEY_ID", "")
