"""Levenberg-Marquardt in the MINPACK style (``method='lm'``), unconstrained, m >= n.

Each iteration solves the scaled trust-region subproblem

    min_p ||J p + f||   s.t.   ||D p|| <= Delta,

whose solution is ``p = -(J^T J + par D^2)^-1 J^T f`` for the Levenberg-Marquardt
parameter ``par >= 0`` found by :func:`~jaxopt_lsq._kernels.lmpar.lmpar` from a
column-pivoted QR factorisation of ``J`` (Moré 1977). ``D`` are the column norms of
``J``, never decreasing (``x_scale='jac'``, the default for 'lm'), or ``1 / x_scale``.
The radius and ``par`` are updated from the ratio of actual to predicted reduction of
``||f||^2``, with MINPACK's rules (including the quadratic interpolation of the step
length on a poor step); a trial is accepted when that ratio is at least 1e-4.

Termination is MINPACK's (``lmder``), reported with SciPy's codes
(``FROM_MINPACK_TO_COMMON``): ``ftol`` (2) when both the actual and the predicted
relative reductions are at most ``ftol`` (in float32 also the form of
:func:`.._kernels.trust_region.check_termination`); ``xtol`` (3) when ``Delta <= xtol ||D x||``;
both (4); ``gtol`` (1) when the largest cosine between ``f`` and a column of ``J`` is
at most ``gtol``; ``max_nfev`` (0) when ``nfev >= max_nfev`` after a trial. As in
SciPy, ``nfev`` counts evaluations of ``fun`` made by the algorithm (not those of
finite differences), and the returned ``jac``, ``grad`` and ``optimality`` are those
at the final ``x``.

State machine: one trial (one evaluation of ``fun``) per ``step``; on acceptance the
Jacobian and its QR factorisation are recomputed (inside ``lax.cond``).

References
----------
J. J. Moré, "The Levenberg-Marquardt Algorithm: Implementation and Theory", Numerical
Analysis, Lecture Notes in Mathematics 630, Springer, 1977, pp. 105-116.
J. J. Moré, B. S. Garbow, K. E. Hillstrom, "User Guide for MINPACK-1", ANL-80-74, 1980.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._iterate import AbstractSolver
from .._jacobian import ResidualFunction
from .._kernels.lmpar import lmpar, qr_pivoted
from .._kernels.trust_region import is_coarse, resolution_ftol
from .._result import RUNNING
from . import _report

# MINPACK's initial step bound factor (SciPy's `factor=100`).
FACTOR = 100.0


def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


class LMState(eqx.Module):
    # Accepted iterate (updated on accepted steps).
    x: jax.Array
    f: jax.Array
    fnorm: jax.Array
    xnorm: jax.Array  # ||D x|| with D as it was when x was accepted (MINPACK)
    J: jax.Array
    # The factorisation at x (updated on accepted steps).
    R: jax.Array
    perm: jax.Array
    qtf: jax.Array
    diag: jax.Array
    gnorm: jax.Array  # largest |cosine| between f and a column of J (the gtol test)
    # Trust region (updated every evaluation).
    Delta: jax.Array
    par: jax.Array
    first: jax.Array  # no step accepted yet: Delta is capped by the first steps' length
    # Counters and reporting.
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    cost0: jax.Array
    cost: jax.Array
    g_norm: jax.Array  # ||J^T f||_inf, SciPy's `optimality`
    status: jax.Array


_POINT_KEYS = ("x", "f", "fnorm", "xnorm", "J", "R", "perm", "qtf", "diag", "gnorm", "cost", "g_norm")


class LM(AbstractSolver):
    residuals: ResidualFunction
    loss: Any = eqx.field(static=True)  # always 'linear' (checked by the facade)
    ftol: float = eqx.field(static=True)
    xtol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    max_nfev: int = eqx.field(static=True)
    jac_scale: bool = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)  # always False for 'lm'
    verbose: int = eqx.field(static=True)  # only the final report, as in SciPy
    callback: Callable | None = eqx.field(static=True)  # unused, as in SciPy

    @property
    def max_steps(self):
        return self.max_nfev

    def cost(self, x, data):
        """The objective being minimised (for implicit differentiation)."""
        f = self.residuals(x, data.args, data.kwargs)
        return 0.5 * jnp.dot(f, f)

    def result_fields(self, x, data):
        """The differentiable result fields as functions of the solution ``x``."""
        f = self.residuals(x, data.args, data.kwargs)
        J = self.residuals.jacobian(x, f, data.args, data.kwargs, data.lb, data.ub, data.diff_step)
        return dict(cost=0.5 * jnp.dot(f, f), fun=f, jac=J, grad=J.T @ f)

    def _at_point(self, x, f, fnorm, xnorm, diag_old, data):
        """Jacobian, QR factorisation, gtol measure and (updated) scaling at x."""
        J = self.residuals.jacobian(x, f, data.args, data.kwargs, data.lb, data.ub, data.diff_step)
        R, perm, qtf = qr_pivoted(J, f)
        acnorm = jnp.linalg.norm(J, axis=0)
        acn_p = acnorm[perm]
        cos = jnp.abs(_safe_div(R.T @ _safe_div(qtf, fnorm), acn_p))
        gnorm = jnp.where(fnorm != 0, jnp.max(jnp.where(acn_p != 0, cos, 0)), 0.0)
        if not self.jac_scale:
            diag = 1 / data.x_scale
        elif diag_old is None:
            diag = jnp.where(acnorm == 0, 1.0, acnorm)
        else:
            diag = jnp.maximum(diag_old, acnorm)
        g = J.T @ f
        return dict(
            x=x, f=f, fnorm=fnorm, xnorm=xnorm, J=J, R=R, perm=perm, qtf=qtf, diag=diag, gnorm=gnorm,
            cost=0.5 * fnorm**2, g_norm=jnp.max(jnp.abs(g)),
        )

    def init(self, x0, data):
        dtype = x0.dtype
        # A NumPy `fun` was already called at x0 on the host: do not call it again.
        f0 = self.residuals(x0, data.args, data.kwargs) if data.f0 is None else data.f0
        fnorm = jnp.linalg.norm(f0)
        pt = self._at_point(x0, f0, fnorm, jnp.zeros((), dtype), None, data)
        xnorm = jnp.linalg.norm(pt["diag"] * x0)
        pt["xnorm"] = xnorm
        Delta = FACTOR * xnorm
        Delta = jnp.where(Delta == 0, FACTOR, Delta).astype(dtype)
        status = jnp.where(
            ~jnp.all(jnp.isfinite(f0)),
            -4,
            jnp.where(~jnp.all(jnp.isfinite(pt["J"])), -3, jnp.where(pt["gnorm"] <= self.gtol, 1, RUNNING)),
        ).astype(jnp.int32)
        return LMState(
            **pt,
            Delta=Delta,
            par=jnp.zeros((), dtype),
            first=jnp.asarray(True),
            nfev=jnp.asarray(1, jnp.int32),
            njev=jnp.asarray(1, jnp.int32),
            nit=jnp.asarray(0, jnp.int32),
            cost0=pt["cost"],
            status=status,
        )

    def terminate(self, state):
        return state.status != RUNNING

    def step(self, state, data):
        par, direction = lmpar(state.R, state.perm, state.diag, state.qtf, state.Delta, state.par)
        p = -direction
        x_new = state.x + p
        pnorm = jnp.linalg.norm(state.diag * p)
        Delta = jnp.where(state.first, jnp.minimum(state.Delta, pnorm), state.Delta)

        f_new = self.residuals(x_new, data.args, data.kwargs)
        nfev = state.nfev + 1
        fnorm, fnorm1 = state.fnorm, jnp.linalg.norm(f_new)
        # Reductions of ||f||^2 relative to ||f||^2; comparisons are written so that a
        # non-finite trial counts as a bad step, as in MINPACK.
        actred = jnp.where(0.1 * fnorm1 < fnorm, 1 - _safe_div(fnorm1, fnorm) ** 2, -1.0)
        temp1 = _safe_div(jnp.linalg.norm(state.R @ p[state.perm]), fnorm)
        temp2 = _safe_div(jnp.sqrt(par) * pnorm, fnorm)
        prered = temp1**2 + temp2**2 / 0.5
        dirder = -(temp1**2 + temp2**2)
        ratio = _safe_div(actred, prered)

        # Radius and parameter update (MINPACK lmder, label 240-260).
        shrink = ratio <= 0.25
        temp = jnp.where(actred >= 0, 0.5, 0.5 * _safe_div(dirder, dirder + 0.5 * actred))
        # MINPACK's ``enorm`` of a vector with two or more infinite entries is NaN (inf/inf
        # in its scaled sum), and NaN fails the comparison below where inf passes it.
        fnorm1_mp = jnp.where(jnp.sum(jnp.isinf(f_new)) >= 2, jnp.nan, fnorm1)
        temp = jnp.where((0.1 * fnorm1_mp >= fnorm) | (temp < 0.1), 0.1, temp)
        grow = ~shrink & ((par == 0) | (ratio >= 0.75))
        Delta = jnp.where(shrink, temp * jnp.minimum(Delta, pnorm / 0.1), jnp.where(grow, pnorm / 0.5, Delta))
        par = jnp.where(shrink, par / temp, jnp.where(grow, 0.5 * par, par))

        accept = ratio >= 1e-4
        xnorm = jnp.where(accept, jnp.linalg.norm(state.diag * x_new), state.xnorm)
        ftol_ok = (jnp.abs(actred) <= self.ftol) & (prered <= self.ftol) & (0.5 * ratio <= 1)
        if self.ftol > 0 and is_coarse(x_new.dtype):
            # float32's form of the test (see `check_termination`): the Gauss-Newton
            # step's relative decrease ||Q^T f||^2 / ||f||^2 and the actual one within
            # the cost's resolution.
            floor = resolution_ftol(self.ftol, f_new.shape[0], x_new.dtype)
            gn_decrease = _safe_div(jnp.sum(state.qtf**2), fnorm**2)
            ftol_ok = ftol_ok | ((gn_decrease <= floor) & (actred <= floor))
        xtol_ok = Delta <= self.xtol * xnorm
        # SciPy's codes for MINPACK's info 3 (both), 1 (ftol), 2 (xtol), 5 (max_nfev).
        term = jnp.where(ftol_ok & xtol_ok, 4, jnp.where(ftol_ok, 2, jnp.where(xtol_ok, 3, RUNNING)))
        term = jnp.where((term == RUNNING) & (nfev >= self.max_nfev), 0, term)

        current = {k: getattr(state, k) for k in _POINT_KEYS}

        def accepted(_):
            # The Jacobian at an accepted point is also needed for the result when the
            # solve ends here (SciPy evaluates `jac` at the final x).
            return self._at_point(x_new, f_new, fnorm1, xnorm, state.diag, data)

        pt = lax.cond(accept, accepted, lambda _: current, None)
        new_iteration = accept & (term == RUNNING)
        jac_bad = accept & ~jnp.all(jnp.isfinite(pt["J"]))
        status = jnp.where(
            term != RUNNING, term, jnp.where(jac_bad, -3, jnp.where(new_iteration & (pt["gnorm"] <= self.gtol), 1, RUNNING))
        ).astype(jnp.int32)
        return LMState(
            **pt,
            Delta=Delta,
            par=par,
            first=state.first & ~accept,
            nfev=nfev,
            njev=state.njev + new_iteration.astype(jnp.int32),
            nit=state.nit + accept.astype(jnp.int32),
            cost0=state.cost0,
            status=status,
        )

    def postprocess(self, state, data):
        if self.verbose >= 1:
            _report.summary(state)
        return dict(
            x=state.x,
            cost=state.cost,
            fun=state.f,
            jac=state.J,
            grad=state.J.T @ state.f,
            optimality=state.g_norm,
            active_mask=jnp.zeros(state.x.shape, jnp.int32),
            nfev=state.nfev,
            njev=state.njev,
            status=state.status,
        )
