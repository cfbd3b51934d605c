"""LSMR: an iterative solver for sparse and matrix-free linear least squares.

Solves ``min || [b; 0] - [A; damp I] x ||_2`` using only the products ``A v`` and
``A^T u``, the way :func:`scipy.sparse.linalg.lsmr` does (same iteration, same stopping
rules, same defaults). LSMR applies MINRES to the normal equations
``(A^T A + damp^2 I) x = A^T b`` on the Golub-Kahan bidiagonalisation of ``A``, so that
``||A^T r_k||`` decreases monotonically.

Glossary (the notation of Fong & Saunders (2011)):

``beta, u``      ``beta_{k+1} u_{k+1} = A v_k - alpha_k u_k`` (left Lanczos vectors);
``alpha, v``     ``alpha_{k+1} v_{k+1} = A^T u_{k+1} - beta_{k+1} v_k`` (right vectors);
``U, V``         ``beta u`` and ``alpha v``: the Lanczos vectors as carried, unnormalised
                 (``u = U`` when ``beta = 0`` and ``v = V`` when ``alpha = 0``: SciPy
                 leaves a vector of norm zero as it is);
``rho, rhobar``  diagonals of the two QR factorisations (``R_k`` and ``Rbar_k``);
``zeta, zetabar`` the transformed right-hand side; ``|zetabar| = ||A^T r_k||``;
``h, hbar``      search directions; ``x_k = x_{k-1} + zeta / (rho rhobar) hbar``;
``normr``        estimate of ``||r_k||`` from the extra rotations of section 3.2;
``normA, condA`` running estimates of ``||A||_F`` and ``cond(A)``.

Cost of an iteration. At large sizes an iteration costs its passes over whole vectors.
Normalising ``u`` and ``v`` would take one pass each, so the loop carries ``U`` and
``V`` and moves ``1/beta`` and ``1/alpha`` into scalar coefficients, by linearity:
``A v_k - alpha_k u_k = (A V_k)/alpha_k - (alpha_k/beta_k) U_k`` and
``A^T u_{k+1} - beta_{k+1} v_k = (A^T U_{k+1})/beta_{k+1} - (beta_{k+1}/alpha_k) V_k``.
What is left is the minimum that XLA's loop fusion allows: each product together with
its linear combination (one loop when the product is elementwise, as for banded
sparse Jacobians), the norms of ``U``, ``V`` and ``x``, and the elementwise updates of
``hbar``, ``x`` and ``h``, each in place. The results are SciPy's up to rounding.

The kernel is a pure function over the two products, so the same code runs on a dense
matrix, a sparse matrix stored as values over fixed indices, and a Jacobian applied by
``jax.jvp``/``jax.vjp`` that is never formed. Its inner loop is a bounded
``lax.while_loop`` (at most ``maxiter`` products of each kind); under ``vmap`` finished
lanes keep their values while the slowest lane finishes.

Reference: D. C.-L. Fong and M. A. Saunders, "LSMR: An iterative algorithm for sparse
least-squares problems", SIAM J. Sci. Comput. 33(5), 2011, pp. 2950-2971.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax


def sym_ortho(a, b):
    """A Givens rotation ``(c, s, r)`` with ``[c s; -s c] [a; b] = [r; 0]`` and
    ``r = hypot(a, b) >= 0`` (the values of Fong & Saunders' stable ``SymOrtho``;
    ``hypot`` avoids its overflow; ``c = s = 0`` when ``a = b = 0``, as SciPy)."""
    r = jnp.hypot(a, b)
    nz = r > 0
    r_safe = jnp.where(nz, r, 1)
    return jnp.where(nz, a / r_safe, 0), jnp.where(nz, b / r_safe, 0), r


class LsmrResult(NamedTuple):
    x: object
    istop: object  # SciPy's codes 0-7
    itn: object
    normr: object
    normar: object


def lsmr(matvec, rmatvec, b, n, damp=0.0, atol=1e-6, btol=1e-6, conlim=1e8, maxiter=None, x0=None):
    """Solve ``min ||b - A x||^2 + damp^2 ||x||^2`` by LSMR from ``x = 0`` (or ``x0``).

    Parameters
    ----------
    matvec, rmatvec : callable
        ``v -> A @ v`` (``(n,) -> (m,)``) and ``u -> A.T @ u`` (``(m,) -> (n,)``).
    b : array, shape (m,)
    n : int
        Number of unknowns (static).
    damp : float or scalar array
        Tikhonov damping (may be traced).
    atol, btol, conlim : float
        SciPy's stopping tolerances (``0`` selects the machine-precision tests).
    maxiter : int or None
        Iteration limit (static); ``None`` means ``min(m, n)`` as in SciPy.
    x0 : array, shape (n,), optional
        Initial guess. As in SciPy, LSMR then runs on the residual ``b - A x0`` and
        accumulates its correction onto ``x0`` (the damping applies to the correction);
        the stopping tests keep using ``||b||``.

    Returns
    -------
    LsmrResult
        ``x``, the stopping reason ``istop`` (SciPy's codes), the iteration count and the
        estimates of ``||r||`` and ``||A^T r||``.
    """
    m = b.shape[0]
    dtype = b.dtype
    if maxiter is None:
        maxiter = min(m, n)
    damp = jnp.asarray(damp, dtype)
    ctol = 1.0 / conlim if conlim > 0 else 0.0

    def over(a, nrm):
        # a / nrm, or a where nrm = 0 (a vector of norm zero is left as it is).
        nz = nrm > 0
        return jnp.where(nz, a / jnp.where(nz, nrm, 1), a)

    normb = jnp.linalg.norm(b)
    if x0 is None:
        x_start = jnp.zeros((n,), dtype)
        U = b
        beta = normb
    else:
        x_start = jnp.asarray(x0, dtype)
        U = b - matvec(x_start)
        beta = jnp.linalg.norm(U)
    V = jnp.where(beta > 0, rmatvec(U) * over(1, beta), jnp.zeros((n,), dtype))  # alpha_1 v_1 = A^T u_1
    alpha = jnp.linalg.norm(V)
    zero = jnp.zeros((), dtype)
    one = jnp.ones((), dtype)

    carry0 = dict(
        itn=jnp.asarray(0, jnp.int32),
        istop=jnp.asarray(0, jnp.int32),
        x=x_start,
        U=U,
        V=V,
        h=V * over(1, alpha),
        hbar=jnp.zeros((n,), dtype),
        beta=beta,
        alpha=alpha,
        zetabar=alpha * beta,
        alphabar=alpha,
        rho=one,
        rhobar=one,
        cbar=one,
        sbar=zero,
        betadd=beta,
        betad=zero,
        rhodold=one,
        tautildeold=zero,
        thetatilde=zero,
        zeta=zero,
        d=zero,
        normA2=alpha * alpha,
        maxrbar=zero,
        minrbar=jnp.asarray(1e100 if dtype == jnp.float64 else 1e30, dtype),
        normr=beta,
        normar=alpha * beta,
    )
    # The start solves the problem already (A^T (b - A x0) = 0) or b = 0: SciPy returns
    # istop = 0, with x = x0 in the first case and x = 0 in the second.
    trivial = (alpha * beta == 0) | (normb == 0)

    def cond(c):
        return (c["istop"] == 0) & (c["itn"] < maxiter) & ~trivial

    def body(c):
        itn = c["itn"] + 1
        alpha_k = c["alpha"]
        # beta U = A v_k - alpha_k u_k, with v_k = V_k / alpha_k and u_k = U_k / beta_k.
        U = matvec(c["V"]) * over(1, alpha_k) - over(alpha_k, c["beta"]) * c["U"]
        beta = jnp.linalg.norm(U)
        # alpha V = A^T u_{k+1} - beta v_k. SciPy leaves v and alpha unchanged when
        # beta == 0 (u_{k+1} = U is then the zero vector): the coefficients 0 and 1 give
        # exactly the old V, with no select over the vector.
        go = beta > 0
        V = rmatvec(U) * jnp.where(go, over(1, beta), 0) + jnp.where(go, -over(beta, alpha_k), 1) * c["V"]
        alpha = jnp.where(go, jnp.linalg.norm(V), alpha_k)

        chat, shat, alphahat = sym_ortho(c["alphabar"], damp)
        rhoold = c["rho"]
        cc, s, rho = sym_ortho(alphahat, beta)
        thetanew = s * alpha
        alphabar = cc * alpha

        rhobarold = c["rhobar"]
        zetaold = c["zeta"]
        thetabar = c["sbar"] * rho
        rhotemp = c["cbar"] * rho
        cbar, sbar, rhobar = sym_ortho(c["cbar"] * rho, thetanew)
        zeta = cbar * c["zetabar"]
        zetabar = -sbar * c["zetabar"]

        # The n-vector updates, elementwise (v_{k+1} = V / alpha). Both the hbar and the
        # h update read the old h, and nothing orders them, so XLA would copy h to let
        # the h update write in place; its coefficient's (zero) dependence on ||x||,
        # hence on hbar, orders them instead. (0 * normx is 0 while x is finite; once
        # an entry of x is not finite it stays so, whatever h holds.)
        hbar = c["h"] - (thetabar * rho / (rhoold * rhobarold)) * c["hbar"]
        x = c["x"] + (zeta / (rho * rhobar)) * hbar
        normx = jnp.linalg.norm(x)
        h = V * over(1, alpha) - (thetanew / rho + 0 * normx) * c["h"]

        # Estimate of ||r||.
        betaacute = chat * c["betadd"]
        betacheck = -shat * c["betadd"]
        betahat = cc * betaacute
        betadd = -s * betaacute
        thetatildeold = c["thetatilde"]
        ctildeold, stildeold, rhotildeold = sym_ortho(c["rhodold"], thetabar)
        thetatilde = stildeold * rhobar
        rhodold = ctildeold * rhobar
        betad = -stildeold * c["betad"] + ctildeold * betahat
        tautildeold = (zetaold - thetatildeold * c["tautildeold"]) / rhotildeold
        taud = (zeta - thetatilde * tautildeold) / rhodold
        d = c["d"] + betacheck * betacheck
        normr = jnp.sqrt(d + (betad - taud) ** 2 + betadd * betadd)

        # Estimates of ||A|| and cond(A).
        normA2 = c["normA2"] + beta * beta
        normA = jnp.sqrt(normA2)
        normA2 = normA2 + alpha * alpha
        maxrbar = jnp.maximum(c["maxrbar"], rhobarold)
        minrbar = jnp.where(itn > 1, jnp.minimum(c["minrbar"], rhobarold), c["minrbar"])
        condA = jnp.maximum(maxrbar, rhotemp) / jnp.minimum(minrbar, rhotemp)

        # Stopping rules, SciPy's order (later tests take precedence).
        normar = jnp.abs(zetabar)
        test1 = normr / normb
        nAr = normA * normr
        test2 = jnp.where(nAr != 0, normar / jnp.where(nAr != 0, nAr, 1), jnp.inf)
        test3 = 1 / condA
        t1 = test1 / (1 + normA * normx / normb)
        rtol = btol + atol * normA * normx / normb
        istop = jnp.where(itn >= maxiter, 7, 0)
        istop = jnp.where(1 + test3 <= 1, 6, istop)
        istop = jnp.where(1 + test2 <= 1, 5, istop)
        istop = jnp.where(1 + t1 <= 1, 4, istop)
        istop = jnp.where(test3 <= ctol, 3, istop)
        istop = jnp.where(test2 <= atol, 2, istop)
        istop = jnp.where(test1 <= rtol, 1, istop).astype(jnp.int32)
        return dict(
            itn=itn, istop=istop, x=x, U=U, V=V, h=h, hbar=hbar, beta=beta, alpha=alpha, zetabar=zetabar,
            alphabar=alphabar, rho=rho, rhobar=rhobar, cbar=cbar, sbar=sbar, betadd=betadd, betad=betad,
            rhodold=rhodold, tautildeold=tautildeold, thetatilde=thetatilde, zeta=zeta, d=d, normA2=normA2,
            maxrbar=maxrbar, minrbar=minrbar, normr=normr, normar=normar,
        )

    out = lax.while_loop(cond, body, carry0)
    x = out["x"]
    if x0 is not None:
        x = jnp.where((normb == 0) & (alpha * beta != 0), jnp.zeros_like(x), x)
    return LsmrResult(x, out["istop"], out["itn"], out["normr"], out["normar"])
