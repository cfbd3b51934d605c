"""The one loop driver.

Every solver in the package is a small state machine (an :class:`AbstractSolver`):
``init`` builds the state from the starting point, ``step`` advances it by one unit of
work (for the least-squares solvers: exactly one evaluation of the residuals), and
``terminate`` says when to stop. ``postprocess`` turns the final state into the fields
of an :class:`~jaxopt_lsq.OptimizeResult`. Only this module calls
:func:`jax.lax.while_loop`; solvers never loop over iterations themselves.

The driver adds its own hard bound, ``solver.max_steps``, on top of the solver's
``terminate``: whatever a user's function returns (NaN, inf, garbage), the loop ends.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax


class AbstractSolver(eqx.Module):
    """A solver: static settings in its fields, all arrays in its state."""

    @abc.abstractmethod
    def init(self, x0, args) -> Any:
        """Build the initial state (evaluates the function at ``x0``)."""

    @abc.abstractmethod
    def step(self, state, args) -> Any:
        """Advance the state by one unit of work."""

    @abc.abstractmethod
    def terminate(self, state) -> jax.Array:
        """A boolean scalar: stop now."""

    @abc.abstractmethod
    def postprocess(self, state, args) -> dict:
        """The result fields (arrays) of the final state."""

    @property
    @abc.abstractmethod
    def max_steps(self) -> int:
        """A static upper bound on the number of ``step`` calls."""


def iterate(solver: AbstractSolver, x0, args) -> dict:
    """Run ``solver`` from ``x0`` to termination and return its result fields."""
    state0 = solver.init(x0, args)

    def cond_fun(carry):
        k, state = carry
        return jnp.logical_and(k < solver.max_steps, jnp.logical_not(solver.terminate(state)))

    def body_fun(carry):
        k, state = carry
        return k + 1, solver.step(state, args)

    _, state = lax.while_loop(cond_fun, body_fun, (jnp.asarray(0, jnp.int32), state0))
    return solver.postprocess(state, args)


def iterate_some(solver: AbstractSolver, state, args, steps_done, max_more):
    """Advance ``state`` by at most ``max_more`` steps (fewer if it terminates or reaches
    ``solver.max_steps`` counting the ``steps_done`` before). Returns ``(state,
    steps_done)``. Used to run a batch in rounds (see ``_batch.py``); ``iterate`` is the
    same loop in one go."""

    def cond_fun(carry):
        k, s, state = carry
        return (k < max_more) & (s < solver.max_steps) & jnp.logical_not(solver.terminate(state))

    def body_fun(carry):
        k, s, state = carry
        return k + 1, s + 1, solver.step(state, args)

    _, steps_done, state = lax.while_loop(cond_fun, body_fun, (jnp.asarray(0, jnp.int32), steps_done, state))
    return state, steps_done
