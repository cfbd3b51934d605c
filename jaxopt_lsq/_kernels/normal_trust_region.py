"""The trust-region subproblem from the normal equations (for batches of small fits).

``min_p 0.5 p^T B p + g^T p  s.t. ||p|| <= Delta`` with ``B = J^T J + C`` symmetric
positive semidefinite (n x n). Its solution is ``p(alpha) = -(B + alpha I)^{-1} g`` with
``alpha = 0`` if the Gauss-Newton step is inside the region, otherwise the ``alpha > 0``
where ``phi(alpha) = ||p(alpha)|| - Delta`` vanishes. As in Moré (1977) (and SciPy's
SVD-based ``solve_lsq_trust_region``), the root is found by the safeguarded Newton
iteration on ``1/||p||`` with

    phi'(alpha) = -||q||^2 / ||p||,   q = L^{-1} p,   B + alpha I = L L^T,

keeping ``alpha`` within ``[alpha_lower, alpha_upper]``. Each trial ``alpha`` costs one
Cholesky factorisation (:mod:`.small_linalg`, unrolled for small ``n``) instead of one
SVD per accepted point: under ``vmap`` that is cheap elementwise work. The number of
Newton iterations is fixed (``n_iter``), so every fit in a batch does the same work; a
warm start from the previous ``alpha`` (rescaled by the change of ``Delta``) makes a
few iterations enough, and the trust-region update uses the norm of the step actually
taken, so an inexact root only changes the step length slightly.

Reference: J. J. Moré, "The Levenberg-Marquardt Algorithm: Implementation and Theory",
Numerical Analysis, Lecture Notes in Mathematics 630, Springer, 1977, pp. 105-116.
"""

from __future__ import annotations

import jax.numpy as jnp

from .small_linalg import all_finite, cholesky_solve, norm, solve_lower, vdot


def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def solve_normal_trust_region(B, g, Delta, alpha, n_iter=2):
    """``(p, alpha, ok, gn_decrease)``: the step, the multiplier, whether the linear
    algebra succeeded (``ok`` is False only when ``B`` or ``g`` is not finite), and the
    model's decrease at its unconstrained minimiser ``-0.5 g^T B^{-1} g`` (``inf``
    when ``B`` is numerically singular)."""
    n = g.shape[-1]
    dtype = g.dtype
    eps = jnp.finfo(dtype).eps
    eye = jnp.eye(n, dtype=dtype)
    # Gauss-Newton step; "full rank" as SciPy's test, in terms of the pivots.
    p_gn, L0, full_rank = cholesky_solve(B, -g, rtol=n * eps)
    gn_norm = norm(p_gn)
    take_gn = full_rank & (gn_norm <= Delta)

    g_norm = norm(g)
    upper = g_norm / Delta
    q0 = solve_lower(L0, p_gn)
    lower = jnp.where(full_rank, _safe_div((gn_norm - Delta) * gn_norm, vdot(q0, q0)), 0.0)
    lower = jnp.maximum(lower, 0.0)

    a = alpha
    for _ in range(n_iter):
        a = jnp.where((a < lower) | (a > upper), jnp.maximum(0.001 * upper, jnp.sqrt(lower * upper)), a)
        p, L, _ = cholesky_solve(B + a * eye, -g)
        p_norm = norm(p)
        q = solve_lower(L, p)
        phi = p_norm - Delta
        phi_prime = -_safe_div(vdot(q, q), p_norm)
        upper = jnp.where(phi < 0, a, upper)
        ratio = _safe_div(phi, phi_prime)
        lower = jnp.maximum(lower, a - ratio)
        a = a - (phi + Delta) * ratio / Delta
    a = jnp.where((a < lower) | (a > upper), jnp.maximum(0.001 * upper, jnp.sqrt(lower * upper)), a)
    p, _, ok = cholesky_solve(B + a * eye, -g)
    ok = ok | take_gn
    p = jnp.where(take_gn, p_gn, p)
    a = jnp.where(take_gn, 0.0, a)
    gn_decrease = jnp.where(full_rank, -0.5 * vdot(g, p_gn), jnp.inf).astype(dtype)
    return p, a.astype(dtype), ok & all_finite(p), gn_decrease

