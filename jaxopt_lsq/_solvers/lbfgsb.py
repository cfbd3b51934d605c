"""L-BFGS-B as a state machine for :func:`jaxopt_lsq._iterate.iterate`.

One ``step`` = one evaluation of ``f`` and ``g`` at a line-search trial point, so
``nfev`` and ``maxfun`` mean exactly what they mean in SciPy. When the trial is accepted
(or the line search fails) the same step does the iteration's bookkeeping: the
termination tests in SciPy's order, the limited-memory update, the generalised Cauchy
point, the subspace minimisation and the start of the next line search. The control
flow follows the Fortran ``mainlb``/``lnsrlb`` of L-BFGS-B 3.0 (Zhu, Byrd, Lu, Nocedal
1997; Morales, Nocedal 2011); the kernels are in :mod:`jaxopt_lsq._kernels.lbfgsb`.

Status (SciPy's ``warnflag``) and task codes (select the message):

=====  ======  =========================================================
task   status  meaning
=====  ======  =========================================================
401    0       projected gradient inf-norm <= pgtol
402    0       relative reduction of f <= factr * eps
502    1       function evaluations exceed maxfun
504    1       iterations reached maxiter
505    2       the callback raised StopIteration
800    2       line search failed with an empty memory (SciPy's "ABNORMAL")
801    2       f or g not finite at the starting point
802    2       line search failed; f or g was not finite at a trial point
=====  ======  =========================================================
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import io_callback

from .._iterate import AbstractSolver
from .._result import RUNNING
from .._kernels import lbfgsb as K
from .._kernels.bounds import step_size_to_bound

TASK_PGTOL = 401
TASK_FTOL = 402
TASK_MAXFUN = 502
TASK_MAXITER = 504
TASK_CALLBACK = 505
TASK_ABNORMAL = 800
TASK_NONFINITE_X0 = 801
TASK_NONFINITE_LS = 802

_BIG_STEP = 1e10  # the Fortran code's ``big``: step bound without constraints


class LbfgsbState(eqx.Module):
    # --- the accepted iterate: changes on accepted line-search steps -------------
    x: jax.Array
    f: jax.Array
    g: jax.Array
    # --- limited memory: changes on accepted steps and restarts -------------------
    mem: K.Memory
    gram_free: jax.Array  # [Y S]^T diag(free_prev) [Y S]
    free_prev: jax.Array  # free set that gram_free describes
    # --- the current search: set when a line search starts -----------------------
    d: jax.Array
    xbar: jax.Array  # x + d, exact end point (used when stp == 1)
    stpmax: jax.Array
    gdold: jax.Array  # g^T d at x
    # --- the line search: changes every evaluation -------------------------------
    ls: K.LineSearch
    stp: jax.Array
    n_ls: jax.Array  # evaluations in this line search
    stp_bad: jax.Array  # smallest step with a non-finite f or g in this search
    nonfinite_seen: jax.Array
    # --- the box, summarised once (scanning the bounds every iteration costs passes) --
    constrained: jax.Array  # some bound is finite
    boxed: jax.Array  # every bound is finite
    # --- counters and outcome -----------------------------------------------------
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    status: jax.Array
    task: jax.Array


class LbfgsbSolver(AbstractSolver):
    """Static settings of one L-BFGS-B solve.

    ``fg(x, args) -> (f, g)`` with ``args = (lower, upper, user_args)``; ``evals_per_fg`` is what one call adds to
    ``nfev`` (``1``, or ``1 + n`` / ``1 + 2n`` with finite differences). ``args`` given
    to ``init``/``step`` are ``(lower, upper, user_args)``; ``bounded`` is false only when
    no bounds were given at all (then the Cauchy point is skipped, as in the Fortran
    code for unconstrained problems).
    """

    fg: Callable = eqx.field(static=True)
    evals_per_fg: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    ftol: float = eqx.field(static=True)  # factr * eps
    pgtol: float = eqx.field(static=True)
    maxfun: int = eqx.field(static=True)
    maxiter: int = eqx.field(static=True)
    maxls: int = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)
    gcp_chunk: Any = eqx.field(static=True, default=None)
    gram_update_size: Any = eqx.field(static=True, default=None)
    # host fn(x, f) per iteration; returns True to stop (the user raised StopIteration)
    callback: Any = eqx.field(static=True, default=None)

    @property
    def max_steps(self) -> int:
        # SciPy checks maxfun only when an iteration ends; an iteration takes at most
        # 2 * maxls evaluations (one line search, one restart).
        return self.maxfun + 2 * self.maxls + 2

    # ------------------------------------------------------------------------------
    def _evaluate(self, x, args):
        f, g = self.fg(x, args)
        f = jnp.asarray(f, x.dtype).reshape(())
        g = jnp.asarray(g, x.dtype).reshape(x.shape)
        return f, g

    def _end_point(self, x, g, lower, upper, mem, gram, free_prev, reset, bd=None, t=None):
        """``xbar``: generalised Cauchy point, then subspace minimisation.

        ``bd``: ``buf @ d`` for the Cauchy point's first direction, if known; ``t``: the
        breakpoints, if known."""
        dtype = x.dtype
        mem = K.memory_reset(mem, reset)
        M, ok = K.middle_matrix(mem)
        mem = K.memory_reset(mem, ~ok)
        M = jnp.where(ok, M, 0.0)
        if self.bounded:
            xc, c, free, _ = K.cauchy_point(
                x, g, lower, upper, mem, M, chunk=self.gcp_chunk, bd=bd, t=t
            )
            if self.gram_update_size is None:
                gram = K.free_gram_full(mem, free)
            else:
                gram = K.free_gram_refresh(mem, gram, free_prev, free, self.gram_update_size)
            free_prev = free
        else:
            xc = x
            c = jnp.zeros((2 * self.m,), dtype)
            free = jnp.ones(x.shape, bool)
            gram = K.full_gram(mem)
        xbar = K.subspace_minimization(x, g, lower, upper, xc, c, free, mem, M, gram)
        if not self.bounded:
            # With an empty memory the Fortran code still takes the Cauchy step,
            # which without bounds is x - g / theta (theta = 1).
            xbar = jnp.where(mem.count > 0, xbar, x - g / mem.theta)
        return xbar, mem, gram, free_prev

    def _direction(self, x, f, g, lower, upper, mem, gram, free_prev, nit, reset, constrained,
                   boxed, empty=False, bd=None, t=None):
        """Start a line search from ``(x, f, g)``.

        Returns the new memory/gram/free set, the direction and the line-search
        state, and ``abnormal`` (no descent direction with an empty memory).
        ``empty=True`` (static: the first search) skips the limited-memory machinery:
        with ``B = I`` the model along the projected path ``P(x - t g)`` has its
        minimiser at ``t = 1``, so the Cauchy point is ``P(x - g)`` and there is no
        subspace step.
        """
        dtype = x.dtype
        if empty:
            xbar = K.steepest_descent_point(x, g, lower, upper) if self.bounded else x - g
        else:
            xbar, mem, gram, free_prev = self._end_point(
                x, g, lower, upper, mem, gram, free_prev, reset, bd, t
            )
        d = xbar - x
        gd = jnp.dot(g, d)
        if not empty:
            # No descent: with pairs, forget them and take the projected gradient step
            # (rare: computed only then).
            retry = ~(gd < 0) & (mem.count > 0)
            mem = K.memory_reset(mem, retry)

            def steepest(_):
                xsd = K.steepest_descent_point(x, g, lower, upper) if self.bounded else x - g
                return xsd, xsd - x, jnp.dot(g, xsd - x)

            xbar, d, gd = lax.cond(retry, steepest, lambda _: (xbar, d, gd), None)
        abnormal = ~(gd < 0)

        if self.bounded:
            smax = jnp.minimum(step_size_to_bound(x, d, lower, upper)[0], _BIG_STEP)
            stpmax = jnp.where(constrained, jnp.where(nit == 0, 1.0, smax), _BIG_STEP)
        else:
            boxed = jnp.asarray(False)
            stpmax = jnp.asarray(_BIG_STEP, dtype)
        stpmax = stpmax.astype(dtype)
        dnorm = jnp.sqrt(jnp.dot(d, d))
        first = (nit == 0) & ~boxed
        stp = jnp.where(first, jnp.minimum(1.0 / jnp.where(dnorm > 0, dnorm, 1.0), stpmax), 1.0)
        stp = jnp.minimum(stp, stpmax).astype(dtype)
        ls = K.dcsrch_start(f, gd, stp, jnp.zeros_like(stp), stpmax)
        return mem, gram, free_prev, d, xbar, stpmax, gd, ls, stp, abnormal

    # ------------------------------------------------------------------------------
    def init(self, x0, args):
        lower, upper, user_args = args
        n = x0.shape[0]
        dtype = x0.dtype
        x = jnp.clip(x0, lower, upper) if self.bounded else x0
        f, g = self._evaluate(x, args)
        mem = K.memory_init(n, self.m, dtype)
        gram = jnp.zeros((2 * self.m, 2 * self.m), dtype)
        free_prev = jnp.ones((n,), bool)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        fs = jnp.where(finite, f, 0.0)
        gs = jnp.where(finite, g, 0.0)
        constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
        boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))
        mem, gram, free_prev, d, xbar, stpmax, gd, ls, stp, abnormal = self._direction(
            x, fs, gs, lower, upper, mem, gram, free_prev, jnp.asarray(0, jnp.int32),
            jnp.asarray(False), constrained, boxed, empty=True,
        )
        pg = K.projected_gradient_norm(x, g, lower, upper)
        converged = finite & (pg <= self.pgtol)
        status = jnp.where(
            ~finite, 2, jnp.where(converged, 0, jnp.where(abnormal, 2, RUNNING))
        )
        task = jnp.where(
            ~finite,
            TASK_NONFINITE_X0,
            jnp.where(converged, TASK_PGTOL, jnp.where(abnormal, TASK_ABNORMAL, 0)),
        )
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        return LbfgsbState(
            x=x, f=f, g=g, mem=mem, gram_free=gram, free_prev=free_prev,
            d=d, xbar=xbar, stpmax=stpmax, gdold=gd,
            ls=ls, stp=stp, n_ls=i32(0), stp_bad=jnp.asarray(jnp.inf, dtype),
            nonfinite_seen=jnp.asarray(False), constrained=constrained, boxed=boxed,
            nfev=i32(self.evals_per_fg), njev=i32(1), nit=i32(0),
            status=i32(status), task=i32(task),
        )

    # ------------------------------------------------------------------------------
    def step(self, state: LbfgsbState, args):
        lower, upper, user_args = args
        s = state
        dtype = s.x.dtype
        running = s.status == RUNNING

        # 1. One evaluation at the trial point (never outside the box).
        x_t = jnp.where(s.stp == 1, s.xbar, s.x + s.stp * s.d)
        if self.bounded:
            x_t = jnp.clip(x_t, lower, upper)
        f_t, g_t = self._evaluate(x_t, args)
        # Under vmap a finished lane still runs this step: everything that would change
        # it is gated by ``running`` (cheaper than selecting the whole state at the end).
        nfev = s.nfev + jnp.where(running, self.evals_per_fg, 0)
        njev = s.njev + running.astype(jnp.int32)
        gd_t = jnp.dot(g_t, s.d)
        finite = jnp.isfinite(f_t) & jnp.isfinite(gd_t) & jnp.all(jnp.isfinite(g_t))

        # 2. Line search update. A non-finite trial is treated as "too far": halve the
        #    step towards the best point and never try beyond it again.
        ls_n, stp_n, lstask = K.dcsrch_update(
            s.ls, s.stp, jnp.where(finite, f_t, 0.0), jnp.where(finite, gd_t, 0.0),
            jnp.zeros_like(s.stp), s.stpmax,
        )
        bad = running & ~finite
        stp_bad = jnp.where(bad, jnp.minimum(s.stp_bad, s.stp), s.stp_bad)
        upd = running & finite
        ls_n = K.LineSearch(jnp.where(upd, ls_n.v, s.ls.v))
        back = s.ls.stx + 0.5 * (stp_bad - s.ls.stx)
        stp_n = jnp.where(upd & (stp_n < stp_bad), stp_n, back)
        stp_n = jnp.where(running, stp_n, s.stp).astype(dtype)
        lstask = jnp.where(finite, lstask, K.LS_FG)
        n_ls = s.n_ls + running.astype(jnp.int32)
        accepted = running & (lstask != K.LS_FG)
        failed = running & ~accepted & (n_ls >= self.maxls)
        nonfinite_seen = s.nonfinite_seen | bad

        # 3. Memory pair from an accepted step (rows written in place, outside cond).
        sv = s.stp * s.d
        yv = g_t - s.g
        sy = (gd_t - s.gdold) * s.stp
        skip_tol = jnp.finfo(dtype).eps * (-s.gdold * s.stp)
        do_push = accepted & (sy > skip_tol)
        mem, slot = K.memory_write_rows(s.mem, sv, yv, do_push)

        # 4. New iterate or restart: the iteration's bookkeeping, only when needed.
        def new_search(_):
            x_new = jnp.where(accepted, x_t, s.x)
            f_new = jnp.where(accepted, f_t, s.f)
            g_new = jnp.where(accepted, g_t, s.g)
            nit = s.nit + accepted.astype(jnp.int32)
            extra = [sv, yv]
            gram = s.gram_free
            if self.bounded and self.gram_update_size is not None:
                extra += [jnp.where(s.free_prev, sv, 0.0), jnp.where(s.free_prev, yv, 0.0)]
            t_new = None
            if self.bounded:
                # The Cauchy point's first direction rides along in the same product.
                t_new = K.breakpoints(x_new, g_new, lower, upper)
                extra.append(jnp.where(t_new > 0, -g_new, 0.0))
            prod = K.wt_matvec(mem, jnp.stack(extra, axis=1), jnp.ones((2 * self.m,), dtype))
            yy = prod[slot, 1]  # y . y: the new row of Y times y (used only if pushed)
            mem2 = K.memory_update_small(mem, slot, prod[:, :2], sy, yy, do_push)
            if self.bounded and self.gram_update_size is not None:
                # Row/column of the new slot in the free-set Gram matrix.
                m = self.m
                col_y, col_s = prod[:, 3], prod[:, 2]
                g2 = gram.at[slot, :].set(col_y).at[:, slot].set(col_y)
                g2 = g2.at[m + slot, :].set(col_s).at[:, m + slot].set(col_s)
                gram = jnp.where(do_push, g2, gram)
            had_pairs = mem2.count > 0
            reset = failed & had_pairs
            out = self._direction(
                x_new, f_new, g_new, lower, upper, mem2, gram, s.free_prev, nit, reset,
                s.constrained, s.boxed, bd=prod[:, -1] if self.bounded else None, t=t_new,
            )
            mem3, gram3, free3, d, xbar, stpmax, gd, ls, stp, abnormal = out
            # Termination, in SciPy's order: its Python loop checks maxiter and maxfun
            # when an iteration ends, then the Fortran code tests convergence.
            pg = K.projected_gradient_norm(x_new, g_new, lower, upper)
            rel = (s.f - f_new) <= self.ftol * jnp.maximum(
                jnp.maximum(jnp.abs(s.f), jnp.abs(f_new)), 1.0
            )
            fail_abn = failed & ~had_pairs
            status, task = s.status, s.task
            # Explicit ladder: later rules take precedence.
            cand = [
                (accepted & abnormal, 2, TASK_ABNORMAL),
                (accepted & rel, 0, TASK_FTOL),
                (accepted & (pg <= self.pgtol), 0, TASK_PGTOL),
                (accepted & (nfev > self.maxfun), 1, TASK_MAXFUN),
                (accepted & (nit >= self.maxiter), 1, TASK_MAXITER),
                (failed & abnormal, 2, TASK_ABNORMAL),
                (fail_abn, 2, jnp.where(nonfinite_seen, TASK_NONFINITE_LS, TASK_ABNORMAL)),
            ]
            for c, st, tk in cand:
                status = jnp.where(c, st, status)
                task = jnp.where(c, tk, task)
            return (
                x_new, f_new, g_new, nit, mem3, gram3, free3, d, xbar, stpmax, gd, ls,
                stp, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, dtype),
                jnp.asarray(False), status.astype(jnp.int32), task.astype(jnp.int32),
            )

        def continue_search(_):
            return (
                s.x, s.f, s.g, s.nit, mem, s.gram_free, s.free_prev, s.d, s.xbar,
                s.stpmax, s.gdold, ls_n, stp_n, n_ls, stp_bad, nonfinite_seen,
                s.status, s.task,
            )

        out = lax.cond(accepted | failed, new_search, continue_search, None)
        (x, f, g, nit, mem, gram, free_prev, d, xbar, stpmax, gdold, ls, stp, n_ls,
         stp_bad, nonfinite_seen, status, task) = out
        new = LbfgsbState(
            x=x, f=f, g=g, mem=mem, gram_free=gram, free_prev=free_prev, d=d, xbar=xbar,
            stpmax=stpmax, gdold=gdold, ls=ls, stp=stp, n_ls=n_ls, stp_bad=stp_bad,
            nonfinite_seen=nonfinite_seen, constrained=s.constrained, boxed=s.boxed,
            nfev=nfev, njev=njev, nit=nit,
            status=status, task=task,
        )
        if self.callback is not None:
            new = self._call_back(new, accepted)
        return new

    def _call_back(self, s: LbfgsbState, accepted):
        """The user's callback after an accepted step; it may stop the solve.

        As in SciPy, a stop request yields to the iteration and evaluation limits
        (checked after it) and pre-empts the convergence tests (which SciPy's Fortran
        code would run only on its next call).
        """
        cb = self.callback

        def host(flag, xk, fk):
            return np.asarray(bool(flag) and bool(cb(xk, fk)))

        stop = io_callback(host, jax.ShapeDtypeStruct((), jnp.bool_), accepted, s.x, s.f,
                           ordered=False)
        stop = stop & accepted & (s.task != TASK_MAXFUN) & (s.task != TASK_MAXITER)
        return eqx.tree_at(
            lambda t: (t.status, t.task), s,
            (jnp.where(stop, 2, s.status).astype(jnp.int32),
             jnp.where(stop, TASK_CALLBACK, s.task).astype(jnp.int32)),
        )

    def terminate(self, state):
        return state.status != RUNNING

    def postprocess(self, state, args):
        s = state
        running = s.status == RUNNING  # only if the driver's max_steps cut it short
        status = jnp.where(running, 1, s.status)
        task = jnp.where(running, TASK_MAXFUN, s.task)
        mem = s.mem
        m = self.m
        valid = mem.age >= 0
        key = jnp.where(valid, mem.age, jnp.iinfo(jnp.int32).max)
        order = jnp.argsort(key)
        sk = jnp.where(valid[order][:, None], mem.buf[m + order], 0.0)
        yk = jnp.where(valid[order][:, None], mem.buf[order], 0.0)
        return dict(
            x=s.x, fun=s.f, jac=s.g, nfev=s.nfev, njev=s.njev, nit=s.nit,
            status=status.astype(jnp.int32), task_code=task.astype(jnp.int32),
            sk=sk, yk=yk, n_corrs=jnp.sum(valid, dtype=jnp.int32),
            # The raw memory, for callers that order the pairs themselves (a large
            # eager solve does it on the host, usually without a copy).
            pairs=mem.buf, age=mem.age,
        )
