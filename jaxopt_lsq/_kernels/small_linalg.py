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


# Largest n for the unrolled Jacobi method below: its compile time grows steeply with n
# (measured under vmap: 0.7 s at n = 3, 1.9 s at 5, 12 s at 8) and above n = 4 it no
# longer beats the batched LAPACK eigh on 10 000 matrices.
JACOBI_MAX = 4
_JACOBI_SWEEPS = 15  # a bound: the method converges quadratically, in 4-7 sweeps here


def _jacobi_sweep(a, v):
    """One cyclic sweep of Jacobi rotations over the entries of the symmetric ``a``
    (lists of scalars), accumulating the rotations in ``v``. Each rotation zeroes
    ``a[p][q]`` (Golub & Van Loan, Algorithm 8.5.2 with 8.5.1's stable rotation)."""
    n = len(a)
    a = [row[:] for row in a]
    v = [row[:] for row in v]
    for p in range(n - 1):
        for q in range(p + 1, n):
            apq = a[p][q]
            nz = apq != 0
            tau = (a[q][q] - a[p][p]) / (2 * jnp.where(nz, apq, 1))
            # t = tan of the rotation angle, the root of t^2 + 2 tau t - 1 of smaller
            # size; an overflowing tau**2 gives t = 0 (nothing left to rotate).
            t = jnp.where(tau >= 0, 1, -1).astype(apq.dtype) / (jnp.abs(tau) + jnp.sqrt(1 + tau * tau))
            t = jnp.where(nz, t, 0)
            c = 1 / jnp.sqrt(1 + t * t)
            s = t * c
            app, aqq = a[p][p] - t * apq, a[q][q] + t * apq
            for r in range(n):
                if r != p and r != q:
                    arp, arq = a[r][p], a[r][q]
                    a[r][p] = a[p][r] = c * arp - s * arq
                    a[r][q] = a[q][r] = s * arp + c * arq
                vrp, vrq = v[r][p], v[r][q]
                v[r][p], v[r][q] = c * vrp - s * vrq, s * vrp + c * vrq
            a[p][p], a[q][q] = app, aqq
            a[p][q] = a[q][p] = jnp.zeros_like(apq)
    return a, v


def eigh_jacobi(A):
    """Eigenvalues ``w`` and eigenvectors (the columns of ``V``) of a small symmetric
    ``A`` by the cyclic Jacobi method, written over scalar entries (``n <=
    JACOBI_MAX``): under ``vmap`` every rotation is elementwise code over the batch,
    where a batched LAPACK ``eigh`` is one call per matrix. Sweeps run until the
    off-diagonal part is below ``eps`` times the norm of ``A`` (at most
    ``_JACOBI_SWEEPS``). Eigenvalues are not sorted.

    Reference: G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed., 2013,
    section 8.5 (the cyclic Jacobi method).
    """
    from jax import lax

    n = A.shape[-1]
    dtype = A.dtype
    eps = jnp.finfo(dtype).eps
    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    a0 = [[A[i, j] for j in range(n)] for i in range(n)]
    v0 = [[one if i == j else zero for j in range(n)] for i in range(n)]
    scale = sum(a0[i][j] * a0[i][j] for i in range(n) for j in range(n))

    def off(a):
        return sum(a[i][j] * a[i][j] for i in range(n) for j in range(n) if i != j)

    def flat(a, v):
        return tuple(x for row in a + v for x in row)

    def unflat(c):
        rows = [list(c[i * n:(i + 1) * n]) for i in range(2 * n)]
        return rows[:n], rows[n:]

    def cond(carry):
        k, c = carry
        a, _ = unflat(c)
        return (k < _JACOBI_SWEEPS) & (off(a) > (eps * eps) * scale)

    def body(carry):
        k, c = carry
        return k + 1, flat(*_jacobi_sweep(*unflat(c)))

    _, c = lax.while_loop(cond, body, (jnp.asarray(0), flat(a0, v0)))
    a, v = unflat(c)
    return jnp.stack([a[i][i] for i in range(n)]), jnp.stack([jnp.stack(row) for row in v])


def pinv_solve_symmetric(A, b, unrolled=True):
    """``pinv(A) @ b`` for a symmetric ``A`` (the minimum-norm least-squares solution of
    ``A x = b``), with ``jnp.linalg.pinv``'s cutoff: eigenvalues at most ``10 n eps``
    times the largest in size count as zero. Jacobi eigenvectors (:func:`eigh_jacobi`)
    when ``unrolled`` and ``n <= JACOBI_MAX``, LAPACK otherwise."""
    n = A.shape[-1]
    if not unrolled or n > JACOBI_MAX:
        return jnp.linalg.pinv(A, hermitian=True) @ b
    w, V = eigh_jacobi(A)
    size = jnp.abs(w)
    cutoff = 10 * n * jnp.finfo(A.dtype).eps * jnp.max(size)
    w_inv = jnp.where(size > cutoff, 1 / jnp.where(size > cutoff, w, 1), 0)
    return V @ (w_inv * (V.T @ b))
