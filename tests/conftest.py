"""Test configuration: float64 on for the SciPy comparisons.

The library never touches ``jax_enable_x64``; only the tests do. float32 behaviour is
tested by passing float32 ``x0`` (the solver follows ``x0``'s dtype).
"""

import jax

jax.config.update("jax_enable_x64", True)
