"""Dogleg with rectangular trust regions ("dogbox") for bounded nonlinear least squares.

The trust region is a box ``|x_i - x_k,i| <= Delta * scale_i`` rather than a ball, so
its intersection with the bounds ``lb <= x <= ub`` is again a box, and the subproblem

    min_p  0.5 ||J p + f||^2   s.t.  p in ([lb, ub] - x_k) ∩ [-Delta*scale, Delta*scale]

is solved approximately by Powell's dogleg along the path "Cauchy point, then towards
the Gauss-Newton point" (:func:`~jaxopt_lsq._kernels.dogleg.dogleg_step`). Variables
held at a bound that the anti-gradient points out of satisfy their first-order
conditions; they are excluded from the step (``free`` mask) and the first-order
optimality is the infinity norm of the gradient on the free variables. A variable that
a step lands on a bound is put exactly on it, and stays there while the gradient keeps
pushing it out.

With ``tr_solver='lsmr'`` the Gauss-Newton step on the free variables comes from LSMR
(:mod:`jaxopt_lsq._kernels.lsmr`) applied to ``J diag(scale)`` with the active columns
masked out, as in SciPy, and the Jacobian is only ever applied to vectors.

State machine. As in :mod:`jaxopt_lsq._solvers.trf`, each ``step`` is one trial point,
i.e. one evaluation of the residuals, so that ``nfev`` and ``max_nfev`` mean what they
mean in SciPy. A trial that reduces the cost is accepted; the Jacobian, the free set,
the Gauss-Newton step and the Cauchy model are recomputed there (inside ``lax.cond``).
Status precedence at the end of an iteration is SciPy's: callback (-2) > gtol (1) >
ftol/xtol (2, 3, 4) > ``max_nfev`` (0).

References
----------
C. Voglis and I. E. Lagaris, "A Rectangular Trust Region Dogleg Approach for
Unconstrained and Bound Constrained Nonlinear Optimization", WSEAS International
Conference on Applied Mathematics, Corfu, Greece, 2004. J. Nocedal and S. J. Wright,
"Numerical Optimization", 2nd ed., Springer, 2006, ch. 4.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .. import _loss
from .._iterate import AbstractSolver
from .._jacobian import ResidualFunction
from .._kernels.lsmr import lsmr
from .._kernels.bounds import in_bounds
from .._kernels.dogleg import dogleg_step, min_norm_lstsq
from .._kernels.trust_region import (
    build_quadratic_1d,
    check_termination,
    compute_jac_scale,
    evaluate_quadratic,
    is_coarse,
    update_tr_radius,
)
from .._result import RUNNING
from . import _report
from ._common import end_of_trial, evaluate_point, initial_status, jacobian_operator, lsq_cost, start_report


class DogboxState(eqx.Module):
    # Accepted iterate and what is derived from it (updated on accepted steps).
    x: jax.Array
    f_true: jax.Array  # residuals at x
    f: jax.Array  # residuals rescaled for the loss
    cost: jax.Array
    J: jax.Array  # Jacobian rescaled for the loss
    g: jax.Array  # full gradient of the cost, J^T f
    scale_inv: jax.Array
    on_bound: jax.Array  # -1/0/1: x held exactly at its lower/no/upper bound
    # The subproblem at x (updated on accepted steps).
    free: jax.Array  # variables the next step may move
    newton_step: jax.Array  # Gauss-Newton step on the free variables (0 elsewhere)
    a: jax.Array  # model a t^2 + b t along -g_free
    b: jax.Array
    g_norm: jax.Array  # first-order optimality: ||g_free||_inf
    # Trust region (updated every evaluation).
    Delta: jax.Array
    # Counters and reporting.
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    cost0: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    status: jax.Array


_POINT_KEYS = ("x", "f_true", "f", "cost", "J", "g", "scale_inv", "on_bound", "free", "newton_step", "a", "b", "g_norm")


class Dogbox(AbstractSolver):
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
    tr_options: tuple = eqx.field(static=True, default=())  # see TRF

    @property
    def max_steps(self):
        return self.max_nfev

    def cost(self, x, data):
        """The objective being minimised (for implicit differentiation)."""
        return lsq_cost(self, x, data)

    def _op(self, J, x, data):
        return jacobian_operator(self, J, x, data)

    def _evaluate(self, x, f_true, data):
        """Cost, loss-rescaled Jacobian (stored form) and residuals, gradient at ``x``."""
        return evaluate_point(self, x, f_true, data)

    def result_fields(self, x, data):
        """The differentiable result fields as functions of the solution ``x``."""
        f_true = self.residuals(x, data.args, data.kwargs)
        cost, J, _, g = self._evaluate(x, f_true, data)
        return dict(cost=cost, fun=f_true, jac=J, grad=g)

    def _at_point(self, x, f_true, on_bound, data, scale_inv_old):
        """Jacobian, loss rescaling, free set, Gauss-Newton step and Cauchy model at x."""
        cost, J, f, g = self._evaluate(x, f_true, data)
        free = ~(on_bound * g < 0)
        g_free = jnp.where(free, g, 0)
        if self.tr_solver == "lsmr":
            op = self._op(J, x, data)
            col = op.col_norms() if self.jac_scale else None
            scale_inv = compute_jac_scale(J, scale_inv_old, col=col) if self.jac_scale else 1 / data.x_scale
            # LSMR in the scaled variables, active columns masked (SciPy's lsmr_operator).
            d = jnp.where(free, 1 / scale_inv, 0)
            opts = dict(self.tr_options)
            J_d = op.right_scaled(d)  # scaled once: LSMR applies it many times
            gn = lsmr(
                J_d.matvec,
                J_d.rmatvec,
                f,
                x.shape[0],
                damp=opts["damp"],
                atol=opts["atol"],
                btol=opts["btol"],
                conlim=opts["conlim"],
                maxiter=opts["maxiter"],
                x0=data.lsmr_x0,
            ).x
            newton_step = -gn * d
            Jg = op.matvec(g_free)
            a, b = 0.5 * jnp.dot(Jg, Jg), -jnp.dot(g_free, g_free)
        else:
            scale_inv = compute_jac_scale(J, scale_inv_old) if self.jac_scale else 1 / data.x_scale
            J_free = jnp.where(free[None, :], J, 0)
            newton_step = jnp.where(free, min_norm_lstsq(J_free, -f), 0)
            a, b, _ = build_quadratic_1d(J_free, g_free, -g_free)
        return dict(
            x=x, f_true=f_true, f=f, cost=cost, J=J, g=g, scale_inv=scale_inv, on_bound=on_bound,
            free=free, newton_step=newton_step, a=a, b=b, g_norm=jnp.max(jnp.abs(g_free)),
        )

    def init(self, x0, data):
        dtype = x0.dtype
        feasible = in_bounds(x0, data.lb, data.ub)
        on_bound = jnp.where(x0 == data.lb, -1, jnp.where(x0 == data.ub, 1, 0)).astype(jnp.int32)
        # A NumPy `fun` was already called at x0 on the host: do not call it again.
        f0 = self.residuals(x0, data.args, data.kwargs) if data.f0 is None else data.f0
        pt = self._at_point(x0, f0, on_bound, data, None)
        Delta = jnp.max(jnp.abs(x0 * pt["scale_inv"]))
        Delta = jnp.where(Delta == 0, 1.0, Delta).astype(dtype)
        status = initial_status(self, feasible, f0, pt["J"], pt["g_norm"])
        one = jnp.asarray(1, jnp.int32)
        state = DogboxState(
            **pt,
            Delta=Delta,
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

    def step(self, state, data):
        scale = 1 / state.scale_inv
        g_free = jnp.where(state.free, state.g, 0)
        step, on_bound_free, tr_hit = dogleg_step(
            state.x, state.newton_step, g_free, state.a, state.b, state.Delta * scale, data.lb, data.ub, state.free
        )
        J_free = self._op(state.J, state.x, data) if self.tr_solver == "lsmr" else jnp.where(state.free[None, :], state.J, 0)
        predicted = -evaluate_quadratic(J_free, g_free, step)
        # (float32's form of the ftol test needs the Gauss-Newton step's own decrease.)
        gn_decrease = -evaluate_quadratic(J_free, g_free, state.newton_step) if is_coarse(step.dtype) else None
        # Clipping guards against round-off putting the trial outside the bounds (SciPy gh11403).
        x_new = jnp.clip(state.x + step, data.lb, data.ub)

        f_new = self.residuals(x_new, data.args, data.kwargs)
        nfev = state.nfev + 1
        step_h_norm = jnp.max(jnp.abs(step * state.scale_inv))
        finite = jnp.all(jnp.isfinite(f_new))
        cost_new = _loss.cost(self.loss, f_new, data.f_scale)
        actual_reduction = state.cost - cost_new
        Delta_new, ratio = update_tr_radius(state.Delta, actual_reduction, predicted, step_h_norm, tr_hit)
        step_norm = jnp.linalg.norm(step)
        term = check_termination(
            actual_reduction, state.cost, step_norm, jnp.linalg.norm(state.x), ratio, self.ftol, self.xtol,
            gn_decrease, f_new.shape[0],
        )
        term = jnp.where(finite, term, 0)
        # A non-finite trial shrinks the region and is never accepted.
        Delta = jnp.where(finite, Delta_new, 0.25 * step_h_norm)
        accept = finite & (actual_reduction > 0)
        iteration_ends = accept | (term != 0) | (nfev >= self.max_nfev)

        current = {k: getattr(state, k) for k in _POINT_KEYS}

        def accepted(_):
            on_bound = jnp.where(state.free, on_bound_free, state.on_bound)
            # Variables that landed on a bound are put exactly on it.
            x = jnp.where(on_bound == -1, data.lb, jnp.where(on_bound == 1, data.ub, x_new))
            return self._at_point(x, f_new, on_bound, data, state.scale_inv if self.jac_scale else None)

        pt = lax.cond(accept, accepted, lambda _: current, None)
        zero = jnp.zeros((), state.cost.dtype)
        rejected_end = iteration_ends & ~accept
        state = eqx.tree_at(
            lambda s: [getattr(s, k) for k in _POINT_KEYS]
            + [s.Delta, s.nfev, s.njev, s.nit, s.actual_reduction, s.step_norm],
            state,
            [pt[k] for k in _POINT_KEYS]
            + [
                Delta,
                nfev,
                state.njev + accept.astype(jnp.int32),
                state.nit + iteration_ends.astype(jnp.int32),
                jnp.where(rejected_end, zero, jnp.where(accept, actual_reduction, state.actual_reduction)),
                jnp.where(rejected_end, zero, jnp.where(accept, step_norm, state.step_norm)),
            ],
        )

        return end_of_trial(self, state, iteration_ends, accept, term)

    def postprocess(self, state, data):
        if self.verbose >= 1:
            _report.summary(state)
        return dict(
            x=state.x,
            cost=state.cost,
            fun=state.f_true,
            jac=state.J,
            grad=state.g,
            optimality=state.g_norm,
            active_mask=state.on_bound,
            nfev=state.nfev,
            njev=state.njev,
            status=state.status,
        )
