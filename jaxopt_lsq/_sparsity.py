"""Jacobian sparsity on the host: the structure as index arrays, and column colouring.

A Jacobian whose columns ``j`` and ``k`` have no row in common can be estimated with
one evaluation for both: perturb ``x_j`` and ``x_k`` together and read each residual's
change off the column it depends on (Curtis, Powell & Reid 1974). Grouping the columns
so that no two columns of a group share a row is a colouring of the column-intersection
graph; the fewer colours, the fewer evaluations (finite differences) or
Jacobian-vector products (forward-mode autodiff) per Jacobian.

Everything here runs once per solve, on the host, in NumPy, before anything is traced;
the result is three integer arrays (``rows``, ``cols``: the structure in row-major
order, ``colour``: one colour per column) that the compiled solver receives as data.
SciPy is never imported: a ``scipy.sparse`` structure is read through its ``tocsr``
method.

The colouring is greedy -- each column gets the smallest colour that none of its
neighbours has -- processed in the parallel order of Jones & Plassmann (1993): in each
round every uncoloured column whose random priority is the largest among the
uncoloured columns it shares a row with is coloured at once (such columns are never
neighbours of each other). Each round is a few vectorised passes over the non-zeros, so
``n = 10^6`` columns take a fraction of a second; a banded or block structure needs a
few dozen rounds. The number of colours is at most one more than the largest number of
neighbours of a column, like any greedy colouring.

References: A. R. Curtis, M. J. D. Powell, J. K. Reid, "On the estimation of sparse
Jacobian matrices", J. Inst. Math. Appl. 13, 1974, pp. 117-119. M. T. Jones,
P. E. Plassmann, "A parallel graph coloring heuristic", SIAM J. Sci. Comput. 14(3),
1993, pp. 654-669.
"""

from __future__ import annotations

import numpy as np


def structure_coo(sparsity, m, n):
    """``(rows, cols)`` (int32, sorted row-major, unique) of the non-zeros of
    ``sparsity``: a dense array_like or a ``scipy.sparse`` matrix/array (explicit zeros
    are not part of the structure, as in SciPy). Raises SciPy's error on a wrong shape.
    """
    if hasattr(sparsity, "tocsr"):
        if tuple(sparsity.shape) != (m, n):
            raise ValueError("`jac_sparsity` has wrong shape.")
        csr = sparsity.tocsr(copy=True)  # never modify the caller's matrix
        csr.sum_duplicates()  # also sorts the column indices of each row
        csr.eliminate_zeros()
        rows = np.repeat(np.arange(m, dtype=np.int32), np.diff(csr.indptr))
        return rows, np.asarray(csr.indices, dtype=np.int32)
    a = np.atleast_2d(np.asarray(sparsity))
    if a.shape != (m, n):
        raise ValueError("`jac_sparsity` has wrong shape.")
    rows, cols = np.nonzero(a)
    return rows.astype(np.int32), cols.astype(np.int32)


def _segment_reduce(ufunc, keys, values, size, fill):
    """``out[k] = ufunc.reduce(values[keys == k])`` for sorted ``keys`` (``fill`` where
    ``k`` does not occur)."""
    out = np.full(size, fill, dtype=values.dtype)
    if keys.size:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        out[keys[starts]] = ufunc.reduceat(values, starts)
    return out


