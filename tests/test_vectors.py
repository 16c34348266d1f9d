"""Vectors from a finished mask: lakes (with an island) and roads that cross chunk seams come out
as one feature each, equal to the rasterised input within a pixel, the same for any strip height;
totals in km² and km; bad options give one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from geoseg.core.lines import network_ids, skeleton_segments
from geoseg.errors import StoreError
from geoseg.sinks import SceneLayout, complete_group, prepare_group, vector_frame, write_block

UTM = 'EPSG:32633'
UTM_TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
GEO_TRANSFORM = (0.0001, 0.0, 8.5, 0.0, -0.0001, 47.4)


def _crs_wkt(crs: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt() if crs else ""


def mask_store(out: Path, mask: np.ndarray, chunk: int, classes: tuple[str, ...], crs: str = UTM,
               transform: tuple[float, ...] = UTM_TRANSFORM, name: str = "s") -> Path:  # fmt: skip
    """A finished scene group whose ``mask`` is ``mask`` ((Y, X) uint8), chunked ``chunk`` px."""
    layout = SceneLayout(name, mask.shape, chunk, classes, _crs_wkt(crs), transform)
    prepare_group(out, layout, "test", {"model": {"classes": list(classes)}})
    write_block(out, name, (0, 0, *mask.shape), {"mask": mask})
    complete_group(out, name, {})
    return out


def lakes(shape_yx: tuple[int, int] = (300, 320)) -> np.ndarray:
    """A lake over the chunk corner (128, 128) with an island, and a small lake apart."""
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    big = (yy - 128) ** 2 + (xx - 128) ** 2 < 60**2
    island = (yy - 120) ** 2 + (xx - 135) ** 2 < 12**2
    small = (yy - 250) ** 2 + (xx - 270) ** 2 < 15**2
    return ((big & ~island) | small).astype(np.uint8)


ROADS = [((20.5, 100.5), (290.5, 100.5)), ((150.5, 12.5), (150.5, 285.5)), ((40.5, 30.5), (260.5, 250.5))]
"""Centre lines (x, y) in pixel coordinates, through pixel centres: two crossing roads and a diagonal."""


def roads(shape_yx: tuple[int, int] = (300, 310), half_width: float = 2.5) -> np.ndarray:
    """Roads 5 px wide (every pixel within ``half_width`` of a centre line), crossing chunk seams."""
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]] + 0.5
    pts = shapely.points(xx.ravel(), yy.ravel())
    centre = shapely.multilinestrings([shapely.linestrings([a, b]) for a, b in ROADS])
    near = shapely.distance(centre, pts).reshape(shape_yx) <= half_width
    return near.astype(np.uint8)


def _rasterise(frame: Any, shape_yx: tuple[int, int], transform: tuple[float, ...]) -> np.ndarray:
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    shapes = [(g, 1) for g in frame.geometry]
    return rasterize(shapes, out_shape=shape_yx, transform=Affine(*transform), dtype="uint8")


def test_a_lake_with_an_island_across_seams_is_one_polygon_equal_to_its_pixels(tmp_path: Path) -> None:
    mask = lakes()
    store = mask_store(tmp_path / "o.zarr", mask, 64, ("other", "water"))
    frame, totals = vector_frame(store, "s")
    assert len(frame) == 2 and list(frame["id"]) == [1, 2] and list(frame["class"]) == ["water", "water"]
    lake = frame.geometry.iloc[0]
    assert lake.geom_type == "Polygon" and len(lake.interiors) == 1, "one polygon, the island a hole"
    np.testing.assert_array_equal(_rasterise(frame, mask.shape, UTM_TRANSFORM), mask)
    np.testing.assert_allclose(frame["area_m2"], frame["pixels"] * 100.0)
    assert frame["pixels"].sum() == mask.sum()
    assert frame.crs.to_epsg() == 32633
    assert totals.features == 2 and totals.area_km2 == pytest.approx(mask.sum() * 100.0 / 1e6)
    assert "2, " in totals.line() and "km²" in totals.line()
    for chunk in (32, 512):
        other, _ = vector_frame(mask_store(tmp_path / f"{chunk}.zarr", mask, chunk, ("other", "water")), "s")
        assert all(a.equals(b) for a, b in zip(frame.geometry, other.geometry, strict=True))


def test_simplify_in_metres_keeps_holes_and_areas_close(tmp_path: Path) -> None:
    store = mask_store(tmp_path / "o.zarr", lakes(), 64, ("other", "water"))
    exact, _ = vector_frame(store, "s")
    simple, totals = vector_frame(store, "s", simplify_m=15.0)
    assert totals.simplify_m == 15.0
    assert sum(len(g.exterior.coords) for g in simple.geometry) < sum(len(g.exterior.coords) for g in exact.geometry) / 3
    assert len(simple.geometry.iloc[0].interiors) == 1
    np.testing.assert_allclose(simple["area_m2"], exact["area_m2"], rtol=0.05)  # 1.5 px on a 15 px lake


def test_areas_and_lengths_in_a_geographic_crs_are_geodesic(tmp_path: Path) -> None:
    from geoseg._instances import pixel_area

    mask = lakes()
    store = mask_store(tmp_path / "g.zarr", mask, 64, ("other", "water"), "EPSG:4326", GEO_TRANSFORM)
    frame, totals = vector_frame(store, "s")
    rows = pixel_area(_crs_wkt("EPSG:4326"), GEO_TRANSFORM, 0, mask.shape[0])
    expected = float((mask.sum(axis=1) * rows).sum())
    assert totals.geodesic and totals.area_km2 == pytest.approx(expected / 1e6, rel=1e-4)
    road = roads()
    lines, ltotals = vector_frame(mask_store(tmp_path / "r.zarr", road, 64, ("other", "road"), "EPSG:4326", GEO_TRANSFORM),
                                  "s", "lines")  # fmt: skip
    geod = lines.crs.get_geod()
    assert ltotals.geodesic and ltotals.length_km == pytest.approx(sum(geod.geometry_length(g) for g in lines.geometry) / 1e3)


def test_roads_across_seams_are_one_network_of_continuous_centre_lines(tmp_path: Path) -> None:
    road = roads()
    transform = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # pixel coordinates, to measure in pixels
    frame, totals = vector_frame(mask_store(tmp_path / "r.zarr", road, 64, ("other", "road"), "", transform), "s", "lines")
    assert len(frame) == 1 and totals.features == 1 and list(frame["class"]) == ["road"]
    net = frame.geometry.iloc[0]
    assert net.geom_type == "MultiLineString"
    assert shapely.union_all(list(net.geoms)).buffer(0.01).geom_type == "Polygon", "continuous: no gap at any seam"
    assert shapely.union_all(list(net.geoms)).length == pytest.approx(net.length), "no segment twice"
    centre = shapely.multilinestrings([shapely.linestrings([a, b]) for a, b in ROADS])
    vertices = shapely.points(shapely.get_coordinates(net))
    off = shapely.distance(centre, vertices)
    crossings = shapely.points([(150.5, 100.5), (110.5, 100.5), (150.5, 140.5)])  # where the roads cross
    at_crossing = shapely.distance(shapely.multipoints(crossings), vertices) <= 2 * 2.5 + 1
    assert off[~at_crossing].max() <= 1.0, "every vertex within 1 px of the true centre line"
    assert off[at_crossing].max() <= 1.5, "where roads cross, a skeleton's junctions move by 1 to 2 px"
    probe = shapely.points(
        np.concatenate([shapely.get_coordinates(shapely.segmentize(shapely.linestrings([a, b]), 1.0))[4:-4] for a, b in ROADS])
    )
    back = shapely.distance(net, probe)
    near = shapely.distance(shapely.multipoints(crossings), probe) <= 2 * 2.5 + 1
    assert back[~near].max() <= 1.0, "the true centre line (ends aside) within 1 px of the lines"
    assert back[near].max() <= 2.0
    true_length = sum(float(np.hypot(b[0] - a[0], b[1] - a[1])) for a, b in ROADS)
    assert net.length == pytest.approx(true_length, rel=0.05)
    for chunk in (32, 512):  # any strip height: the same lines
        other, _ = vector_frame(mask_store(tmp_path / f"{chunk}.zarr", road, chunk, ("other", "road"), "", transform),
                                "s", "lines")  # fmt: skip
        assert shapely.normalize(other.geometry.iloc[0]).equals(shapely.normalize(net))


def test_skeleton_segments_of_strips_are_those_of_the_whole() -> None:
    rng = np.random.default_rng(0)
    skel = rng.random((50, 40)) < 0.3
    whole = skeleton_segments(skel, 0)
    parts, above = [], None
    for y0 in range(0, 50, 7):
        parts.append(skeleton_segments(skel[y0 : y0 + 7], y0, above))
        above = skel[min(y0 + 7, 50) - 1]
    strips = np.concatenate(parts)
    np.testing.assert_array_equal(strips[np.lexsort(strips.T[::-1])], whole)
    ids, n = network_ids(whole, 40)
    ids2, n2 = network_ids(strips[np.lexsort(strips.T[::-1])], 40)
    assert n == n2 and (ids == ids2).all()


def test_bad_vector_options_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geoseg.cli import main

    store = mask_store(tmp_path / "o.zarr", lakes(), 64, ("other", "water"))
    plain = mask_store(tmp_path / "p.zarr", lakes(), 64, ("other", "water"), "", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    with pytest.raises(StoreError, match=r"geometry 'points' is not one of polygons, lines: use polygons for areas"):
        vector_frame(store, "s", "points")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"--simplify -1.0 is not a distance in metres >= 0"):
        vector_frame(store, "s", simplify_m=-1.0)
    base = ["export", "--name", "s", "--out", str(tmp_path / "x.gpkg")]
    cases = [
        ([str(store), "--format", "gpkg", "--simplify", "-5"], 2, "argument --simplify: invalid distance in metres (>= 0) value: '-5'"),
        ([str(store), "--format", "gpkg", "--simplify", "nan"], 2, "argument --simplify: invalid distance in metres"),
        ([str(store), "--format", "gpkg", "--geometry", "points"], 2, "argument --geometry: invalid choice: 'points'"),
        ([str(plain), "--format", "gpkg", "--simplify", "10"], 2, "has no CRS, so --simplify in metres has no meaning there"),
        ([str(store), "--format", "gpkg", "--class", "road"], 2, "has no class 'road' (classes: other, water); give --class"),
        ([str(store), "--format", "cog", "--geometry", "lines"], 2, "--geometry, --class and --simplify are for vector formats"),
        ([str(store), "--format", "gpkg", "--array", "probs"], 2, "--array probs is for --format cog, nifti or table"),
        ([str(store), "--format", "table", "--array", "objects"], 2, "--format table writes CSV or Parquet, chosen by the suffix; name it x.csv or x.parquet"),
    ]
    for args, code, message in cases:
        with pytest.raises(SystemExit) if code == 2 and "argument" in message else _nothing():
            rc = main([*base[:1], *args, *base[1:]])
            assert rc == code, (args, rc)
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (args, err)
    assert not (tmp_path / "x.gpkg").exists(), "no output where the options are bad"
    gj = tmp_path / "x.geojson"
    assert main(["export", str(plain), "--name", "s", "--format", "geojson", "--out", str(gj)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no CRS, and GeoJSON coordinates are EPSG:4326 (RFC 7946)" in err and not gj.exists()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_gpkg_geoparquet_geojson_carry_crs_features_and_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    import geopandas as gpd
    import pyarrow.parquet as pq
    import pyogrio

    from geoseg.cli import main

    store = mask_store(tmp_path / "o.zarr", roads(), 64, ("other", "road"))
    gpkg = tmp_path / "roads.gpkg"
    assert main(["export", str(store), "--name", "s", "--format", "gpkg", "--geometry", "lines", "--out", str(gpkg)]) == 0
    out = capsys.readouterr().out
    assert "s: road centre lines: 1 networks," in out and " km" in out and f"wrote {gpkg}" in out
    layers = dict(pyogrio.list_layers(gpkg))
    assert layers["road"] == "MultiLineString" and "totals" in layers
    frame = gpd.read_file(gpkg, layer="road")
    assert len(frame) == 1 and frame.crs.to_epsg() == 32633 and frame["length_m"].iloc[0] > 0
    totals = gpd.read_file(gpkg, layer="totals")
    assert totals["features"].iloc[0] == 1 and totals["length_km"].iloc[0] == pytest.approx(frame["length_m"].iloc[0] / 1e3)
    pq_out = tmp_path / "w.parquet"
    water = mask_store(tmp_path / "w.zarr", lakes(), 64, ("other", "water"))
    assert main(["export", str(water), "--name", "s", "--format", "geoparquet", "--out", str(pq_out)]) == 0
    assert b"geoseg:totals" in pq.read_schema(pq_out).metadata
    assert gpd.read_parquet(pq_out).crs.to_epsg() == 32633
    gj = tmp_path / "w.geojson"
    assert main(["export", str(water), "--name", "s", "--format", "geojson", "--out", str(gj)]) == 0
    assert gpd.read_file(gj).crs.to_epsg() == 4326
    assert [name for name, _ in pyogrio.list_layers(gj)] == ["water"], "the layer is named, not after a temporary file"
    umask = os.umask(0)
    os.umask(umask)
    for f in (gpkg, pq_out, gj):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f"{f.name}: an export's mode follows the umask"


def test_an_out_name_that_promises_another_format_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geoseg.cli import main

    store = mask_store(tmp_path / "o.zarr", lakes(), 64, ("other", "water"))
    out = tmp_path / "lakes.gpkg"
    assert main(["export", str(store), "--name", "s", "--format", "geoparquet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--out {out} is named as gpkg, but --format is geoparquet; pass --format gpkg" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["export", str(store), "--name", "s", "--out", str(tmp_path / "lakes.tif")]) == 0, "cog by default"
