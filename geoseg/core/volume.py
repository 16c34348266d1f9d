"""Volume geometry and intensities: reorientation to RAS and foreground z-scoring, arrays only.

Pure code: numpy only (no file I/O, no nibabel). The orientation arithmetic follows
``nibabel.orientations`` (MIT licence), which the tests compare it against. Volumes are in a
file's voxel order ``(X, Y, Z)``, optionally with leading channel axes ``(C, X, Y, Z)``.
:class:`Orientation` moves them to the RAS frame (voxel axes pointing Right, Anterior, Superior, so axial slices
are ``vol[..., k]``) and back with flips and transposes only: no resampling, and
``from_ras(to_ras(v))`` is ``v`` voxel for voxel.

>>> lps = orientation_of(np.diag([-1.0, -1.0, 1.0, 1.0]))
>>> lps.codes
('L', 'P', 'S')
>>> v = np.arange(8).reshape(2, 2, 2)
>>> r = lps.to_ras(v)
>>> int(r[1, 1, 0]) == int(v[0, 0, 0])
True
>>> np.array_equal(lps.from_ras(r), v)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError

__all__ = [
    "normalise_case",
    "slice_stack",
    "Orientation",
    "check_affine",
    "orientation_of",
    "voxel_volume_mm3",
    "foreground_mask",
    "zscore_foreground",
]

_SINGULAR_RTOL = 1e-6
"""An affine whose ``|det|`` is below this fraction of the product of its column lengths is
singular: its voxel axes are (nearly) parallel or of zero length."""

_FOREGROUND_RTOL = 1e-6
"""Foreground voxels differ from the background value by more than this fraction of the range."""


def _io_orientation(affine: np.ndarray) -> np.ndarray:
    """(3, 2) float array: for each voxel axis, the world axis it runs along most and its sign.

    ``nibabel.orientations.io_orientation``: the nearest shear-free rotation of the affine's
    (column-normalised) 3x3 part by polar decomposition (SVD), then each voxel axis takes the
    world axis of its largest component, axes taken in voxel order and never twice. NaN rows
    for a voxel axis with no direction.
    """
    rzs = np.asarray(affine, np.float64)[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    rs = rzs / zooms
    p, s, qs = np.linalg.svd(rs)
    keep = s > s.max() * 3 * np.finfo(s.dtype).eps
    r = p[:, keep] @ qs[keep]
    ornt = np.full((3, 2), np.nan)
    for in_ax in range(3):
        col = r[:, in_ax]
        if not np.allclose(col, 0):
            out_ax = int(np.argmax(np.abs(col)))
            ornt[in_ax] = (out_ax, -1.0 if col[out_ax] < 0 else 1.0)
            r[out_ax, :] = 0
    return ornt


def _inv_ornt_aff(ornt: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(4, 4) affine from the voxel grid reoriented by ``ornt`` to the original voxel grid
    (``nibabel.orientations.inv_ornt_aff``): undo the transpose, then the flips about the centre."""
    p = ornt.shape[0]
    size = np.asarray(shape, np.float64)[:p]
    undo_reorder = np.eye(p + 1)[[int(v) for v in ornt[:, 0]] + [p], :]
    undo_flip = np.diag([*ornt[:, 1].tolist(), 1.0])
    centre = -(size - 1) / 2.0
    undo_flip[:p, p] = ornt[:, 1] * centre - centre
    return undo_flip @ undo_reorder


def _where(path: str | None) -> str:
    return str(path) if path else "volume"