def colour_columns(rows, cols, m, n, seed=0):
    """Greedy colouring of the columns of the structure ``(rows, cols)`` (sorted
    row-major): ``colour[j]`` in ``0 .. k-1`` such that two columns with a common row
    have different colours. Returns ``(colour, k)``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    colour = np.full(n, -1, dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    present[cols] = True
    colour[~present] = 0  # an empty column can join any group
    # Distinct random priorities (fixed seed: the same structure, the same colouring).
    priority = np.random.default_rng(seed).permutation(n).astype(np.int64)
    base = np.zeros(n, dtype=np.int64)  # first colour of the 64-colour window searched
    row_bits = np.zeros(m, dtype=np.uint64)  # colours 0..63 present in each row
    one = np.uint64(1)
    r_unc, c_unc = rows, cols  # entries of uncoloured columns (still row-major)
    while r_unc.size:
        # Columns that hold the largest priority in every row they touch.
        p = priority[c_unc]
        row_max = _segment_reduce(np.maximum, r_unc, p, m, -1)
        loser = np.zeros(n, dtype=bool)
        loser[c_unc[row_max[r_unc] != p]] = True
        win = ~loser[c_unc]
        r_win, c_win = r_unc[win], c_unc[win]
        # Smallest colour not used by a coloured neighbour, searched 64 at a time.
        base_win = base[c_win]
        for b in ([0] if not base_win.any() else np.unique(base_win)):
            sel = base_win == b
            if b == 0:
                bits_of_rows = row_bits
            else:  # rare (more than 64 colours): rebuild this window's row masks
                coloured = colour[cols] >= 0
                in_window = coloured & (colour[cols] >= b) & (colour[cols] < b + 64)
                bits_of_rows = np.zeros(m, dtype=np.uint64)
                np.bitwise_or.at(bits_of_rows, rows[in_window], one << (colour[cols[in_window]] - b).astype(np.uint64))
            used = np.zeros(n, dtype=np.uint64)
            np.bitwise_or.at(used, c_win[sel], bits_of_rows[r_win[sel]])
            is_cand = np.zeros(n, dtype=bool)
            is_cand[c_win[sel]] = True
            cand = np.flatnonzero(is_cand)
            free_bits = ~used[cand]
            ok = free_bits != 0
            lowest = free_bits[ok] & (~free_bits[ok] + one)
            colour[cand[ok]] = b + np.log2(lowest.astype(np.float64)).astype(np.int64)
            base[cand[~ok]] += 64  # all 64 taken: look in the next window next round
        done = colour[c_unc] >= 0
        r_new, c_new = r_unc[done], c_unc[done]
        low = colour[c_new] < 64
        if np.any(low):
            bits = _segment_reduce(np.bitwise_or, r_new[low], one << colour[c_new[low]].astype(np.uint64), m, np.uint64(0))
            row_bits |= bits
        r_unc, c_unc = r_unc[~done], c_unc[~done]
    k = int(colour.max()) + 1 if n else 0
    return colour.astype(np.int32), k


def check_colouring(rows, cols, colour):
    """True when no two columns with a common row share a colour."""
    rows = np.asarray(rows, dtype=np.int64)
    key = rows * (int(np.max(colour)) + 1 if len(colour) else 1) + np.asarray(colour)[cols]
    return np.unique(key).size == key.size


def ell_layout(rows, cols, m, n, max_padding=3.0):
    """Padded slot tables (ELLPACK) of the structure ``(rows, cols)`` (sorted
    row-major), for products that gather instead of scatter.

    Returns ``(row_slots, row_cols, col_slots, col_rows)``: ``row_slots[k, i]`` is the
    index (into the row-major non-zeros) of the ``k``-th non-zero of row ``i``, and
    ``row_cols[k, i]`` its column; ``col_slots`` and ``col_rows`` the same by column.
    Unused slots hold ``nnz`` (one past the last non-zero) and index 0. Slot-major
    ``(K, m)`` and ``(K', n)``, so that a product reads each slot as one contiguous
    vector. ``None`` when the tables would hold more than ``1 + max_padding`` times the
    non-zeros (plus one slot per row and column): a few nearly dense rows or columns
    make the padding O(m n), and products then fall back to segment sums.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    nnz = rows.size
    row_count = np.bincount(rows, minlength=m)
    col_count = np.bincount(cols, minlength=n)
    width_r = int(row_count.max()) if m else 0
    width_c = int(col_count.max()) if n else 0
    if width_r * m + width_c * n > (1 + max_padding) * 2 * nnz + m + n:
        return None
    entry = np.arange(nnz)

    def table(keys, other, count, size, width, order):
        start = np.cumsum(count) - count
        keys, other, idx = keys[order], other[order], entry[order]
        slot = np.arange(nnz) - start[keys]
        slots = np.full((width, size), nnz, dtype=np.int32)
        index = np.zeros((width, size), dtype=np.int32)
        slots[slot, keys] = idx
        index[slot, keys] = other
        return slots, index

    row_slots, row_cols = table(rows, cols, row_count, m, width_r, entry)
    col_slots, col_rows = table(cols, rows, col_count, n, width_c, np.argsort(cols, kind="stable"))
    return row_slots, row_cols, col_slots, col_rows


def dia_layout(rows, cols, m, n, max_diagonals=16, max_padding=1.0):
    """The structure stored by diagonals, when it is banded.

    Returns ``(offsets, slots)``: ``offsets`` (a tuple of ints, ``cols - rows`` of each
    diagonal that holds a non-zero) and ``slots[d, i]``, the index (into the row-major
    non-zeros) of the entry ``(i, i + offsets[d])``, or ``nnz`` where there is none. A
    product then reads each diagonal and a shifted copy of the vector, with no index
    arrays at all. ``None`` when more than ``max_diagonals`` diagonals are used or the
    table would hold more than ``1 + max_padding`` times the non-zeros (plus one slot
    per row).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    nnz = rows.size
    offsets, which = np.unique(cols - rows, return_inverse=True)
    if offsets.size > max_diagonals or offsets.size * m > (1 + max_padding) * nnz + m:
        return None
    slots = np.full((offsets.size, m), nnz, dtype=np.int32)
    slots[which, rows] = np.arange(nnz)
    return tuple(int(o) for o in offsets), slots
