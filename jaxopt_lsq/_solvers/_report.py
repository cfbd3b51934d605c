"""Progress output and user callbacks.

All of it runs on the host through JAX callbacks, so it works the same in an eager call
and inside a user's ``jax.jit``: ``verbose`` prints SciPy's iteration table and summary
for ``least_squares``, ``callback`` receives SciPy's ``intermediate_result`` (or ``x``)
after each iteration and may stop the solve by raising ``StopIteration`` (any other
exception stops an eager solve and is re-raised by the facade), and
:class:`LbfgsbLog` prints the L-BFGS-B iteration log of the Fortran code for
``iprint >= 0``.
"""

from __future__ import annotations

import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from .._result import LEAST_SQUARES_MESSAGES


def _print_header():
    print("{:^15}{:^15}{:^15}{:^15}{:^15}{:^15}".format(
        "Iteration", "Total nfev", "Cost", "Cost reduction", "Step norm", "Optimality"))


def header():
    jax.debug.callback(_print_header)


def _print_row(nit, nfev, cost, reduction, step_norm, optimality):
    reduction = " " * 15 if np.isnan(reduction) else f"{float(reduction):^15.2e}"
    step_norm = " " * 15 if np.isnan(step_norm) else f"{float(step_norm):^15.2e}"
    print(f"{int(nit):^15}{int(nfev):^15}{float(cost):^15.4e}{reduction}{step_norm}{float(optimality):^15.2e}")


def row(state):
    jax.debug.callback(
        _print_row, state.nit, state.nfev, state.cost, state.actual_reduction, state.step_norm, state.g_norm
    )


def _print_summary(status, nfev, cost0, cost, optimality):
    print(LEAST_SQUARES_MESSAGES.get(int(status), f"Unknown status {int(status)}."))
    print(
        f"Function evaluations {int(nfev)}, initial cost {float(cost0):.4e}, "
        f"final cost {float(cost):.4e}, first-order optimality {float(optimality):.2e}."
    )


def summary(state):
    jax.debug.callback(_print_summary, state.status, state.nfev, state.cost0, state.cost, state.g_norm)


def _wants_intermediate_result(callback):
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        return False
    return params == {"intermediate_result"}


def call_user_callback(callback, state):
    """Call ``callback`` on the host; returns a traced bool: stop requested."""
    from .._host import intermediate_result, run_user_callback

    by_name = _wants_intermediate_result(callback)

    def host(x, f, nit, nfev, cost):
        if by_name:
            res = intermediate_result(x=np.array(x), fun=np.array(f), nit=int(nit), nfev=int(nfev),
                                      cost=float(cost))
            return np.asarray(run_user_callback(callback, intermediate_result=res))
        return np.asarray(run_user_callback(callback, np.array(x)))

    return io_callback(
        host, jax.ShapeDtypeStruct((), jnp.bool_), state.x, state.f_true, state.nit, state.nfev, state.cost, ordered=False
    )


# ----------------------------------------------------------------------------------
# L-BFGS-B: the iteration log of the Fortran code (L-BFGS-B 3.0), behind ``iprint``
# ----------------------------------------------------------------------------------
# SciPy up to 1.14 ran the Fortran code, which printed this log for ``iprint >= 0``
# (``disp`` overriding ``iprint``). SciPy 1.15 replaced it with a C translation that
# prints nothing and deprecated both options; jaxopt_lsq keeps SciPy 1.17's warning and
# prints the old log, so existing ``iprint=...`` code still shows its progress. Levels:
#   iprint < 0    nothing (the default)
#   iprint = 0    the header and the final summary
#   iprint > 0    also "At iterate" every ``iprint`` iterations, skipped BFGS updates
#                 and the final ``F``
#   iprint >= 99  every iteration, with its line-search count and step length
#   iprint >= 100 also the final x; > 100 also x and g at every iteration
# Not reproduced: the Cauchy-search and subspace-minimisation traces of levels >= 99
# (this Cauchy point is computed without a loop over segments, so "Tnint" prints "-")
# and the timings. "Nact" counts the variables on a bound at the final iterate.