@dataclass(frozen=True)
class Orientation:
    """How a file's voxel axes map onto RAS, as a nibabel orientation ``ornt``.

    ``ornt[i] = (j, f)``: voxel axis ``i`` of the file becomes RAS axis ``j`` (0 R, 1 A, 2 S),
    reversed when ``f`` is -1. Build it with :func:`orientation_of`.
    """

    ornt: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        try:
            ornt = tuple((int(j), int(f)) for j, f in self.ornt)
        except (TypeError, ValueError):
            raise InputError(
                f"orientation {self.ornt!r} is not 3 (axis, flip) pairs; build it with orientation_of(affine)"
            ) from None
        if sorted(j for j, _ in ornt) != [0, 1, 2] or any(f not in (-1, 1) for _, f in ornt):
            raise InputError(
                f"orientation {ornt} must map the 3 voxel axes onto R, A, S once each with flips of "
                f"+1/-1; build it with orientation_of(affine)"
            )
        object.__setattr__(self, "ornt", ornt)

    @property
    def array(self) -> np.ndarray:
        """The orientation as nibabel's ``(3, 2)`` float array."""
        return np.asarray(self.ornt, dtype=np.float64)

    @property
    def codes(self) -> tuple[str, ...]:
        """Axis codes of the file's voxel axes, as ``nibabel.aff2axcodes`` gives them: ``('L', 'P', 'S')``."""
        labels = (("L", "R"), ("P", "A"), ("I", "S"))
        return tuple(labels[j][1 if f == 1 else 0] for j, f in self.ornt)

    @property
    def is_ras(self) -> bool:
        """True when the file is already in RAS voxel order (``to_ras`` returns its input)."""
        return self.ornt == ((0, 1), (1, 1), (2, 1))

    @property
    def inverse(self) -> Orientation:
        """The orientation taking RAS back to the file's voxel order."""
        inv = [(0, 1)] * 3
        for i, (j, f) in enumerate(self.ornt):
            inv[j] = (i, f)
        return Orientation(tuple(inv))

    def to_ras(self, vol: np.ndarray) -> np.ndarray:
        """Reorient ``vol`` (..., X, Y, Z) in the file's voxel order to (..., R, A, S).

        Flips and transposes of the last three axes only; leading (channel) axes keep their
        place. Returns a view of ``vol``, not a copy.
        """
        return _apply(vol, self.ornt)

    def from_ras(self, vol: np.ndarray) -> np.ndarray:
        """Undo :meth:`to_ras`: (..., R, A, S) back to the file's (..., X, Y, Z), exactly. A view."""
        return _apply(vol, self.inverse.ornt)

    def ras_shape(self, shape_xyz: Sequence[int]) -> tuple[int, int, int]:
        """Shape of a file-order ``(X, Y, Z)`` volume once reoriented to RAS."""
        if len(shape_xyz) != 3:
            raise InputError(f"shape {tuple(shape_xyz)} is not (X, Y, Z): give the 3 spatial sizes")
        out = [0, 0, 0]
        for i, (j, _) in enumerate(self.ornt):
            out[j] = int(shape_xyz[i])
        return out[0], out[1], out[2]

    def ras_affine(self, affine: np.ndarray, shape_xyz: Sequence[int]) -> np.ndarray:
        """The (4, 4) affine of the RAS-reoriented volume: the same world points, new voxel order.

        ``affine`` and ``shape_xyz`` are the file's. For an oblique affine the RAS axes are the
        nearest ones, so ``nibabel.aff2axcodes`` of the result is ``('R', 'A', 'S')``.
        """
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise InputError(f"affine of shape {aff.shape} is not 4x4: give the NIfTI voxel-to-world affine")
        if len(shape_xyz) != 3:
            raise InputError(f"shape {tuple(shape_xyz)} is not (X, Y, Z): give the 3 spatial sizes")
        return aff @ _inv_ornt_aff(self.array, tuple(int(s) for s in shape_xyz))


