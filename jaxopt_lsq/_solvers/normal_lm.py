"""Levenberg-Marquardt on the normal equations, written for batches of small fits.

SciPy's methods solve each trust-region subproblem from an SVD (``trf``) or a pivoted
QR (``lm``) of the Jacobian: the right tools for one fit, but a batched solver that calls
batched LAPACK every iteration is capped far below the machine (one routine call per
matrix; see PERF_NOTES). This method, offered by
:func:`jaxopt_lsq.least_squares_batch` as ``method="lm-normal"``, keeps each
iteration's linear algebra at the size of the *parameters*:

* the Gauss-Newton matrix ``J^T J`` (n x n) and gradient ``g = J^T f`` are sums over
  the residuals of products of Jacobian columns (one ``jvp`` per column);
* the damped system ``(J_h^T J_h + C + lam I) p_h = -g_h`` is solved by a Cholesky
  factorisation unrolled over the static ``n`` (:mod:`.._kernels.small_linalg`);

so that under ``jax.vmap`` the whole step is wide elementwise code.

Damping. ``lam`` follows Nielsen's rule (Madsen, Nielsen & Tingleff 2004, eq. 3.16):
after an accepted step with gain ratio ``rho``, ``lam *= max(1/3, 1 - (2 rho - 1)^3)``;
after a rejected one ``lam *= nu; nu *= 2``. It starts at ``1e-3 * max(diag(J_h^T J_h))``.
The hat variables ``x = x_k + d * p_h`` carry the variable scaling ``d`` (``x_scale``,
or by default ``'jac'``: the running maximum of the Jacobian's column norms, as in
Moré 1977), so ``lam I`` in the hat variables is Marquardt's scaled damping.

Bounds. As in ``trf`` (Branch, Coleman & Li 1999), ``d`` also carries the Coleman-Li
scaling ``v**0.5`` and ``C = diag(g * dv)``; a step that leaves the box is truncated at
the first bound it meets and scaled by ``theta = max(0.995, 1 - ||g v||_inf)``, so the
iterates stay strictly feasible. Termination tests, status codes and ``nfev`` are
SciPy's (``ftol``, ``xtol`` and ``gtol`` as in ``trf``); each ``step`` is one
evaluation of the residuals *and* their Jacobian at a trial point (under ``vmap`` a
branch would cost both sides anyway), so ``njev == nfev``.

References
----------
K. Madsen, H. B. Nielsen, O. Tingleff, "Methods for Non-Linear Least Squares
Problems", 2nd ed., IMM, DTU, 2004, section 3.2. H. B. Nielsen, "Damping Parameter in
Marquardt's Method", IMM-REP-1999-05, DTU, 1999. J. J. Moré, "The Levenberg-Marquardt
Algorithm: Implementation and Theory", 1977. M. A. Branch, T. F. Coleman, Y. Li, SIAM J.
Sci. Comput. 21(1), 1999.
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
from .._kernels.bounds import (
    cl_scaling_vector,
    find_active_constraints,
    in_bounds,
    make_strictly_feasible,
    step_size_to_bound,
)
from .._kernels.small_linalg import UNROLL_MAX, cholesky_solve
from .._kernels.trust_region import check_termination
from .._result import RUNNING
from ._common import initial_status, lsq_cost, lsq_result_fields


class NormalLMState(eqx.Module):
    # Accepted iterate and what is derived from it (updated on accepted steps).
    x: jax.Array
    f_true: jax.Array  # residuals at x
    cost: jax.Array
    JtJ: jax.Array  # Gauss-Newton matrix of the (loss-rescaled) residuals, (n, n)
    g: jax.Array  # gradient of the cost
    g_norm: jax.Array  # first-order optimality (SciPy's `optimality`)
    scale_inv: jax.Array  # inverse variable scales
    # Damping (updated every evaluation).
    lam: jax.Array
    nu: jax.Array
    # Counters.
    nfev: jax.Array
    status: jax.Array


class NormalLM(AbstractSolver):
    residuals: ResidualFunction
    loss: Any = eqx.field(static=True)
    ftol: float = eqx.field(static=True)
    xtol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    max_nfev: int = eqx.field(static=True)
    jac_scale: bool = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)
    verbose: int = eqx.field(static=True)  # not supported by this method (always 0)
    callback: Callable | None = eqx.field(static=True)  # idem (always None)

    @property
    def max_steps(self):
        return self.max_nfev

    def cost(self, x, data):
        return lsq_cost(self, x, data)

    def result_fields(self, x, data):
        return lsq_result_fields(self, x, data)

    # ----------------------------------------------------------------------------------
    def _evaluate(self, x, data):
        """Residuals, cost, ``J^T J`` and ``J^T f`` at ``x`` (loss-rescaled)."""
        n = x.shape[0]
        dtype = x.dtype
        res = self.residuals
        if n <= UNROLL_MAX and res.jac is None and not res.fun_on_host:
            fn = res._fn(data.args, data.kwargs)
            f_true, lin = jax.linearize(lambda y: fn(y).astype(dtype), x)
            eye = jnp.eye(n, dtype=dtype)
            cols = [lin(eye[i]) for i in range(n)]
        else:
            f_true = res(x, data.args, data.kwargs)
            J = res.jacobian(x, f_true, data.args, data.kwargs, data.lb, data.ub, data.diff_step)
            cols = [J[:, i] for i in range(n)]
        if isinstance(self.loss, str) and self.loss == "linear":
            f = f_true
            cost = 0.5 * jnp.sum(f * f)
        else:
            r = _loss.rho(self.loss, f_true, data.f_scale)
            eps = jnp.finfo(dtype).eps
            J_scale = jnp.sqrt(jnp.maximum(r[1] + 2 * r[2] * f_true**2, eps))
            cols = [c * J_scale for c in cols]
            f = f_true * r[1] / J_scale
            cost = 0.5 * jnp.sum(r[0])
        if n <= UNROLL_MAX:
            # Products of columns summed over the residuals: under vmap, wide reductions.
            entries = [[None] * n for _ in range(n)]
            for i in range(n):
                for j in range(i + 1):
                    entries[i][j] = entries[j][i] = jnp.sum(cols[i] * cols[j])
            JtJ = jnp.stack([jnp.stack(row) for row in entries])
            g = jnp.stack([jnp.sum(c * f) for c in cols])
        else:
            J = jnp.stack(cols, axis=1)
            JtJ = jnp.matmul(J.T, J, precision=lax.Precision.HIGHEST)
            g = jnp.matmul(J.T, f, precision=lax.Precision.HIGHEST)
        return f_true, cost, JtJ, g

    def _scaling(self, x, g, scale_inv, data):
        """Hat-variable scaling ``d``, curvature term ``C`` of the bounds, optimality."""
        scale = 1 / scale_inv
        if self.bounded:
            v, dv = cl_scaling_vector(x, g, data.lb, data.ub)
            g_norm = jnp.max(jnp.abs(g * v))
            v = jnp.where(dv != 0, v * scale_inv, v)
            return jnp.sqrt(v) * scale, g * dv * scale, g_norm
        return scale, jnp.zeros_like(g), jnp.max(jnp.abs(g))

    def _new_scale_inv(self, JtJ, scale_inv_old, data):
        if not self.jac_scale:
            return 1 / data.x_scale
        col = jnp.sqrt(jnp.diagonal(JtJ))
        if scale_inv_old is None:
            return jnp.where(col == 0, 1.0, col).astype(JtJ.dtype)
        return jnp.maximum(col, scale_inv_old)

    # ----------------------------------------------------------------------------------
    def init(self, x0, data):
        dtype = x0.dtype
        feasible = in_bounds(x0, data.lb, data.ub)
        if self.bounded:
            x0 = make_strictly_feasible(x0, data.lb, data.ub)
        f0, cost, JtJ, g = self._evaluate(x0, data)
        scale_inv = self._new_scale_inv(JtJ, None, data)
        d, C, g_norm = self._scaling(x0, g, scale_inv, data)
        lam = 1e-3 * jnp.max(jnp.diagonal(JtJ) * d**2 + C)
        lam = jnp.where(jnp.isfinite(lam) & (lam > 0), lam, 1e-3).astype(dtype)
        return NormalLMState(
            x=x0,
            f_true=f0,
            cost=cost,
            JtJ=JtJ,
            g=g,
            g_norm=g_norm,
            scale_inv=scale_inv,
            lam=lam,
            nu=jnp.asarray(2, dtype),
            nfev=jnp.asarray(1, jnp.int32),
            status=initial_status(self, feasible, f0, JtJ, g_norm),
        )

    def terminate(self, state):
        return state.status != RUNNING

    def step(self, state, data):
        x, g, JtJ = state.x, state.g, state.JtJ
        dtype = x.dtype
        d, C, _ = self._scaling(x, g, state.scale_inv, data)
        JtJ_h = JtJ * d[:, None] * d[None, :]
        g_h = d * g
        p_h, ok = cholesky_solve(JtJ_h + jnp.diag(C + state.lam), -g_h)
        p = d * p_h
        if self.bounded:
            to_bound, _ = step_size_to_bound(x, p, data.lb, data.ub)
            theta = jnp.maximum(0.995, 1 - state.g_norm)
            t = jnp.where(in_bounds(x + p, data.lb, data.ub), 1.0, theta * to_bound).astype(dtype)
            step_h = t * p_h
            x_new = make_strictly_feasible(x + t * p, data.lb, data.ub, rstep=0)
        else:
            step_h = p_h
            x_new = x + p
        step = d * step_h
        predicted = -(0.5 * step_h @ (JtJ_h @ step_h) + 0.5 * jnp.sum(C * step_h**2) + g_h @ step_h)

        f_new, cost_new, JtJ_new, g_new = self._evaluate(x_new, data)
        nfev = state.nfev + 1
        finite = ok & jnp.all(jnp.isfinite(x_new)) & jnp.all(jnp.isfinite(f_new)) & jnp.isfinite(cost_new)
        actual = state.cost - cost_new
        ok_pred = predicted > 0
        ratio = jnp.where(ok_pred, actual / jnp.where(ok_pred, predicted, 1), 0.0)
        term = check_termination(actual, state.cost, jnp.linalg.norm(step), jnp.linalg.norm(x), ratio, self.ftol, self.xtol)
        term = jnp.where(finite, term, 0)
        accept = finite & (actual > 0)

        tiny = jnp.finfo(dtype).tiny
        lam = jnp.where(accept, state.lam * jnp.maximum(1 / 3, 1 - (2 * ratio - 1) ** 3), state.lam * state.nu)
        lam = jnp.clip(lam, tiny, jnp.finfo(dtype).max / 4)
        nu = jnp.where(accept, 2.0, jnp.minimum(2 * state.nu, 2.0**60)).astype(dtype)

        scale_inv_new = self._new_scale_inv(JtJ_new, state.scale_inv, data)
        _, _, g_norm_new = self._scaling(x_new, g_new, scale_inv_new, data)

        def pick(new, old):
            return jnp.where(accept, new, old)

        jac_bad = accept & ~jnp.all(jnp.isfinite(JtJ_new))
        g_norm = pick(g_norm_new, state.g_norm)
        iteration_ends = accept | (term != 0) | (nfev >= self.max_nfev)
        status = jnp.where(
            ~iteration_ends,
            RUNNING,
            jnp.where(
                jac_bad,
                -3,
                jnp.where(g_norm < self.gtol, 1, jnp.where(term != 0, term, jnp.where(nfev >= self.max_nfev, 0, RUNNING))),
            ),
        ).astype(jnp.int32)
        return NormalLMState(
            x=pick(x_new, x),
            f_true=pick(f_new, state.f_true),
            cost=pick(cost_new, state.cost),
            JtJ=pick(JtJ_new, JtJ),
            g=pick(g_new, g),
            g_norm=g_norm,
            scale_inv=pick(scale_inv_new, state.scale_inv),
            lam=lam.astype(dtype),
            nu=nu,
            nfev=nfev,
            status=status,
        )

    def postprocess(self, state, data):
        if self.bounded:
            active = find_active_constraints(state.x, data.lb, data.ub, rtol=self.xtol)
        else:
            active = jnp.zeros(state.x.shape, jnp.int32)
        fields = lsq_result_fields(self, state.x, data)
        return dict(
            x=state.x,
            cost=state.cost,
            fun=state.f_true,
            jac=fields["jac"],
            grad=state.g,
            optimality=state.g_norm,
            active_mask=active,
            nfev=state.nfev,
            njev=state.nfev,
            status=state.status,
        )
