"""Pure trust-region kernels shared by the least-squares solvers.

Glossary (the notation of SciPy's ``_lsq`` and of Moré (1977)):

``J``       Jacobian of the residuals, ``(m, n)``.
``g``       gradient of the cost, ``J^T f``.
``Delta``   trust-region radius.
``alpha``   Levenberg-Marquardt parameter: the step solves ``(J^T J + alpha I) p = -g``.
``uf``      ``U^T f`` for the thin SVD ``J = U diag(s) V^T``.
``phi``     ``||p(alpha)|| - Delta``, whose root gives the constrained step.

The subproblem ``min ||J p + f||^2 s.t. ||p|| <= Delta`` is solved from one SVD by the
safeguarded Newton iteration on ``phi`` of

    J. J. Moré, "The Levenberg-Marquardt Algorithm: Implementation and Theory",
    Numerical Analysis, Lecture Notes in Mathematics 630, Springer, 1977, pp. 105-116,

(MINPACK does the same with a QR factorisation per trial ``alpha``). Every function is
branch-free on values (``jnp.where``/``lax.while_loop``) so it works under ``jit`` and
``vmap``; divisions that can hit zero use the double-``where`` idiom.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def phi_and_derivative(alpha, suf, s, Delta):
    """``phi(alpha) = ||p(alpha)|| - Delta`` and its derivative (Moré 1977, eq. 5.5)."""
    denom = s**2 + alpha
    p_norm = jnp.linalg.norm(_safe_div(suf, denom))
    phi = p_norm - Delta
    phi_prime = -_safe_div(jnp.sum(_safe_div(suf**2, denom**3)), p_norm)
    return phi, phi_prime


def solve_lsq_trust_region(n, m, uf, s, V, Delta, initial_alpha, rtol=0.01, max_iter=10):
    """Solve ``min ||J p + f|| s.t. ||p|| <= Delta`` from the SVD of ``J``.

    Returns ``(p, alpha)``; ``alpha == 0`` means the Gauss-Newton step was taken.
    ``n, m`` are static; ``s`` is sorted in decreasing order.
    """
    dtype = uf.dtype
    eps = jnp.finfo(dtype).eps
    suf = s * uf
    if m >= n:
        full_rank = s[-1] > eps * m * s[0]
    else:
        full_rank = jnp.asarray(False)

    s_safe = jnp.where(full_rank, s, 1)
    p_gn = -V @ (uf / s_safe)
    take_gn = full_rank & (jnp.linalg.norm(p_gn) <= Delta)

    alpha_upper = jnp.linalg.norm(suf) / Delta
    phi0, dphi0 = phi_and_derivative(jnp.zeros((), dtype), suf, s_safe, Delta)
    alpha_lower = jnp.where(full_rank, -_safe_div(phi0, dphi0), 0.0).astype(dtype)

    def reset(lo, up):
        return jnp.maximum(0.001 * up, jnp.sqrt(lo * up))

    initial_alpha = jnp.asarray(initial_alpha, dtype)
    alpha0 = jnp.where(~full_rank & (initial_alpha == 0), reset(alpha_lower, alpha_upper), initial_alpha)

    def cond(carry):
        it, _, _, _, done = carry
        return (it < max_iter) & ~done

    def body(carry):
        it, alpha, lo, up, _ = carry
        # `not (lo <= alpha <= up)` also catches a NaN alpha.
        alpha = jnp.where((alpha >= lo) & (alpha <= up), alpha, reset(lo, up))
        phi, phi_prime = phi_and_derivative(alpha, suf, s, Delta)
        up = jnp.where(phi < 0, alpha, up)
        ratio = _safe_div(phi, phi_prime)
        lo = jnp.maximum(lo, alpha - ratio)
        alpha = alpha - (phi + Delta) * ratio / Delta
        return it + 1, alpha, lo, up, jnp.abs(phi) < rtol * Delta

    carry0 = (jnp.asarray(0, jnp.int32), alpha0, alpha_lower, alpha_upper, take_gn)
    _, alpha, _, _, _ = lax.while_loop(cond, body, carry0)

    p = -V @ _safe_div(suf, s**2 + alpha)
    p = p * _safe_div(Delta, jnp.linalg.norm(p))
    return jnp.where(take_gn, p_gn, p), jnp.where(take_gn, 0.0, alpha).astype(dtype)


def update_tr_radius(Delta, actual_reduction, predicted_reduction, step_norm, bound_hit):
    """New radius and reduction ratio (shrink to ``step_norm/4`` on poor agreement,
    double on good agreement when the step reached the boundary)."""
    ratio = jnp.where(
        predicted_reduction > 0,
        _safe_div(actual_reduction, predicted_reduction),
        jnp.where((predicted_reduction == 0) & (actual_reduction == 0), 1.0, 0.0),
    ).astype(Delta.dtype)
    Delta = jnp.where(ratio < 0.25, 0.25 * step_norm, jnp.where((ratio > 0.75) & bound_hit, 2.0 * Delta, Delta))
    return Delta, ratio


def compute_jac_scale(J, scale_inv_old=None, col=None):
    """Inverse variable scales from the Jacobian's column norms (Moré 1977): zero
    norms become 1 at the start; afterwards a scale never grows back
    (``max(norms, scale_inv_old)``). ``col``: the norms, when ``J`` is not a matrix."""
    if col is None:
        col = jnp.sqrt(jnp.sum(J**2, axis=0))
    if scale_inv_old is None:
        return jnp.where(col == 0, 1.0, col)
    return jnp.maximum(col, scale_inv_old)


# Machine epsilons above this (float32's 1.2e-7, not float64's 2.2e-16) mark a coarse
# dtype, in which `check_termination` also accepts the model's verdict.
_COARSE_EPS = 1e-10


def is_coarse(dtype):
    """Whether ``check_termination``'s float32 form applies to this dtype."""
    return float(jnp.finfo(dtype).eps) > _COARSE_EPS


