"""Test configuration: float64 on for the SciPy comparisons.

The library never touches ``jax_enable_x64``; only the tests do. float32 behaviour is
tested by passing float32 ``x0`` (the solver follows ``x0``'s dtype).
"""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_solvers():
    """Drop compiled executables after each test module.

    A test worker compiles hundreds of distinct solvers (one per problem and option
    set); keeping them all alive for the whole session only costs memory, and XLA's CPU
    compiler has been seen to crash late in such long-lived processes.
    """
    yield
    from jaxopt_lsq import _batch, _lbfgsb, _least_squares

    _least_squares._compiled_solve.cache_clear()
    _least_squares.build_solver.cache_clear()
    _batch._program.cache_clear()
    _lbfgsb._compiled_solve.cache_clear()
    jax.clear_caches()
