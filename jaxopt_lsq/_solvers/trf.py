"""Trust Region Reflective (TRF) for bounded nonlinear least squares.

The method of Branch, Coleman & Li (1999), in the form SciPy's ``least_squares`` uses.
With the Coleman-Li scaling ``v(x)`` (:func:`cl_scaling_vector`) the first-order
conditions of ``min F(x) s.t. lb <= x <= ub`` read ``D(x)^2 g(x) = 0`` with
``D = diag(v**0.5)``. In the scaled ("hat") variables ``x = x_k + D p_h`` the
trust-region subproblem is

    min_p_h  0.5 ||J_h p_h + f||^2 + 0.5 p_h^T C p_h + ...,   ||p_h|| <= Delta,

with ``J_h = J D`` and ``C = diag(g * dv)`` (the curvature of the scaling). It is the
least-squares problem of the augmented matrix ``[J_h; C**0.5]``, solved exactly from its
SVD by :func:`solve_lsq_trust_region`. The step is then made feasible by
:func:`~jaxopt_lsq._kernels.reflective.select_step`: the best of the trust-region step truncated at the bounds
(scaled back by ``theta``), its reflection off the first bound it hits, and the
anti-gradient step (Coleman & Li 1996).

With ``tr_solver='lsmr'`` (large or sparse problems) the Jacobian is only applied to
vectors (:class:`~jaxopt_lsq._jacobian.JacobianOperator`). At each accepted point LSMR
(:mod:`jaxopt_lsq._kernels.lsmr`) gives an approximate (regularised) Gauss-Newton
direction ``gn_h`` of the scaled problem; with bounds it solves the augmented system
``[J_h; diag(diag_h + reg)**0.5]``. The trust-region problem is then solved exactly in
the 2-D subspace ``S = span(g_h, gn_h)`` (:func:`solve_trust_region_2d`), as in Branch,
Coleman & Li (1999) and SciPy. ``regularize`` adds ``reg = -q_ag / Delta**2``, where
``q_ag`` is the model value of the best anti-gradient step in the region, so that LSMR's
direction is never much longer than the region.

State machine. SciPy nests "try trial steps until one reduces the cost" inside "iterate".
Here each ``step`` is one trial, i.e. exactly one evaluation of the residuals, so that
``nfev`` and ``max_nfev`` keep SciPy's meaning. A trial that reduces the cost is
accepted: the Jacobian and the SVD are recomputed there (inside ``lax.cond``), and an
*iteration* ends. Status precedence at the end of an iteration follows SciPy:
callback stop (-2) > gtol (1) > ftol/xtol (2, 3, 4) > ``max_nfev`` (0).

References
----------
M. A. Branch, T. F. Coleman, Y. Li, "A Subspace, Interior, and Conjugate Gradient Method
for Large-Scale Bound-Constrained Minimization Problems", SIAM J. Sci. Comput. 21(1),
1999. T. F. Coleman, Y. Li, "An Interior Trust Region Approach for Nonlinear
Minimization Subject to Bounds", SIAM J. Optim. 6(2), 1996. J. J. Moré (1977), see
:mod:`jaxopt_lsq._kernels.trust_region`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .. import _loss
from .._iterate import AbstractSolver
from .._jacobian import ResidualFunction
from .._kernels.lsmr import lsmr
from .._kernels.bounds import (
    cl_scaling_vector,
    find_active_constraints,
    in_bounds,
    make_strictly_feasible,
)
from .._kernels.reflective import select_step
from .._kernels.trust_region import (
    check_termination,
    compute_jac_scale,
    evaluate_quadratic,
    is_coarse,
    minimize_quadratic_1d,
    solve_lsq_trust_region,
    solve_trust_region_2d,
    update_tr_radius,
)
from .._result import RUNNING
from . import _report
from ._common import end_of_trial, evaluate_point, initial_status, jacobian_operator, start_report


class LsqData(eqx.Module):
    """The arrays of a least-squares problem that may change between calls (traced)."""

    lb: jax.Array
    ub: jax.Array
    x_scale: jax.Array  # ones when x_scale='jac' (unused then)
    f_scale: jax.Array
    diff_step: Any  # None or array
    args: Any
    kwargs: Any
    f0: Any = None  # residuals at the (strictly feasible) x0, when already evaluated on the host
    sparsity: Any = None  # a _jacobian.Sparsity for sparse Jacobians
    lsmr_x0: Any = None  # tr_options['x0']: LSMR's initial guess (scaled variables), or None


class TRFState(eqx.Module):
    # Accepted iterate and what is derived from it (updated on accepted steps).
    x: jax.Array
    f_true: jax.Array  # residuals at x
    f: jax.Array  # residuals rescaled for the loss
    cost: jax.Array
    J: jax.Array  # Jacobian rescaled for the loss (stored form: matrix, values, row scaling)
    g: jax.Array  # gradient of the cost, J^T f
    scale_inv: jax.Array  # variable scaling (x_scale, or the Jacobian's column norms)
    # The trust-region subproblem at x (updated on accepted steps).
    d: jax.Array
    g_h: jax.Array
    diag_h: jax.Array
    theta: jax.Array
    # tr_solver='exact': the SVD of J_h (None otherwise).
    J_h: Any
    uf: Any
    s: Any
    V: Any
    # tr_solver='lsmr': the 2-D subspace S = span(g_h, gn_h) (None otherwise).
    S: Any
    JS: Any  # J_h S
    B_S: Any  # S^T (J_h^T J_h + diag(diag_h)) S
    g_S: Any
    g_norm: jax.Array  # first-order optimality
    # Trust region (updated every evaluation).
    Delta: jax.Array
    alpha: jax.Array
    # Counters and reporting.
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    cost0: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    status: jax.Array


_POINT_KEYS = (
    "x", "f_true", "f", "cost", "J", "g", "scale_inv", "d", "g_h", "diag_h", "theta", "g_norm",
    "J_h", "uf", "s", "V", "S", "JS", "B_S", "g_S",
)


class TRF(AbstractSolver):
    residuals: ResidualFunction
    loss: Any = eqx.field(static=True)  # name or callable
    ftol: float = eqx.field(static=True)
    xtol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    max_nfev: int = eqx.field(static=True)
    jac_scale: bool = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)
    verbose: int = eqx.field(static=True)
    callback: Callable | None = eqx.field(static=True)
    tr_solver: str = eqx.field(static=True, default="exact")
    # tr_options of 'lsmr' as sorted (key, value) pairs: regularize, damp, atol, btol,
    # conlim, maxiter (validated by the facade).
    tr_options: tuple = eqx.field(static=True, default=())

    @property
    def max_steps(self):
        return self.max_nfev

    # ----------------------------------------------------------------------------------
    def _cost(self, f, data):
        return _loss.cost(self.loss, f, data.f_scale)

    def _subproblem(self, x, J, f, g, scale_inv, Delta, data):
        if self.tr_solver == "lsmr":
            return self._subproblem_lsmr(x, J, f, g, scale_inv, Delta, data)
        return self._subproblem_exact(x, J, f, g, scale_inv, data)

    def _hat_scaling(self, x, g, scale_inv, data):
        """The scaled ("hat") variables at x: ``d`` (Coleman-Li scaling with x_scale),
        the curvature ``diag_h`` of the scaling, the step-back ratio ``theta`` and the
        first-order optimality."""
        scale = 1 / scale_inv
        if self.bounded:
            v, dv = cl_scaling_vector(x, g, data.lb, data.ub)
            g_norm = jnp.max(jnp.abs(g * v))
            v = jnp.where(dv != 0, v * scale_inv, v)
            return jnp.sqrt(v) * scale, g * dv * scale, jnp.maximum(0.995, 1 - g_norm), g_norm
        return scale, jnp.zeros_like(g), jnp.ones((), x.dtype), jnp.max(jnp.abs(g))

    def _subproblem_exact(self, x, J, f, g, scale_inv, data):
        """Everything the trial steps need at an accepted point (one SVD)."""
        m, n = J.shape
        d, diag_h, theta, g_norm = self._hat_scaling(x, g, scale_inv, data)
        J_h = J * d
        if self.bounded:
            J_aug = jnp.concatenate([J_h, jnp.diag(jnp.sqrt(diag_h))])
            U, s, Vt = jnp.linalg.svd(J_aug, full_matrices=False)
            uf = U[:m].T @ f
        else:
            U, s, Vt = jnp.linalg.svd(J_h, full_matrices=False)
            uf = U.T @ f
        return dict(
            d=d, g_h=d * g, diag_h=diag_h, J_h=J_h, uf=uf, s=s, V=Vt.T, theta=theta, g_norm=g_norm,
            S=None, JS=None, B_S=None, g_S=None,
        )

    def _op(self, J, x, data):
        return jacobian_operator(self, J, x, data)

    def _subproblem_lsmr(self, x, J, f, g, scale_inv, Delta, data):
        """LSMR's Gauss-Newton direction and the 2-D subspace model at an accepted point."""
        m = f.shape[0]
        n = x.shape[0]
        opts = dict(self.tr_options)
        d, diag_h, theta, g_norm = self._hat_scaling(x, g, scale_inv, data)
        g_h = d * g
        # J_h = J diag(d), scaled once (LSMR applies it and its transpose many times).
        J_h_op = self._op(J, x, data).right_scaled(d)
        J_h, J_h_T = J_h_op.matvec, J_h_op.rmatvec

        reg_term = jnp.zeros((), x.dtype)
        if opts["regularize"]:
            Jg = J_h(g_h)
            a = 0.5 * (jnp.dot(Jg, Jg) + jnp.dot(g_h * diag_h, g_h))
            b = -jnp.dot(g_h, g_h)
            to_tr = Delta / jnp.linalg.norm(g_h)
            ag_value = minimize_quadratic_1d(a, b, jnp.zeros_like(to_tr), to_tr)[1]
            reg_term = -ag_value / Delta**2
        lsmr_kw = dict(
            atol=opts["atol"], btol=opts["btol"], conlim=opts["conlim"], maxiter=opts["maxiter"], x0=data.lsmr_x0
        )
        if self.bounded:
            diag_aug = jnp.sqrt(diag_h + reg_term)
            gn_h = lsmr(
                lambda v: jnp.concatenate([J_h(v), diag_aug * v]),
                lambda u: J_h_T(u[:m]) + diag_aug * u[m:],
                jnp.concatenate([f, jnp.zeros((n,), f.dtype)]),
                n,
                damp=opts["damp"],
                **lsmr_kw,
            ).x
        else:
            gn_h = lsmr(J_h, J_h_T, f, n, damp=jnp.sqrt(opts["damp"] ** 2 + reg_term), **lsmr_kw).x
        S, _ = jnp.linalg.qr(jnp.stack([g_h, gn_h], axis=1), mode="reduced")
        JS = jnp.stack([J_h(S[:, 0]), J_h(S[:, 1])], axis=1)
        hi = lax.Precision.HIGHEST
        B_S = jnp.dot(JS.T, JS, precision=hi) + jnp.dot(S.T * diag_h, S, precision=hi)
        g_S = jnp.dot(S.T, g_h, precision=hi)
        return dict(
            d=d, g_h=g_h, diag_h=diag_h, theta=theta, g_norm=g_norm,
            J_h=None, uf=None, s=None, V=None, S=S, JS=JS, B_S=B_S, g_S=g_S,
        )

    def _evaluate(self, x, f_true, data):
        """Cost, loss-rescaled Jacobian and residuals, and gradient at ``x``."""
        return evaluate_point(self, x, f_true, data)

    def cost(self, x, data):
        """The objective being minimised (for implicit differentiation)."""
        return self._cost(self.residuals(x, data.args, data.kwargs), data)

    def result_fields(self, x, data):
        """The differentiable result fields as functions of the solution ``x``."""
        f_true = self.residuals(x, data.args, data.kwargs)
        cost, J, _, g = self._evaluate(x, f_true, data)
        return dict(cost=cost, fun=f_true, jac=J, grad=g)

    def _point(self, x, f_true, data, scale_inv_old):
        """Jacobian, loss rescaling, gradient and scaling at an accepted x."""
        cost, J, f, g = self._evaluate(x, f_true, data)
        if self.jac_scale:
            col = None if self.residuals.kind == "dense" else self._op(J, x, data).col_norms()
            scale_inv = compute_jac_scale(J, scale_inv_old, col=col)
        else:
            scale_inv = 1 / data.x_scale
        return dict(x=x, f_true=f_true, f=f, cost=cost, J=J, g=g, scale_inv=scale_inv)

    def _at_point(self, x, f_true, data, scale_inv_old, Delta):
        """:meth:`_point` and the subproblem at an accepted x (``Delta``: the radius of
        the next trial, which the lsmr subproblem's regularisation uses)."""
        pt = self._point(x, f_true, data, scale_inv_old)
        sub = self._subproblem(x, pt["J"], pt["f"], pt["g"], pt["scale_inv"], Delta, data)
        return dict(**pt, **sub)

    # ----------------------------------------------------------------------------------
    def init(self, x0, data):
        dtype = x0.dtype
        feasible = in_bounds(x0, data.lb, data.ub)
        if self.bounded:
            x0 = make_strictly_feasible(x0, data.lb, data.ub)
        # A NumPy `fun` was already called at x0 on the host: do not call it again.
        f0 = self.residuals(x0, data.args, data.kwargs) if data.f0 is None else data.f0
        pt = self._point(x0, f0, data, None)
        if self.bounded:
            v, dv = cl_scaling_vector(x0, pt["g"], data.lb, data.ub)
            v = jnp.where(dv != 0, v * pt["scale_inv"], v)
            Delta = jnp.linalg.norm(x0 * pt["scale_inv"] / jnp.sqrt(v))
        else:
            Delta = jnp.linalg.norm(x0 * pt["scale_inv"])
        Delta = jnp.where(Delta == 0, 1.0, Delta).astype(dtype)
        pt.update(self._subproblem(x0, pt["J"], pt["f"], pt["g"], pt["scale_inv"], Delta, data))
        one = jnp.asarray(1, jnp.int32)
        status = initial_status(self, feasible, f0, pt["J"], pt["g_norm"])
        state = TRFState(
            **pt,
            Delta=Delta,
            alpha=jnp.zeros((), dtype),
            nfev=one,
            njev=one,
            nit=jnp.asarray(0, jnp.int32),
            cost0=pt["cost"],
            actual_reduction=jnp.full((), jnp.nan, dtype),
            step_norm=jnp.full((), jnp.nan, dtype),
            status=status,
        )
        start_report(self, state)
        return state

    def terminate(self, state):
        return state.status != RUNNING

    def _model_decrease(self, state):
        """The decrease of the quadratic model at its unconstrained minimiser (in the
        subspace for ``lsmr``): what a Gauss-Newton step could gain at most."""
        if self.tr_solver == "lsmr":
            B, g = state.B_S, state.g_S
            det = B[0, 0] * B[1, 1] - B[0, 1] * B[1, 0]
            quad = (B[1, 1] * g[0] ** 2 - 2 * B[0, 1] * g[0] * g[1] + B[0, 0] * g[1] ** 2) / jnp.where(det > 0, det, 1)
            return jnp.where(det > 0, 0.5 * quad, jnp.inf)
        return 0.5 * jnp.sum(jnp.where(state.s > 0, state.uf**2, 0))

    def step(self, state, data):
        # As in SciPy, the rank test counts the residuals only (not the rows that the
        # bounded case's augmentation adds): with m < n no Gauss-Newton step is taken.
        if self.tr_solver == "lsmr":
            p_S, _ = solve_trust_region_2d(state.B_S, state.g_S, state.Delta)
            p_h = state.S @ p_S
            alpha = state.alpha
        else:
            # As in SciPy, the rank test counts the residuals only (not the rows that the
            # bounded case's augmentation adds): with m < n no Gauss-Newton step is taken.
            m, n = state.J.shape
            p_h, alpha = solve_lsq_trust_region(n, m, state.uf, state.s, state.V, state.Delta, state.alpha)
        if self.bounded:
            p = state.d * p_h
            J_h = state.J_h if self.tr_solver == "exact" else self._op(state.J, state.x, data).right_scaled(state.d)
            step, step_h, predicted = select_step(
                state.x, J_h, state.diag_h, state.g_h, p, p_h, state.d, state.Delta, data.lb, data.ub, state.theta
            )
            x_new = make_strictly_feasible(state.x + step, data.lb, data.ub, rstep=0)
        else:
            step_h = p_h
            if self.tr_solver == "lsmr":
                Js = state.JS @ p_S  # J_h step_h, in the subspace
                predicted = -(0.5 * jnp.dot(Js, Js) + jnp.dot(state.g_h, step_h))
            else:
                predicted = -evaluate_quadratic(state.J_h, state.g_h, step_h)
            step = state.d * step_h
            x_new = state.x + step

        f_new = self.residuals(x_new, data.args, data.kwargs)
        nfev = state.nfev + 1
        step_h_norm = jnp.linalg.norm(step_h)
        finite = jnp.all(jnp.isfinite(f_new)) & jnp.all(jnp.isfinite(x_new))
        cost_new = self._cost(f_new, data)
        actual_reduction = state.cost - cost_new
        Delta_new, ratio = update_tr_radius(
            state.Delta, actual_reduction, predicted, step_h_norm, step_h_norm > 0.95 * state.Delta
        )
        step_norm = jnp.linalg.norm(step)
        term = check_termination(
            actual_reduction, state.cost, step_norm, jnp.linalg.norm(state.x), ratio, self.ftol, self.xtol,
            self._model_decrease(state) if is_coarse(x_new.dtype) else None, f_new.shape[0],
        )
        term = jnp.where(finite, term, 0)
        # Trust-region bookkeeping of SciPy's inner loop: a non-finite trial shrinks the
        # region; a terminating trial leaves it as it was.
        Delta = jnp.where(~finite, 0.25 * step_h_norm, jnp.where(term != 0, state.Delta, Delta_new))
        alpha = jnp.where(finite & (term == 0), alpha * (state.Delta / Delta_new), alpha)

        accept = finite & (actual_reduction > 0)
        iteration_ends = accept | (term != 0) | (nfev >= self.max_nfev)

        keys = _POINT_KEYS
        current = {k: getattr(state, k) for k in keys}

        def accepted(_):
            return self._at_point(x_new, f_new, data, state.scale_inv if self.jac_scale else None, Delta)

        pt = lax.cond(accept, accepted, lambda _: current, None)
        njev = state.njev + accept.astype(jnp.int32)
        nit = state.nit + iteration_ends.astype(jnp.int32)
        zero = jnp.zeros((), state.cost.dtype)
        state = dataclasses.replace(
            state,
            **{k: pt[k] for k in keys},
            Delta=Delta,
            alpha=alpha,
            nfev=nfev,
            njev=njev,
            nit=nit,
            actual_reduction=jnp.where(
                iteration_ends & ~accept, zero, jnp.where(accept, actual_reduction, state.actual_reduction)
            ),
            step_norm=jnp.where(iteration_ends & ~accept, zero, jnp.where(accept, step_norm, state.step_norm)),
        )

        return end_of_trial(self, state, iteration_ends, accept, term)

    def postprocess(self, state, data):
        if self.bounded:
            active = find_active_constraints(state.x, data.lb, data.ub, rtol=self.xtol)
        else:
            active = jnp.zeros(state.x.shape, jnp.int32)
        if self.verbose >= 1:
            _report.summary(state)
        return dict(
            x=state.x,
            cost=state.cost,
            fun=state.f_true,
            jac=state.J,
            grad=state.g,
            optimality=state.g_norm,
            active_mask=active,
            nfev=state.nfev,
            njev=state.njev,
            status=state.status,
        )
