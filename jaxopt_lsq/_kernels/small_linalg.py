"""Dense linear algebra for tiny symmetric positive definite systems, written for batches.

A batched LAPACK call on thousands of 3x3 matrices costs far more than the arithmetic
(see PERF_NOTES: ``jnp.linalg.solve`` on 10 000 3x3 systems takes as long as forming
them): the routine is called once per matrix. For the batch-first solvers the system
size ``n`` is static and small, so the Cholesky factorisation ``A = L L^T`` and the two
triangular solves are unrolled here in Python over scalar entries. Under ``jax.vmap``
every scalar becomes a vector over the batch and the whole solve is one wide
elementwise computation that XLA fuses.

Above ``UNROLL_MAX`` the unrolled code would be too long to compile quickly, and
``jnp.linalg.cholesky``/``cho_solve`` are used instead (same results).

Reference: G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed., 2013,
Algorithm 4.2.1 (the inner-product form of the Cholesky factorisation).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl

UNROLL_MAX = 12


def cholesky_solve(A, b):
    """Solve ``A x = b`` for a symmetric positive definite ``(n, n)`` matrix ``A``.

    Returns ``(x, ok)``; ``ok`` is False when a pivot is not positive and finite (``A``
    not numerically positive definite, or not finite). ``x`` is then not meaningful
    (it may hold NaN); callers must test ``ok``.
    """
    n = b.shape[-1]
    if n > UNROLL_MAX:
        L = jnp.linalg.cholesky(A)
        ok = jnp.all(jnp.isfinite(L)) & jnp.all(jnp.diagonal(L) > 0)
        return jsl.cho_solve((L, True), b), ok

    # L[i][j] for j <= i, as Python nested lists of scalars.
    L = [[None] * n for _ in range(n)]
    ok = jnp.asarray(True)
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        ok = ok & (s > 0) & jnp.isfinite(s)
        d = jnp.sqrt(jnp.where(s > 0, s, 1))
        L[j][j] = d
        for i in range(j + 1, n):
            t = A[i, j]
            for k in range(j):
                t = t - L[i][k] * L[j][k]
            L[i][j] = t / d
    # Forward solve L y = b, then back solve L^T x = y.
    y = [None] * n
    for i in range(n):
        t = b[i]
        for k in range(i):
            t = t - L[i][k] * y[k]
        y[i] = t / L[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        t = y[i]
        for k in range(i + 1, n):
            t = t - L[k][i] * x[k]
        x[i] = t / L[i][i]
    return jnp.stack(x), ok
