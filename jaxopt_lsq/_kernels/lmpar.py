"""Pure kernels of the MINPACK Levenberg-Marquardt method (``method='lm'``).

Glossary (the notation of Moré (1977) and of MINPACK's ``lmder``/``lmpar``/``qrsolv``):

``J P = Q R``   QR factorisation of the Jacobian with column pivoting; ``perm`` holds
                the permutation (``J[:, perm] = Q R``), ``R`` is ``n x n`` upper triangular.
``qtb``         the first ``n`` components of ``Q^T f``.
``D``           ``diag``: the positive variable scaling (column norms of ``J``, or
                ``1 / x_scale``).
``Delta``       trust-region radius for ``||D p||``.
``par``         the Levenberg-Marquardt parameter ``lambda``: the step solves
                ``(J^T J + par D^2) p = -J^T f``.
``S``           upper triangular with ``P^T (J^T J + par D^2) P = S^T S`` (from the QR
                factorisation of ``[R; sqrt(par) P^T D P]``).

``lmpar`` finds ``par`` such that ``||D p(par)||`` is within 10% of ``Delta`` (or
``par = 0`` when the Gauss-Newton step is already short enough) by Moré's safeguarded
Newton iteration on ``phi(par) = ||D p(par)|| - Delta``, keeping bounds ``parl <= par
<= paru`` (at most 10 iterations), as MINPACK does.

References
----------
J. J. Moré, "The Levenberg-Marquardt Algorithm: Implementation and Theory", Numerical
Analysis, Lecture Notes in Mathematics 630, Springer, 1977, pp. 105-116.
J. J. Moré, B. S. Garbow, K. E. Hillstrom, "User Guide for MINPACK-1", Argonne National
Laboratory Report ANL-80-74, 1980.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular


def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def qr_pivoted(J, f):
    """``(R, perm, qtb)`` of the column-pivoted QR factorisation ``J[:, perm] = Q R``."""
    Q, R, perm = jax.scipy.linalg.qr(J, mode="economic", pivoting=True)
    return R, perm.astype(jnp.int32), Q.T @ f


def solve_upper_truncated(T, b):
    """Solve ``T z = b`` (``T`` upper triangular). If a diagonal element is zero, the
    components from the first such index on are set to zero and the leading block is
    solved (MINPACK's treatment of a rank-deficient triangular factor)."""
    n = T.shape[0]
    idx = jnp.arange(n)
    zero_diag = jnp.diagonal(T) == 0
    nsing = jnp.min(jnp.where(zero_diag, idx, n))
    sing = idx >= nsing
    T = jnp.where(sing[:, None] | sing[None, :], jnp.eye(n, dtype=T.dtype), T)
    return solve_triangular(T, jnp.where(sing, 0, b), lower=False), nsing


def qrsolv(R, perm, d, qtb):
    """Least-squares solution ``x`` of ``[J; diag(d)] x = [f; 0]`` given ``J[:, perm] = Q R``
    and ``qtb = Q^T f``; also returns ``S`` (``P^T (J^T J + D^2) P = S^T S``)."""
    n = R.shape[0]
    A = jnp.concatenate([R, jnp.diag(d[perm])])
    Q2, S = jnp.linalg.qr(A)
    z, _ = solve_upper_truncated(S, Q2[:n].T @ qtb)
    return jnp.zeros_like(z).at[perm].set(z), S


def lmpar(R, perm, diag, qtb, Delta, par, max_iter=10):
    """The Levenberg-Marquardt parameter and step direction for radius ``Delta``.

    Returns ``(par, x)`` where ``x`` solves ``(J^T J + par D^2) x = J^T f`` in the least
    squares sense (the step is ``-x``); ``par == 0`` when the Gauss-Newton direction
    satisfies ``||D x|| <= 1.1 Delta``. ``par`` on input is the starting estimate.
    """
    dtype = qtb.dtype
    dwarf = jnp.finfo(dtype).tiny
    p1, p001 = 0.1, 0.001
    n = R.shape[0]
    d_p = diag[perm]

    # Gauss-Newton direction (a least-squares solution when R is singular).
    z, nsing = solve_upper_truncated(R, qtb)
    x_gn = jnp.zeros_like(z).at[perm].set(z)
    dxnorm = jnp.linalg.norm(diag * x_gn)
    fp = dxnorm - Delta
    take_gn = fp <= p1 * Delta

    # Lower bound parl from the Newton step at par = 0 (only for full rank).
    full_rank = nsing >= n
    wa1 = d_p * _safe_div((diag * x_gn)[perm], dxnorm)
    R_full = jnp.where(full_rank, R, jnp.eye(n, dtype=dtype))
    y = solve_triangular(R_full, wa1, trans="T", lower=False)
    ynorm = jnp.linalg.norm(y)
    parl = jnp.where(full_rank, _safe_div(_safe_div(_safe_div(fp, Delta), ynorm), ynorm), 0.0).astype(dtype)

    # Upper bound paru: ||D^-1 J^T f|| / Delta.
    gnorm = jnp.linalg.norm(_safe_div(R.T @ qtb, d_p))
    paru = gnorm / Delta
    paru = jnp.where(paru == 0, dwarf / jnp.minimum(Delta, p1), paru)

    par = jnp.minimum(jnp.maximum(jnp.asarray(par, dtype), parl), paru)
    par = jnp.where(par == 0, _safe_div(gnorm, dxnorm), par)

    def cond(carry):
        it, done = carry[0], carry[-1]
        return ~done & (it < max_iter)

    def body(carry):
        it, par, parl, paru, fp, _, _ = carry
        it = it + 1
        par = jnp.where(par == 0, jnp.maximum(dwarf, p001 * paru), par)
        x, S = qrsolv(R, perm, jnp.sqrt(par) * diag, qtb)
        wa2 = diag * x
        dxnorm = jnp.linalg.norm(wa2)
        fp_old, fp = fp, dxnorm - Delta
        done = (jnp.abs(fp) <= p1 * Delta) | ((parl == 0) & (fp <= fp_old) & (fp_old < 0)) | (it == max_iter)
        # Newton correction: phi'(par) from S^T y = P^T D^2 x / ||D x||.
        wa1 = d_p * _safe_div(wa2[perm], dxnorm)
        y = solve_triangular(S, wa1, trans="T", lower=False)
        ynorm = jnp.linalg.norm(y)
        parc = _safe_div(_safe_div(_safe_div(fp, Delta), ynorm), ynorm)
        parl = jnp.where(fp > 0, jnp.maximum(parl, par), parl)
        paru = jnp.where(fp < 0, jnp.minimum(paru, par), paru)
        par_next = jnp.where(done, par, jnp.maximum(parl, par + parc))
        return it, par_next, parl, paru, fp, x, done

    carry0 = (jnp.asarray(0, jnp.int32), par, parl, paru, fp, x_gn, take_gn)
    _, par, _, _, _, x, _ = lax.while_loop(cond, body, carry0)
    return jnp.where(take_gn, 0.0, par).astype(dtype), jnp.where(take_gn, x_gn, x)