def resolution_ftol(ftol, m, dtype):
    """The relative cost change below which a coarse dtype cannot resolve the cost of
    ``m`` residuals: ``max(ftol, sqrt(m) eps)`` (see ``check_termination``)."""
    return max(ftol, m**0.5 * float(jnp.finfo(dtype).eps))


def check_termination(dF, F, dx_norm, x_norm, ratio, ftol, xtol, model_decrease=None, m=1):
    """SciPy's status for ``ftol``/``xtol`` tests: 4 both, 2 ftol, 3 xtol, 0 none.

    SciPy's ftol test needs the actual reduction ``dF`` resolved to ``ftol * F``. In
    float32 it rarely is: each residual carries a rounding error of eps times the size
    of the *data* it is computed from, not of the residual, so near the minimum ``dF``
    is noise of several ulps of ``F``; steps are then rejected at random and the fit
    shrinks its radius until the xtol test fires (measured on 50-point exponential
    fits: 6.6 evaluations per fit against 5.1 in float64, 90% ending on xtol). So in a
    coarse dtype (float32, bfloat16, float16) the ftol test also passes when
    ``model_decrease`` (the largest decrease the local Gauss-Newton model predicts: that
    of its unconstrained minimiser) and ``dF`` are both at most
    ``max(ftol, sqrt(m) eps) * F``, ``sqrt(m) eps`` being the relative resolution of a
    sum of ``m`` rounded squares: nothing the model can offer is resolvable and the
    function agrees. This is MINPACK's form of the test (More, Garbow & Hillstrom, "User
    Guide for MINPACK-1", ANL-80-74, 1980: both the actual and the predicted relative
    reductions at most ``ftol``), one-sided in the noisy ``dF``: a trial that raises the
    cost is rejected and the fit ends at the current point, which the model already
    certifies. A disabled ftol (``None``, stored as 0) stays disabled; float64 keeps
    SciPy's test exactly.
    """
    ftol_ok = (dF < ftol * F) & (ratio > 0.25)
    dtype = jnp.result_type(F)
    if model_decrease is not None and ftol > 0 and is_coarse(dtype):
        floor = resolution_ftol(ftol, m, dtype) * F
        ftol_ok = ftol_ok | ((model_decrease <= floor) & (dF <= floor))
    xtol_ok = dx_norm < xtol * (xtol + x_norm)
    return jnp.where(ftol_ok & xtol_ok, 4, jnp.where(ftol_ok, 2, jnp.where(xtol_ok, 3, 0))).astype(jnp.int32)


