"""Dense linear algebra for tiny symmetric positive definite systems, written for batches.

A batched LAPACK call on thousands of 3x3 matrices costs far more than the arithmetic
(see PERF_NOTES: ``jnp.linalg.solve`` on 10 000 3x3 systems takes as long as forming
them): the routine is called once per matrix. For the batch-first solvers the system
size ``n`` is static and small, so the Cholesky factorisation ``A = L L^T`` and the
triangular solves are unrolled here in Python over scalar entries. Under ``jax.vmap``
every scalar becomes a vector over the batch and the whole solve is one wide
elementwise computation that XLA fuses.

Above ``UNROLL_MAX`` the unrolled code would be too long to compile quickly, and
``jnp.linalg.cholesky``/``solve_triangular`` are used instead (same results).

Reference: G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed., 2013,
Algorithm 4.2.1 (the inner-product form of the Cholesky factorisation).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl

UNROLL_MAX = 12


# Reductions over a short static axis (the parameters), written out as sums of entries:
# under vmap they become elementwise code that fuses with its neighbours, where a
# reduction over a size-3 axis of an (N, 3) array is a kernel of its own.
def _unrolled(a):
    return a.ndim >= 1 and a.shape[-1] <= UNROLL_MAX


def vdot(a, b):
    """``sum(a * b)`` over the last axis."""
    if not _unrolled(a):
        return jnp.sum(a * b, axis=-1)
    out = a[..., 0] * b[..., 0]
    for i in range(1, a.shape[-1]):
        out = out + a[..., i] * b[..., i]
    return out


def norm(a):
    """Euclidean norm over the last axis."""
    return jnp.sqrt(vdot(a, a))


def max_abs(a):
    """``max(|a|)`` over the last axis."""
    if not _unrolled(a):
        return jnp.max(jnp.abs(a), axis=-1)
    out = jnp.abs(a[..., 0])
    for i in range(1, a.shape[-1]):
        out = jnp.maximum(out, jnp.abs(a[..., i]))
    return out


def all_finite(a):
    """Whether every entry of a 1-D or 2-D array of small size is finite."""
    if a.ndim == 2:
        return all_finite(a.reshape(-1)) if a.size <= UNROLL_MAX**2 else jnp.all(jnp.isfinite(a))
    if not _unrolled(a):
        return jnp.all(jnp.isfinite(a), axis=-1)
    out = jnp.isfinite(a[..., 0])
    for i in range(1, a.shape[-1]):
        out = out & jnp.isfinite(a[..., i])
    return out


def quadratic_form(A, p):
    """``p^T A p``."""
    return vdot(p, jnp.stack([vdot(A[i], p) for i in range(p.shape[-1])]) if _unrolled(p) else A @ p)


def cholesky(A, rtol=0.0):
    """Lower-triangular ``L`` with ``A = L L^T`` and a flag ``ok``.

    ``ok`` is False when a pivot ``s_j`` (the diagonal before its square root) is not
    finite or not above ``rtol * A[j, j]``: ``A`` is not (numerically) positive
    definite. ``L`` is then not meaningful but finite where ``A`` is; callers test ``ok``.
    """
    n = A.shape[-1]
    if n > UNROLL_MAX:
        L = jnp.linalg.cholesky(A)
        piv = jnp.diagonal(L) ** 2
        ok = jnp.all(jnp.isfinite(L)) & jnp.all(piv > rtol * jnp.diagonal(A))
        return jnp.where(ok, L, jnp.eye(n, dtype=A.dtype)), ok
    L = [[jnp.zeros((), A.dtype)] * n for _ in range(n)]
    ok = jnp.asarray(True)
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        good = jnp.isfinite(s) & (s > rtol * A[j, j]) & (s > 0)
        ok = ok & good
        d = jnp.sqrt(jnp.where(good, s, 1))
        L[j][j] = d
        for i in range(j + 1, n):
            t = A[i, j]
            for k in range(j):
                t = t - L[i][k] * L[j][k]
            L[i][j] = t / d
    return jnp.stack([jnp.stack(row) for row in L]), ok


def solve_lower(L, b):
    """``y`` with ``L y = b``."""
    n = b.shape[-1]
    if n > UNROLL_MAX:
        return jsl.solve_triangular(L, b, lower=True)
    y = [None] * n
    for i in range(n):
        t = b[i]
        for k in range(i):
            t = t - L[i, k] * y[k]
        y[i] = t / L[i, i]
    return jnp.stack(y)


def solve_lower_transpose(L, y):
    """``x`` with ``L^T x = y``."""
    n = y.shape[-1]
    if n > UNROLL_MAX:
        return jsl.solve_triangular(L, y, lower=True, trans="T")
    x = [None] * n
    for i in reversed(range(n)):
        t = y[i]
        for k in range(i + 1, n):
            t = t - L[k, i] * x[k]
        x[i] = t / L[i, i]
    return jnp.stack(x)


def cholesky_solve(A, b, rtol=0.0):
    """Solve ``A x = b`` for symmetric positive definite ``A``: ``(x, L, ok)``."""
    L, ok = cholesky(A, rtol)
    return solve_lower_transpose(L, solve_lower(L, b)), L, ok