def _apply(vol: np.ndarray, ornt: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``nibabel.orientations.apply_orientation`` on the last three axes of ``vol``."""
    arr = np.asarray(vol)
    if arr.ndim < 3:
        raise InputError(
            f"array of shape {arr.shape} has no 3 spatial axes: give (X, Y, Z) or (C, X, Y, Z)"
        )
    lead = arr.ndim - 3
    for i, (_, f) in enumerate(ornt):
        if f == -1:
            arr = np.flip(arr, axis=lead + i)
    order = list(range(lead)) + [lead + i for i in np.argsort([j for j, _ in ornt])]
    return arr.transpose(order)


def check_affine(affine: np.ndarray, path: str | None = None) -> np.ndarray:
    """Return ``affine`` as a (4, 4) float64 array, or raise if it cannot place voxels in space.

    Raises:
        InputError: not 4x4, non-finite, or singular (a zero-length or (nearly) parallel voxel
            axis); the message names ``path`` when given.
    """
    where = _where(path)
    try:
        aff = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: affine {affine!r} is not numeric; give a 4x4 voxel-to-world matrix"
        ) from None
    if aff.shape != (4, 4):
        raise InputError(f"{where}: affine of shape {aff.shape} is not 4x4; give a 4x4 voxel-to-world matrix")
    if not np.all(np.isfinite(aff)):
        raise InputError(
            f"{where}: affine {_fmt_matrix(aff)} has NaN/inf entries; fix the sform/qform in the header"
        )
    rzs = aff[:3, :3]
    scale = float(np.prod(np.linalg.norm(rzs, axis=0)))
    det = float(np.linalg.det(rzs))
    if scale == 0.0 or abs(det) <= _SINGULAR_RTOL * scale:
        raise InputError(
            f"{where}: affine {_fmt_matrix(aff)} is singular (det {det:.3g}); fix the sform/qform in the "
            f"header so each voxel axis has a non-zero, independent direction"
        )
    return aff


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm³: ``|det|`` of the (4, 4) affine's 3x3 part.

    The column lengths give the spacing along each voxel axis, but their product is the volume
    only when the axes are orthogonal; a sheared affine (a tilted gantry) spans less.

    >>> round(voxel_volume_mm3(np.diag([2.0, 2.0, 2.0, 1.0])), 6)
    8.0
    >>> sheared = np.array([[1.0, 0, 0.45, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    >>> round(voxel_volume_mm3(sheared), 6), round(float(np.prod(np.linalg.norm(sheared[:3, :3], axis=0))), 6)
    (1.0, 1.096586)
    """
    return float(abs(np.linalg.det(np.asarray(affine, np.float64)[:3, :3])))


def orientation_of(affine: np.ndarray, path: str | None = None) -> Orientation:
    """The :class:`Orientation` of a voxel-to-world ``affine`` (nearest axes for oblique ones).

    Raises:
        InputError: the affine is singular or non-finite (see :func:`check_affine`).
    """
    aff = check_affine(affine, path)
    ornt = _io_orientation(aff)
    if not np.all(np.isfinite(ornt)):
        raise InputError(
            f"{_where(path)}: affine {_fmt_matrix(aff)} has no clear axis directions; fix the sform/qform"
        )
    return Orientation(tuple((int(j), int(f)) for j, f in ornt))


def _fmt_matrix(a: np.ndarray) -> str:
    """A matrix on one line: ``[[1, 0, 0, 0], [0, 1, 0, 0], ...]``."""
    return "[" + ", ".join("[" + ", ".join(f"{float(x):.6g}" for x in row) + "]" for row in a) + "]"


def _check_finite(vol: np.ndarray, path: str | None) -> None:
    if vol.dtype.kind in "fc":
        bad = vol.size - int(np.count_nonzero(np.isfinite(vol)))
        if bad:
            raise InputError(
                f"{_where(path)}: {bad} NaN/inf voxels of {vol.size}; replace them "
                f"(e.g. numpy.nan_to_num) or fix the file"
            )


def foreground_mask(vol: np.ndarray, path: str | None = None) -> np.ndarray:
    """Voxels of ``vol`` (X, Y, Z) that differ from the background: an (X, Y, Z) bool array.

    The background value is the most common value on the volume's six faces (the smallest one
    on a tie), so it may be 0 (raw scans) or any constant (z-scored files). Float voxels count
    as background within ``1e-6`` of the data range of it.

    >>> v = np.full((4, 4, 4), -3.5, np.float32)
    >>> v[1:3, 1:3, 1:3] = 2.0
    >>> int(foreground_mask(v).sum())
    8

    Raises:
        InputError: not 3-D, empty, or with NaN/inf voxels (naming ``path`` when given).
    """
    arr = np.asarray(vol)
    if arr.ndim != 3 or arr.size == 0:
        raise InputError(
            f"{_where(path)}: foreground_mask needs one (X, Y, Z) volume, got shape {arr.shape}; "
            f"pass one channel at a time"
        )
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{_where(path)}: voxel type {arr.dtype} is not numeric; convert to float32")
    _check_finite(arr, path)
    faces = np.concatenate(
        [f.ravel() for f in (arr[0], arr[-1], arr[:, 0], arr[:, -1], arr[:, :, 0], arr[:, :, -1])]
    )
    values, counts = np.unique(faces, return_counts=True)
    background = values[int(np.argmax(counts))]
    if arr.dtype.kind in "biu":
        return np.asarray(arr != background)
    span = float(np.max(arr)) - float(np.min(arr))
    return np.asarray(np.abs(arr - background) > _FOREGROUND_RTOL * span)


def zscore_foreground(vol: np.ndarray, mask: np.ndarray, path: str | None = None) -> np.ndarray:
    """``(v - mean) / std`` over the foreground ``mask``, background exactly 0.0, as float32.

    ``vol`` is (X, Y, Z) with ``mask`` (X, Y, Z), or (C, X, Y, Z) with one (X, Y, Z) mask shared
    by the channels, each channel then normalised by its own foreground statistics (computed
    in float64). Returns ``vol``'s shape in float32.

    >>> v = np.zeros((3, 3, 3))
    >>> v[1, 1, :] = [1.0, 2.0, 3.0]
    >>> z = zscore_foreground(v, v != 0)
    >>> [round(float(x), 4) for x in z[1, 1]], float(z[0, 0, 0]), z.dtype.name
    ([-1.2247, 0.0, 1.2247], 0.0, 'float32')

    Raises:
        InputError: shapes that do not match, NaN/inf voxels, or a foreground that is empty or
            constant (naming ``path`` when given).
    """
    where = _where(path)
    arr = np.asarray(vol)
    m = np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{where}: voxel type {arr.dtype} is not numeric; convert to float32")
    if m.ndim != 3 or arr.shape[-3:] != m.shape or arr.ndim not in (3, 4):
        raise InputError(
            f"{where}: volume of shape {arr.shape} and mask of shape {m.shape} do not fit; give "
            f"(X, Y, Z) or (C, X, Y, Z) with an (X, Y, Z) mask"
        )
    m = m.astype(bool, copy=False)
    _check_finite(arr, path)
    channels = arr[None] if arr.ndim == 3 else arr
    out = np.zeros(channels.shape, np.float32)
    for c, chan in enumerate(channels):
        label = where if arr.ndim == 3 else f"{where} channel {c}"
        fg = chan[m].astype(np.float64)
        if fg.size == 0:
            raise InputError(f"{label}: the foreground is empty (all voxels are background); check the mask")
        if fg.min() == fg.max():
            raise InputError(
                f"{label}: the foreground is constant ({fg.min():.6g} on {fg.size} voxels) and cannot be "
                f"z-scored; check that the right file/modality was given"
            )
        out[c][m] = ((fg - fg.mean()) / fg.std()).astype(np.float32)
    return out[0] if arr.ndim == 3 else out


def normalise_case(vol: np.ndarray, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Z-score a case's modalities over their shared foreground.

    Args:
        vol: (C, X, Y, Z) voxels of one case, any real dtype, any orientation.
        path: named in error messages.

    Returns:
        ``(image, mask)``: (C, X, Y, Z) float32, each channel ``(x - mean) / std`` over the
        foreground and 0 elsewhere; and the (X, Y, Z) bool foreground, the union of
        :func:`~geoseg.core.volume.foreground_mask` over the channels.

    >>> v = np.zeros((2, 4, 4, 4), np.float32); v[:, 1:3, 1:3, 1:3] = [[[[1.0, 3.0]]], [[[5.0, 9.0]]]]
    >>> image, mask = normalise_case(v)
    >>> int(mask.sum()), sorted(set(np.round(image[1][mask], 3).tolist()))
    (8, [-1.0, 1.0])
    """
    arr = np.asarray(vol)
    if arr.ndim != 4:
        raise InputError(
            f"{path or 'volume'}: shape {arr.shape} is not (C, X, Y, Z); stack the modalities first"
        )
    mask = np.zeros(arr.shape[1:], bool)
    for c in range(arr.shape[0]):
        mask |= foreground_mask(arr[c], path)
    return zscore_foreground(arr, mask, path), mask


def slice_stack(vol_ras: np.ndarray, k: int, context: int) -> np.ndarray:
    """The model input of axial slice ``k``: (C * (2 * context + 1), X, Y), same dtype.

    ``vol_ras`` is a normalised (C, X, Y, Z) volume in RAS voxel order. Channels are grouped
    by modality, then slice: ``[mod0 k-c, ..., mod0 k, ..., mod0 k+c, mod1 k-c, ..., mod1 k+c,
    ...]``; slice indices outside ``[0, Z)`` are clamped to the end slices. With
    ``context == 0`` it is ``vol_ras[:, :, :, k]``.

    >>> v = np.arange(2 * 1 * 1 * 3).reshape(2, 1, 1, 3)  # mod0 slices 0,1,2; mod1 slices 3,4,5
    >>> slice_stack(v, 0, 1)[:, 0, 0].tolist()
    [0, 0, 1, 3, 3, 4]
    >>> slice_stack(v, 2, 0)[:, 0, 0].tolist()
    [2, 5]
    """
    if vol_ras.ndim != 4:
        raise InputError(f"slice_stack: volume of shape {vol_ras.shape} is not (C, X, Y, Z)")
    n_z = vol_ras.shape[3]
    if not 0 <= k < n_z:
        raise InputError(f"slice_stack: slice {k} is outside 0..{n_z - 1}")
    if context < 0:
        raise InputError(f"slice_stack: context {context} is negative; use 0 or more neighbour slices")
    if context == 0:
        return vol_ras[:, :, :, k]
    idx = np.clip(np.arange(k - context, k + context + 1), 0, n_z - 1)
    picked = vol_ras[:, :, :, idx]  # (C, X, Y, 2c+1)
    c, x, y, s = picked.shape
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2)).reshape(c * s, x, y)
