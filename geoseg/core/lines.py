"""Centre lines from a skeleton, strip by strip: the pixel graph of a one-pixel-wide skeleton.

A skeleton's pixels are the nodes; two pixels are joined where they touch along an edge, or at
a corner where neither of the two pixels beside that corner is skeleton (so a staircase is one
path and an L-turn no triangle, as in ``skan``'s pixel graph without its redundant diagonals).
The segments join pixel centres. A scene is walked in strips of rows: each strip's segments
include those to the last row of the strip above, so segments that cross a seam are there
once, and a road crossing a seam is one connected set of segments.

Pure numpy and scipy: no I/O, no Ray, no torch.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["skeleton_segments", "network_ids"]


def skeleton_segments(skel: np.ndarray, y0: int, above: np.ndarray | None = None) -> np.ndarray:
    """The segments of skeleton rows ``y0 ..`` (and to the row above them, ``above``).

    Args:
        skel: (h, w) bool skeleton of scene rows ``y0 .. y0 + h``.
        y0: the scene row of ``skel[0]``.
        above: (w,) bool skeleton of scene row ``y0 - 1`` (the strip above), or None at the top.

    Returns:
        (k, 4) int64 segments ``(y_a, x_a, y_b, x_b)`` in scene pixel indices (row, column), each
        once, ``(y_a, x_a)`` before ``(y_b, x_b)`` in row-major order.

    >>> skeleton_segments(np.array([[1, 1, 0], [0, 0, 1]], bool), 10).tolist()
    [[10, 0, 10, 1], [10, 1, 11, 2]]
    >>> skeleton_segments(np.array([[1, 1], [1, 0]], bool), 0).tolist()  # an L: no diagonal
    [[0, 0, 0, 1], [0, 0, 1, 0]]
    """
    s = np.asarray(skel, bool)
    top = y0
    if above is not None:
        s = np.concatenate([np.asarray(above, bool)[None, :], s])
        top = y0 - 1
    out = []
    # right, down: (dy, dx) with the pixel pair (a, b) = (s[:-dy or None, ...], ...)
    right = s[:, :-1] & s[:, 1:]
    ys, xs = np.nonzero(right)
    out.append(np.stack([ys, xs, ys, xs + 1], axis=1))
    down = s[:-1, :] & s[1:, :]
    ys, xs = np.nonzero(down)
    out.append(np.stack([ys, xs, ys + 1, xs], axis=1))
    # down-right: a = (y, x), b = (y+1, x+1); corner pixels (y, x+1) and (y+1, x)
    dr = s[:-1, :-1] & s[1:, 1:] & ~s[:-1, 1:] & ~s[1:, :-1]
    ys, xs = np.nonzero(dr)
    out.append(np.stack([ys, xs, ys + 1, xs + 1], axis=1))
    # down-left: a = (y, x+1), b = (y+1, x); corner pixels (y, x) and (y+1, x+1)
    dl = s[:-1, 1:] & s[1:, :-1] & ~s[:-1, :-1] & ~s[1:, 1:]
    ys, xs = np.nonzero(dl)
    out.append(np.stack([ys, xs + 1, ys + 1, xs], axis=1))
    seg = np.concatenate(out).astype(np.int64)
    if above is not None:  # drop the row above's own segments: its strip has them
        seg = seg[seg[:, 2] > 0]
    seg[:, (0, 2)] += top
    order = np.lexsort((seg[:, 3], seg[:, 2], seg[:, 1], seg[:, 0]))
    return seg[order]


def network_ids(segments: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """The connected network of each segment: ``(ids, n)``, (k,) int64 ids ``0 .. n - 1``
    numbered by each network's first pixel in row-major order (so any strip height gives the
    same ids), the same union-find step as :func:`geoseg.core.instances.join_blocks`.

    >>> network_ids(np.array([[0, 0, 0, 1], [5, 5, 5, 6], [0, 1, 1, 2]]), 10)
    (array([0, 1, 0]), 2)
    """
    if len(segments) == 0:
        return np.zeros(0, np.int64), 0
    a = segments[:, 0] * width + segments[:, 1]
    b = segments[:, 2] * width + segments[:, 3]
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(segments)
    graph = coo_matrix((np.ones(k, np.int8), (inv[:k], inv[k:])), shape=(len(nodes), len(nodes)))
    n, comp = connected_components(graph, directed=False)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, comp, nodes)  # nodes are sorted scene indices
    rank = np.empty(n, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n)
    return rank[comp[inv[:k]]], int(n)
