"""Progress output and user callbacks for the least-squares solvers.

Both run on the host through JAX callbacks, so they work the same in an eager call and
inside a user's ``jax.jit``: ``verbose`` prints SciPy's iteration table and summary,
``callback`` receives SciPy's ``intermediate_result`` (or ``x``) after each iteration
and may stop the solve by raising ``StopIteration`` (any other exception stops an eager
solve and is re-raised by the facade).
"""

from __future__ import annotations

import inspect

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
