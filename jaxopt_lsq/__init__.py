"""jaxopt_lsq: SciPy's ``least_squares`` and L-BFGS-B, written for JAX."""

from ._result import OptimizeResult as OptimizeResult

__version__ = "0.1.0"