def evaluate_quadratic(J, g, s, diag=None):
    """``0.5 s^T (J^T J + diag) s + g^T s``."""
    Js = J @ s
    q = jnp.dot(Js, Js)
    if diag is not None:
        q = q + jnp.dot(s * diag, s)
    return 0.5 * q + jnp.dot(g, s)


def build_quadratic_1d(J, g, s, diag=None, s0=None):
    """Coefficients ``(a, b, c)`` of ``f(t) = a t^2 + b t + c`` along ``s0 + t s``."""
    v = J @ s
    a = jnp.dot(v, v)
    if diag is not None:
        a = a + jnp.dot(s * diag, s)
    a = 0.5 * a
    b = jnp.dot(g, s)
    c = jnp.zeros_like(a)
    if s0 is not None:
        u = J @ s0
        b = b + jnp.dot(u, v)
        c = 0.5 * jnp.dot(u, u) + jnp.dot(g, s0)
        if diag is not None:
            b = b + jnp.dot(s0 * diag, s)
            c = c + 0.5 * jnp.dot(s0 * diag, s0)
    return a, b, c


def minimize_quadratic_1d(a, b, lb, ub, c=0.0):
    """Minimise ``a t^2 + b t + c`` over ``[lb, ub]``: ``(t, value)``."""
    extremum = -0.5 * _safe_div(b, a)
    inside = (a != 0) & (lb < extremum) & (extremum < ub)
    t = jnp.stack([lb, ub, jnp.where(inside, extremum, lb)]).astype(jnp.result_type(a))
    y = t * (a * t + b) + c
    i = jnp.argmin(y)
    return t[i], y[i]


def solve_trust_region_2d(B, g, Delta, n_grid=64, n_newton=8):
    """Global minimiser of ``0.5 p^T B p + g^T p`` over ``||p|| <= Delta`` in two
    dimensions (``B`` symmetric, possibly indefinite): the subspace subproblem of
    ``trf`` with ``tr_solver='lsmr'`` (Branch, Coleman & Li 1999, section 3).

    The Newton point ``-B^{-1} g`` is taken when ``B`` is positive definite and the
    point lies inside the region. Otherwise the minimiser lies on the circle
    ``p = Delta (cos phi, sin phi)``, where the model is a trigonometric polynomial of
    degree 2: safeguarded Newton steps on ``phi`` from ``n_grid`` equally spaced angles
    reach every local minimum, and the best is kept. (SciPy
    finds the same point as a root of a quartic; this form has no polynomial roots to
    compute and is branch-free.) Returns ``(p, newton_step_taken)``.
    """
    a, b, d = B[0, 0], B[0, 1], B[1, 1]
    det = a * d - b * b
    pos_def = (a > 0) & (det > 0)
    det_safe = jnp.where(pos_def, det, 1)
    p_newton = -jnp.stack([d * g[0] - b * g[1], a * g[1] - b * g[0]]) / det_safe
    inside = pos_def & (jnp.dot(p_newton, p_newton) <= Delta**2)

    def value(phi):
        c, s = jnp.cos(phi), jnp.sin(phi)
        return 0.5 * Delta**2 * (a * c * c + 2 * b * c * s + d * s * s) + Delta * (g[0] * c + g[1] * s)

    # Newton from every grid angle at once (cheap: vectors of n_grid), then the best:
    # with two nearly equal local minima a single start can polish the wrong one.
    phi = jnp.linspace(0, 2 * jnp.pi, n_grid, endpoint=False, dtype=g.dtype)

    def newton(_, phi):
        c, s = jnp.cos(phi), jnp.sin(phi)
        d1 = Delta**2 * ((d - a) * c * s + b * (c * c - s * s)) + Delta * (g[1] * c - g[0] * s)
        d2 = Delta**2 * ((d - a) * (c * c - s * s) - 4 * b * c * s) - Delta * (g[0] * c + g[1] * s)
        trial = phi - d1 / jnp.where(d2 > 0, d2, 1)
        better = (d2 > 0) & (value(trial) < value(phi))
        return jnp.where(better, trial, phi)

    phi = lax.fori_loop(0, n_newton, newton, phi)
    phi = phi[jnp.argmin(value(phi))]
    p_boundary = Delta * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    return jnp.where(inside, p_newton, p_boundary), inside
