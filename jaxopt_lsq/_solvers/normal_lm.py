"""Levenberg-Marquardt on the normal equations, written for batches of small fits.

SciPy's methods solve each trust-region subproblem from an SVD (``trf``) or a pivoted
QR (``lm``) of the Jacobian: the right tools for one fit, but a batched solver that calls
batched LAPACK every iteration is capped far below the machine (one routine call per
matrix; see PERF_NOTES). This method, offered by
:func:`jaxopt_lsq.least_squares_batch` as ``method="lm-normal"``, keeps each
iteration's linear algebra at the size of the *parameters*:

* the Gauss-Newton matrix ``J^T J`` (n x n) and gradient ``g = J^T f`` are sums over
  the residuals of products of Jacobian columns (one ``jvp`` per column);
* the trust-region subproblem ``min ||J_h p_h + f||^2 + p_h^T C p_h, ||p_h|| <= Delta``
  is solved from ``J_h^T J_h + C + alpha I`` by Moré's iteration on ``alpha`` with a
  Cholesky factorisation per trial ``alpha``, unrolled over the static ``n``
  (:mod:`.._kernels.normal_trust_region`, :mod:`.._kernels.small_linalg`) and a fixed
  number of iterations;

so that under ``jax.vmap`` the whole step is wide elementwise code with the same work in
every fit. It is Moré's (1977) trust-region form of Levenberg-Marquardt; the radius
update, the first radius, the variable scaling (``x_scale``, 1 by default, or ``'jac'``: the
running maximum of the Jacobian's column norms) and the termination tests are those of
SciPy's ``trf``.

Bounds. As in ``trf`` (Branch, Coleman & Li 1999), the hat variables
``x = x_k + d * p_h`` carry the Coleman-Li scaling ``v**0.5`` and ``C = diag(g * dv)``;
the step is ``trf``'s best of the trust-region step truncated at the first bound (and
scaled by ``theta = max(0.995, 1 - ||g v||_inf)``), its reflection, and the
anti-gradient step, so the iterates stay strictly feasible. Status codes and ``nfev`` are SciPy's; each ``step`` is one
evaluation of the residuals *and* their Jacobian at a trial point (under ``vmap`` a
branch would cost both sides anyway), so ``njev == nfev``. The normal equations square
the condition number of ``J``: for ill-conditioned fits, ``trf`` is the safer choice.

References
----------
J. J. Moré, "The Levenberg-Marquardt
Algorithm: Implementation and Theory", 1977. M. A. Branch, T. F. Coleman, Y. Li, SIAM J.
Sci. Comput. 21(1), 1999.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .. import _loss
from .._iterate import AbstractSolver
from .._jacobian import ResidualFunction
from .._kernels.bounds import cl_scaling_vector, find_active_constraints, in_bounds, make_strictly_feasible
from .._kernels.fusion import materialize
from .._kernels.normal_trust_region import solve_normal_trust_region
from .._kernels.reflective import select_step
from .._kernels.small_linalg import UNROLL_MAX, all_finite, cholesky, max_abs, norm, quadratic_form, vdot
from .._kernels.trust_region import check_termination, update_tr_radius
from .._result import RUNNING
from ._common import initial_status, lsq_cost, lsq_result_fields


class Point(NamedTuple):
    """The accepted iterate and what is derived from it."""

    x: jax.Array
    cost: jax.Array
    JtJ: jax.Array  # Gauss-Newton matrix of the (loss-rescaled) residuals, (n, n)
    g: jax.Array  # gradient of the cost
    g_norm: jax.Array  # first-order optimality (SciPy's `optimality`)
    scale_inv: jax.Array  # inverse variable scales

    def pack(self):
        return jnp.concatenate([jnp.ravel(a) for a in self])

    @classmethod
    def unpack(cls, packed, n):
        shapes = [(n,), (), (n, n), (n,), (), (n,)]
        ends = list(itertools.accumulate(math.prod(s) for s in shapes))
        return cls(*(packed[e - math.prod(s):e].reshape(s) for s, e in zip(shapes, ends)))


class NormalLMState(eqx.Module):
    # The accepted point (updated on accepted steps), packed into one vector: each step
    # then selects between the old and the new point once. (Field by field, XLA copies
    # the acceptance test's long chain of compares and selects into every field's
    # select; under vmap that recomputation cost more than the linear algebra.)
    packed: jax.Array
    # Trust region (updated every evaluation).
    Delta: jax.Array
    alpha: jax.Array
    # Counters.
    nfev: jax.Array
    status: jax.Array
    n: int = eqx.field(static=True)

    @property
    def point(self) -> Point:
        return Point.unpack(self.packed, self.n)


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
    tr_solver: str = eqx.field(static=True, default="exact")  # always 'exact' (dense J^T J)
    tr_options: tuple = eqx.field(static=True, default=())

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
            g_norm = max_abs(g * v)
            v = jnp.where(dv != 0, v * scale_inv, v)
            return jnp.sqrt(v) * scale, g * dv * scale, g_norm
        return scale, jnp.zeros_like(g), max_abs(g)

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
        Delta = norm(x0 / d)
        Delta = jnp.where(Delta > 0, Delta, 1).astype(dtype)
        return NormalLMState(
            packed=Point(x0, cost, JtJ, g, g_norm, scale_inv).pack(),
            Delta=Delta,
            alpha=jnp.zeros((), dtype),
            nfev=jnp.asarray(1, jnp.int32),
            status=initial_status(self, feasible, f0, JtJ, g_norm),
            n=x0.shape[0],
        )

    def terminate(self, state):
        return state.status != RUNNING

    def step(self, state, data):
        old = state.point
        x, g, JtJ = old.x, old.g, old.JtJ
        dtype = x.dtype
        d, C, _ = self._scaling(x, g, old.scale_inv, data)
        B_h = JtJ * d[:, None] * d[None, :] + jnp.diag(C)
        g_h = d * g
        p_h, alpha, ok, gn_decrease = solve_normal_trust_region(B_h, g_h, state.Delta, state.alpha)
        p = d * p_h
        if self.bounded:
            # trf's choice among the truncated, reflected and anti-gradient steps. It
            # needs only the quadratic forms of J_h, which any square root R of
            # J_h^T J_h (R^T R = J_h^T J_h; here a Cholesky factor) reproduces.
            JtJ_h = B_h - jnp.diag(C)
            jitter = jnp.finfo(dtype).eps * jnp.max(jnp.diagonal(JtJ_h))
            L, _ = cholesky(JtJ_h + jitter * jnp.eye(x.shape[0], dtype=dtype))
            theta = jnp.maximum(0.995, 1 - old.g_norm)
            step, step_h, predicted = select_step(x, L.T, C, g_h, p, p_h, d, state.Delta, data.lb, data.ub, theta)
            x_new = make_strictly_feasible(x + step, data.lb, data.ub, rstep=0)
        else:
            step_h = p_h
            step = p
            x_new = x + p
            # Elementwise products and sums rather than a matvec: under vmap they stay
            # wide vector code instead of N tiny batched matrix products.
            predicted = -(0.5 * quadratic_form(B_h, step_h) + vdot(g_h, step_h))

        f_new, cost_new, JtJ_new, g_new = self._evaluate(x_new, data)
        nfev = state.nfev + 1
        # (The linear loss's cost is not finite if any residual is not; the other losses
        # can map an infinite residual to a finite cost.)
        finite = ok & all_finite(x_new) & jnp.isfinite(cost_new)
        if not (isinstance(self.loss, str) and self.loss == "linear"):
            finite = finite & jnp.all(jnp.isfinite(f_new))
        actual = old.cost - cost_new
        step_h_norm = norm(step_h)
        Delta_new, ratio = update_tr_radius(state.Delta, actual, predicted, step_h_norm, step_h_norm > 0.95 * state.Delta)
        term = check_termination(
            actual, old.cost, norm(step), norm(x), ratio, self.ftol, self.xtol, gn_decrease, f_new.shape[0]
        )
        term = jnp.where(finite, term, 0)
        # SciPy's trf bookkeeping: a non-finite trial shrinks the region, a terminating
        # one leaves it; the multiplier follows the radius.
        Delta = jnp.where(~finite, 0.25 * step_h_norm, jnp.where(term != 0, state.Delta, Delta_new))
        Delta = jnp.where(Delta > 0, Delta, state.Delta * 0.25)
        alpha = jnp.where(finite & (term == 0), alpha * (state.Delta / Delta), state.alpha)
        accept = materialize(finite & (actual > 0))

        scale_inv_new = self._new_scale_inv(JtJ_new, old.scale_inv, data)
        _, _, g_norm_new = self._scaling(x_new, g_new, scale_inv_new, data)

        # A Jacobian entry that is not finite makes its column's diagonal entry of J^T J
        # (a sum of squares) not finite: testing the diagonal is enough.
        jac_bad = accept & ~all_finite(jnp.diagonal(JtJ_new))
        g_norm = jnp.where(accept, g_norm_new, old.g_norm)
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
        new = Point(x_new, cost_new, JtJ_new, g_new, g_norm_new, scale_inv_new)
        return NormalLMState(
            packed=jnp.where(accept, new.pack(), state.packed),
            Delta=Delta.astype(dtype),
            alpha=alpha.astype(dtype),
            nfev=nfev,
            status=status,
            n=state.n,
        )

    def postprocess(self, state, data):
        point = state.point
        if self.bounded:
            active = find_active_constraints(point.x, data.lb, data.ub, rtol=self.xtol)
        else:
            active = jnp.zeros(point.x.shape, jnp.int32)
        fields = lsq_result_fields(self, point.x, data)
        return dict(
            x=point.x,
            cost=point.cost,
            fun=fields["fun"],
            jac=fields["jac"],
            grad=point.g,
            optimality=point.g_norm,
            active_mask=active,
            nfev=state.nfev,
            njev=state.nfev,
            status=state.status,
        )
