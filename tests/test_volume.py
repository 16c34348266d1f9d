"""Reorientation to RAS and back, and foreground z-scoring: invariants on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.orientations import aff2axcodes

from geoseg.core.volume import Orientation, check_affine, foreground_mask, orientation_of, zscore_foreground
from geoseg.errors import InputError


def _rot(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _affine(columns: np.ndarray, origin: tuple[float, float, float] = (-10.0, 20.0, 5.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = columns
    aff[:3, 3] = origin
    return aff


ZOO = {
    "ras": _affine(np.eye(3)),
    "lps": _affine(np.diag([-1.0, -1.0, 1.0])),
    "flip_y": _affine(np.diag([1.0, -1.0, 1.0])),
    "lpi_anisotropic": _affine(np.diag([-0.9, -0.9, -3.0])),
    "oblique_20deg_x": _affine(_rot(0, 20.0) @ np.diag([1.0, 1.2, 1.5])),
    "oblique_20deg_z_lps": _affine(_rot(2, 20.0) @ np.diag([-0.9, -0.9, 3.0])),
    # voxel axis 0 points S, axis 1 R, axis 2 P: a sagittal-first acquisition
    "permuted_srp": _affine(np.array([[0.0, 0.9, 0.0], [0.0, 0.0, -0.9], [3.0, 0.0, 0.0]])),
    "permuted_oblique_ail": _affine(
        _rot(1, -15.0) @ np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    ),
}
SHAPE = (5, 6, 7)


@pytest.fixture(params=sorted(ZOO))
def case(request: pytest.FixtureRequest) -> tuple[str, np.ndarray]:
    return request.param, ZOO[request.param]


def test_round_trip_is_exact(case: tuple[str, np.ndarray]) -> None:
    _, aff = case
    o = orientation_of(aff)
    rng = np.random.default_rng(0)
    v = rng.normal(size=SHAPE).astype(np.float32)
    r = o.to_ras(v)
    assert r.shape == o.ras_shape(SHAPE)
    back = o.from_ras(r)
    assert back.shape == v.shape and back.dtype == v.dtype
    assert np.array_equal(back, v)
    # leading channel axes ride along untouched
    vc = rng.integers(0, 1000, size=(2, 3, *SHAPE))
    rc = o.to_ras(vc)
    assert rc.shape == (2, 3, *o.ras_shape(SHAPE))
    assert np.array_equal(rc[1, 2], o.to_ras(vc[1, 2]))
    assert np.array_equal(o.from_ras(rc), vc)


def test_ras_frame_points_r_a_s(case: tuple[str, np.ndarray]) -> None:
    name, aff = case
    o = orientation_of(aff)
    assert o.codes == aff2axcodes(aff), name
    ras_aff = o.ras_affine(aff, SHAPE)
    assert aff2axcodes(ras_aff) == ("R", "A", "S"), name
    # the third RAS voxel axis (axial slices vol[..., k]) has S as its largest world component
    assert int(np.argmax(np.abs(ras_aff[:3, 2]))) == 2 and ras_aff[2, 2] > 0


def test_ras_frame_keeps_world_positions(case: tuple[str, np.ndarray]) -> None:
    """Voxel (i, j, k) of the RAS volume sits at the same world point as its source voxel."""
    _, aff = case
    o = orientation_of(aff)
    v = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    r = o.to_ras(v)
    ras_aff = o.ras_affine(aff, SHAPE)
    inv = np.linalg.inv(aff)
    for idx in np.ndindex(r.shape):
        world = ras_aff @ np.array([*idx, 1.0])
        src = inv @ world
        src_idx = np.round(src[:3]).astype(int)
        assert np.allclose(src[:3], src_idx, atol=1e-6)
        assert r[idx] == v[tuple(src_idx)]


def test_ras_input_is_unchanged() -> None:
    o = orientation_of(ZOO["ras"])
    assert o.is_ras and not orientation_of(ZOO["lps"]).is_ras
    v = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(o.to_ras(v), v)


def test_orientation_is_a_value() -> None:
    o = orientation_of(ZOO["lps"])
    assert o == Orientation(((0, -1), (1, -1), (2, 1)))
    assert hash(o) == hash(Orientation(((0, -1), (1, -1), (2, 1))))
    assert o.inverse.inverse == o
    with pytest.raises(InputError, match="once each"):
        Orientation(((0, 1), (0, 1), (2, 1)))
    with pytest.raises(InputError, match="X, Y, Z"):
        o.to_ras(np.zeros((3, 3)))


@pytest.mark.parametrize(
    "bad, what",
    [
        (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (_affine(np.array([[1.0, 1.0, 0.0], [0.0, 1e-9, 0.0], [0.0, 0.0, 1.0]])), "singular"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN/inf"),
        (np.eye(3), "not 4x4"),
    ],
)
def test_bad_affine_names_the_file(bad: np.ndarray, what: str) -> None:
    with pytest.raises(InputError, match=what) as e:
        orientation_of(bad, path="/data/case7/flair.nii.gz")
    assert "/data/case7/flair.nii.gz" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError):
        check_affine(bad)


def _phantom(background: float, scale: float = 1.0) -> np.ndarray:
    """A (20, 22, 18) volume: a textured ellipsoid on a constant background."""
    rng = np.random.default_rng(3)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (20, 22, 18)), indexing="ij")
    inside = x**2 / 0.6 + y**2 / 0.5 + z**2 / 0.7 < 1.0
    tissue = rng.uniform(10.0, 100.0, size=x.shape)
    v = np.where(inside, tissue * scale + background, background)
    return v.astype(np.float32)


def test_foreground_zero_and_constant_background_agree() -> None:
    raw = _phantom(0.0)
    shifted = _phantom(-7.25, scale=0.03)  # z-scored-like: constant, non-zero background
    m_raw, m_shifted = foreground_mask(raw), foreground_mask(shifted)
    truth = raw != 0
    assert np.array_equal(m_raw, truth) and np.array_equal(m_shifted, truth)
    assert 0 < truth.sum() < truth.size
    z_raw = zscore_foreground(raw, m_raw)
    z_shifted = zscore_foreground(shifted, m_shifted)
    assert z_raw.dtype == np.float32 and z_shifted.dtype == np.float32
    assert np.allclose(z_raw, z_shifted, atol=1e-4)
    assert np.all(z_raw[~truth] == 0.0) and np.all(z_shifted[~truth] == 0.0)
    fg = z_raw[truth].astype(np.float64)
    assert abs(fg.mean()) < 1e-5 and abs(fg.std() - 1.0) < 1e-5


def test_foreground_integer_volume() -> None:
    v = np.zeros((6, 6, 6), np.uint16)
    v[2:4, 2:4, 2:4] = 500
    v[2, 2, 2] = 1  # differs from background 0 even though tiny
    assert int(foreground_mask(v).sum()) == 8


def test_foreground_background_is_border_mode_not_zero() -> None:
    v = np.full((8, 8, 8), 5.0, np.float32)
    v[2:6, 2:6, 2:6] = 0.0  # zero inside the object is foreground here
    v[3, 3, 3] = 9.0
    m = foreground_mask(v)
    assert int(m.sum()) == 64 and not m[0, 0, 0]


def test_zscore_channels_share_the_mask() -> None:
    a, b = _phantom(0.0), _phantom(3.0, scale=2.0)
    mask = foreground_mask(a)
    z = zscore_foreground(np.stack([a, b]), mask)
    assert z.shape == (2, *a.shape) and z.dtype == np.float32
    assert np.allclose(z[0], zscore_foreground(a, mask)) and np.allclose(z[0], z[1], atol=1e-4)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nonfinite_volume_names_the_file(bad_value: float) -> None:
    v = _phantom(0.0)
    v[10, 10, 10] = bad_value
    for call in (lambda: foreground_mask(v, path="/x/t1.nii.gz"),
                 lambda: zscore_foreground(v, v != 0, path="/x/t1.nii.gz")):
        with pytest.raises(InputError, match="NaN/inf") as e:
            call()
        assert "/x/t1.nii.gz" in str(e.value)


def test_zscore_rejects_empty_constant_and_mismatched() -> None:
    v = _phantom(0.0)
    with pytest.raises(InputError, match="empty") as e:
        zscore_foreground(v, np.zeros(v.shape, bool), path="/x/flair.nii")
    assert "/x/flair.nii" in str(e.value)
    flat = np.where(v != 0, 4.0, 0.0)
    with pytest.raises(InputError, match="constant"):
        zscore_foreground(flat, flat != 0, path="/x/flair.nii")
    with pytest.raises(InputError, match="do not fit"):
        zscore_foreground(v, np.ones((3, 3, 3), bool))
    with pytest.raises(InputError, match="one channel at a time"):
        foreground_mask(np.stack([v, v]))
    # a constant volume has no foreground at all
    assert not foreground_mask(np.full((4, 4, 4), 2.5)).any()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=9, max_size=9),
    st.permutations([0, 1, 2]),
    st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3),
)
def test_orientation_arithmetic_equals_nibabel(noise: list[float], perm: list[int], signs: list[float]) -> None:
    """geoseg.core imports no nibabel: its io_orientation / inv_ornt_aff / axis codes must give
    nibabel's answers, for permuted, flipped, oblique and sheared affines."""
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt2axcodes

    from geoseg.core.volume import _inv_ornt_aff, _io_orientation

    rzs = np.eye(3)[:, perm] * np.array(signs) * np.array([1.0, 1.3, 2.5]) + 0.15 * np.reshape(noise, (3, 3))
    if abs(np.linalg.det(rzs)) < 1e-3:
        return
    aff = np.eye(4)
    aff[:3, :3] = rzs
    ours, theirs = _io_orientation(aff), io_orientation(aff)
    assert np.array_equal(ours, theirs)
    shape = (7, 11, 5)
    assert np.allclose(_inv_ornt_aff(ours, shape), inv_ornt_aff(theirs, shape))
    assert orientation_of(aff).codes == tuple(ornt2axcodes(theirs))