def _fortran_d(v, width, digits):
    """Fortran's ``1pDw.d`` edit descriptor: ``2.40000D+01``, right-justified."""
    v = float(v)
    if not np.isfinite(v):
        return ("NaN" if np.isnan(v) else ("-Infinity" if v < 0 else "Infinity")).rjust(width)
    mantissa, exponent = f"{v:.{digits}E}".split("E")
    e = int(exponent)
    text = f"{mantissa}D{e:+03d}" if abs(e) <= 99 else f"{mantissa}{e:+04d}"
    return text.rjust(width)


def _fortran_list_real(v):
    """gfortran's list-directed double precision (17 significant digits): fixed point
    for 0.1 <= |v| < 1e16, else ``1.2345678901234567E-012``."""
    v = float(v)
    if not np.isfinite(v):
        return str(v).rjust(25)
    if v == 0 or 0.1 <= abs(v) < 1e16:
        int_digits = len(str(int(abs(v)))) if abs(v) >= 1 else 0
        return f"{v:.{17 - int_digits}f}".rjust(22)
    mantissa, exponent = f"{v:.16E}".split("E")
    return f"{mantissa}E{int(exponent):+04d}".rjust(25)


def _fortran_vector(name, v):
    """Format ``(/,a4, 1p, 6(1x,d11.4),/,(4x,1p,6(1x,d11.4)))``."""
    cells = [" " + _fortran_d(a, 11, 4) for a in np.ravel(v)]
    rows = ["".join(cells[i : i + 6]) for i in range(0, len(cells), 6)] or [""]
    return "\n" + name.ljust(4) + rows[0] + "".join("\n    " + r for r in rows[1:])


def _at_iterate(nit, f, pg):
    return f"\nAt iterate{int(nit):5d}    f= {_fortran_d(f, 12, 5)}    |proj g|= {_fortran_d(pg, 12, 5)}"


