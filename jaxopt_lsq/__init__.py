"""jaxopt_lsq: SciPy's ``least_squares`` and L-BFGS-B, written for JAX."""

from ._result import OptimizeResult as OptimizeResult

__version__ = "0.1.0"
from ._lbfgsb import fmin_l_bfgs_b as fmin_l_bfgs_b
from ._lbfgsb import minimize as minimize
from ._lbfgsb import LbfgsInvHessProduct as LbfgsInvHessProduct
