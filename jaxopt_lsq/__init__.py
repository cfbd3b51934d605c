"""jaxopt_lsq: SciPy's ``least_squares`` and L-BFGS-B, written for JAX.

Same names, arguments, defaults, result fields, status codes and error messages as
:mod:`scipy.optimize`; compiled ``lax.while_loop`` solvers that work under ``jax.jit``,
``jax.vmap`` and in float32 or float64.
"""

from ._batch import least_squares_batch as least_squares_batch
from ._result import OptimizeWarning as OptimizeWarning
from ._curve_fit import curve_fit as curve_fit
from ._lbfgsb import LbfgsInvHessProduct as LbfgsInvHessProduct
from ._lbfgsb import fmin_l_bfgs_b as fmin_l_bfgs_b
from ._lbfgsb import minimize as minimize
from ._jacobian import JacobianLinearOperator as JacobianLinearOperator
from ._jacobian import SparseJacobian as SparseJacobian
from ._least_squares import least_squares as least_squares
from ._result import OptimizeResult as OptimizeResult

__version__ = "0.1.0"
__all__ = [
    "least_squares",
    "least_squares_batch",
    "curve_fit",
    "fmin_l_bfgs_b",
    "minimize",
    "LbfgsInvHessProduct",
    "OptimizeResult",
    "OptimizeWarning",
    "SparseJacobian",
    "JacobianLinearOperator",
]