class LbfgsbLog(eqx.Module):
    """An L-BFGS-B solver that prints the Fortran code's log for ``iprint >= 0``.

    Wraps the solver without changing it: the state is ``(inner_state, counters)``
    and the printing happens on the host through :func:`jax.debug.callback`, so the
    log appears in eager calls and inside ``jax.jit`` alike (under ``jax.vmap``, once
    per batch element).
    """

    inner: Any
    iprint: int = eqx.field(static=True)

    @property
    def max_steps(self):
        return self.inner.max_steps

    def init(self, x0, args):
        from .._kernels.lbfgsb import projected_gradient_norm

        lower, upper = args[0], args[1]
        s = self.inner.init(x0, args)
        iprint = self.iprint
        constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
        projected = jnp.any(s.x != x0)
        at_bound = jnp.sum((s.x <= lower) | (s.x >= upper))
        pg = projected_gradient_norm(s.x, s.g, lower, upper)
        n, m, eps = s.x.shape[0], self.inner.m, float(jnp.finfo(s.x.dtype).eps)

        def start(constrained, projected, at_bound, f, pg, x=None, lower=None, upper=None):
            lines = ["RUNNING THE L-BFGS-B CODE", "", "           * * *", "",
                     f"Machine precision ={_fortran_d(eps, 10, 3)}",
                     f" N = {n:>12}     M = {m:>12}"]
            if iprint > 100:
                lines += [_fortran_vector("L =", lower), _fortran_vector("X0 =", x),
                          _fortran_vector("U =", upper)]
            if bool(projected):
                lines.append(" The initial X is infeasible.  Restart with its projection.")
            if not bool(constrained):
                lines.append(" This problem is unconstrained.")
            if iprint > 0:
                lines.append(f"\nAt X0 {int(at_bound):9d} variables are exactly at the bounds")
                lines.append(_at_iterate(0, f, pg))
            print("\n".join(lines))

        vectors = (x0, lower, upper) if iprint > 100 else ()
        jax.debug.callback(start, constrained, projected, at_bound, s.f, pg, *vectors)
        zero = jnp.asarray(0, jnp.int32)
        return s, (zero, zero)  # (BFGS updates skipped, evaluations in this iteration)

    def step(self, state, args):
        from .._kernels.lbfgsb import projected_gradient_norm
        from .._result import RUNNING

        s, (nskip, evals) = state
        new = self.inner.step(s, args)
        lower, upper = args[0], args[1]
        evals = evals + (new.njev - s.njev)
        accepted = new.nit > s.nit
        # The memory update rule of the solver (and of the Fortran code).
        ys = (jnp.dot(new.g, s.d) - s.gdold) * s.stp
        minus_gs = -s.gdold * s.stp
        skipped = accepted & (new.status == RUNNING) & ~(ys > jnp.finfo(ys.dtype).eps * minus_gs)
        iprint = self.iprint
        if iprint > 0:
            pg = projected_gradient_norm(new.x, new.g, lower, upper)
            xstep = jnp.sqrt(jnp.sum((new.x - s.x) ** 2))

            def row(accepted, skipped, nit, f, pg, evals, xstep, ys, minus_gs, x=None, g=None):
                if not bool(accepted):
                    return
                lines = []
                if iprint >= 99:
                    lines.append(f" LINE SEARCH{int(evals) - 1:12d} times; norm of step = "
                                 f"{_fortran_list_real(xstep)}")
                    lines.append(_at_iterate(nit, f, pg))
                    if iprint > 100:
                        lines += [_fortran_vector("X =", x), _fortran_vector("G =", g)]
                elif int(nit) % iprint == 0:
                    lines.append(_at_iterate(nit, f, pg))
                if bool(skipped):
                    lines.append(f"  ys={float(ys):10.3E}  -gs={float(minus_gs):10.3E} "
                                 "BFGS update SKIPPED")
                if lines:
                    print("\n".join(lines))

            # x and g go to the host only when they are printed (large n).
            vectors = (new.x, new.g) if iprint > 100 else ()
            jax.debug.callback(row, accepted, skipped, new.nit, new.f, pg, evals, xstep, ys,
                               minus_gs, *vectors)
        nskip = nskip + skipped.astype(jnp.int32)
        evals = jnp.where(accepted, 0, evals)
        return new, (nskip, evals)

    def terminate(self, state):
        return self.inner.terminate(state[0])

    def postprocess(self, state, args):
        from .._kernels.lbfgsb import projected_gradient_norm
        from .._result import _message_for

        s, (nskip, _) = state
        out = self.inner.postprocess(s, args)
        lower, upper = args[0], args[1]
        pg = projected_gradient_norm(s.x, s.g, lower, upper)
        nact = jnp.sum((s.x <= lower) | (s.x >= upper))
        iprint, n = self.iprint, s.x.shape[0]

        def summary(nit, njev, nskip, nact, pg, f, task, x=None):
            print("\n".join([
                "", "           * * *", "",
                "Tit   = total number of iterations",
                "Tnf   = total number of function evaluations",
                "Tnint = total number of segments explored during Cauchy searches",
                "Skip  = number of BFGS updates skipped",
                "Nact  = number of active bounds at final generalized Cauchy point",
                "Projg = norm of the final projected gradient",
                "F     = final function value", "", "           * * *", "",
                "   N    Tit     Tnf  Tnint  Skip  Nact     Projg        F",
                f"{n:5d} {int(nit):6d} {int(njev):6d} {'-':>6}  {int(nskip):4d} {int(nact):5d}"
                f"  {_fortran_d(pg, 10, 3)}  {_fortran_d(f, 10, 3)}",
            ]))
            if iprint >= 100:
                print(_fortran_vector("X =", x))
            if iprint >= 1:
                print(f"  F = {_fortran_list_real(f)}")
            print("\n" + _message_for("lbfgsb", np.asarray(task)))

        vectors = (out["x"],) if iprint >= 100 else ()
        jax.debug.callback(summary, out["nit"], out["njev"], nskip, nact, pg, out["fun"],
                           out["task_code"], *vectors)
        return out
