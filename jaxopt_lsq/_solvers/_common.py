"""What the trust-region least-squares solvers (trf, dogbox) share at the end of a trial.

After each trial (one evaluation of the residuals) an *iteration* may end: a trial was
accepted, a tolerance test fired, or ``max_nfev`` was reached. Then the user's callback
runs, the status is set with SciPy's precedence -- callback stop (-2) > Jacobian not
finite (-3) > gtol (1) > ftol/xtol (2, 3, 4) > max_nfev (0) -- and ``verbose=2`` prints a
row of SciPy's table.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from .. import _loss
from .._jacobian import scale_rows
from .._result import RUNNING
from . import _report


def jacobian_operator(solver, J, x, data):
    """The stored Jacobian ``J`` at ``x`` as a :class:`~jaxopt_lsq._jacobian.JacobianOperator`."""
    return solver.residuals.operator(J, x, data.args, data.kwargs, data.sparsity)


def evaluate_point(solver, x, f_true, data):
    """At an accepted ``x`` (residuals ``f_true``): the cost, the Jacobian in its stored
    form and the residuals, both rescaled for the robust loss, and the gradient."""
    sp = data.sparsity
    kind = solver.residuals.kind
    J = solver.residuals.jacobian(x, f_true, data.args, data.kwargs, data.lb, data.ub, data.diff_step, sp)
    cost, J, f = _loss.cost_and_scaled(
        solver.loss, J, f_true, data.f_scale, scale_rows=lambda J, s: scale_rows(kind, J, s, sp)
    )
    g = J.T @ f if kind == "dense" else jacobian_operator(solver, J, x, data).rmatvec(f)
    return cost, J, f, g


def end_of_trial(solver, state, iteration_ends, accept, term):
    """Callback, status and progress row after one trial; returns the new state.

    ``state`` has already been updated with the trial (``nfev``, the accepted point and
    its Jacobian ``J`` and optimality ``g_norm``); ``term`` is the ftol/xtol status (0 if
    none) of the trial.
    """
    stop_cb = jnp.asarray(False)
    if solver.callback is not None:
        stop_cb = lax.cond(
            iteration_ends,
            lambda st: _report.call_user_callback(solver.callback, st),
            lambda st: jnp.asarray(False),
            state,
        )
    jac_bad = accept & ~jnp.all(jnp.isfinite(state.J))
    status = jnp.where(
        ~iteration_ends,
        RUNNING,
        jnp.where(
            stop_cb,
            -2,
            jnp.where(
                jac_bad,
                -3,
                jnp.where(
                    state.g_norm < solver.gtol,
                    1,
                    jnp.where(term != 0, term, jnp.where(state.nfev >= solver.max_nfev, 0, RUNNING)),
                ),
            ),
        ),
    ).astype(jnp.int32)
    state = eqx.tree_at(lambda s: s.status, state, status)
    if solver.verbose == 2:
        lax.cond(iteration_ends & ~stop_cb, lambda st: _report.row(st), lambda st: None, state)
    return state


def initial_status(solver, feasible, f0, J, g_norm):
    """Status at ``x0``: -5 infeasible, -4 residuals not finite, -3 Jacobian not finite
    (traced calls; eager calls raise before), 1 gtol already met, 0 if ``max_nfev == 1``."""
    return jnp.where(
        ~feasible,
        -5,
        jnp.where(
            ~jnp.all(jnp.isfinite(f0)),
            -4,
            jnp.where(
                ~jnp.all(jnp.isfinite(J)),
                -3,
                jnp.where(g_norm < solver.gtol, 1, jnp.where(solver.max_nfev == 1, 0, RUNNING)),
            ),
        ),
    ).astype(jnp.int32)


def start_report(solver, state):
    """``verbose=2``: SciPy's table header and the row of the starting point."""
    if solver.verbose == 2:
        _report.header()
        _report.row(state)


def lsq_cost(solver, x, data):
    """The objective a least-squares solver minimises (for implicit differentiation)."""
    return _loss.cost(solver.loss, solver.residuals(x, data.args, data.kwargs), data.f_scale)


def lsq_result_fields(solver, x, data):
    """The differentiable result fields as functions of the solution ``x``."""
    f_true = solver.residuals(x, data.args, data.kwargs)
    J = solver.residuals.jacobian(x, f_true, data.args, data.kwargs, data.lb, data.ub, data.diff_step)
    cost, J, f = _loss.cost_and_scaled(solver.loss, J, f_true, data.f_scale)
    return dict(cost=cost, fun=f_true, jac=J, grad=J.T @ f)
