"""SciPy's own L-BFGS-B tests, pointed at jaxopt_lsq (run by run.py).

Imports ``test_lbfgsb_hessinv.py``, ``test_lbfgsb_setulb.py`` and ``test_optimize.py``
from the installed SciPy and replaces their ``minimize`` / ``fmin_l_bfgs_b`` with a
dispatcher: L-BFGS-B calls (``method='L-BFGS-B'`` in any case, or no method with bounds
and no constraints, which is SciPy's automatic choice) and every ``fmin_l_bfgs_b`` call
go to jaxopt_lsq; calls with other methods stay with SciPy (tests of L-BFGS-B sometimes
compare with BFGS). :func:`selected` says which tests of ``test_optimize.py`` concern
L-BFGS-B; run.py deselects the rest. The file name does not match ``test_*.py``, so the
default test run does not collect it.
"""

import threading
import types

import jax
import scipy.optimize as so
import scipy.optimize.tests.test_lbfgsb_hessinv as t_hessinv
import scipy.optimize.tests.test_lbfgsb_setulb as t_setulb
import scipy.optimize.tests.test_optimize as t_optimize

import jaxopt_lsq

jax.config.update("jax_enable_x64", True)


def _is_lbfgsb(method, bounds, constraints):
    if method is None:  # SciPy's automatic choice
        return not constraints and bounds is not None
    return isinstance(method, str) and method.lower() == "l-bfgs-b"


def minimize(fun, x0, args=(), method=None, jac=None, hess=None, hessp=None, bounds=None,
             constraints=(), tol=None, callback=None, options=None):
    kw = dict(args=args, jac=jac, hess=hess, hessp=hessp, bounds=bounds,
              constraints=constraints, tol=tol, callback=callback, options=options)
    if _is_lbfgsb(method, bounds, constraints):
        return jaxopt_lsq.minimize(fun, x0, method="L-BFGS-B", **kw)
    return so.minimize(fun, x0, method=method, **kw)


class _Optimize:
    """``scipy.optimize`` with the L-BFGS-B entry points replaced."""

    minimize = staticmethod(minimize)
    fmin_l_bfgs_b = staticmethod(jaxopt_lsq.fmin_l_bfgs_b)

    def __getattr__(self, name):
        return getattr(so, name)


class _Threading:
    """``threading`` whose ``local()`` is a plain namespace.

    SciPy's tests count calls in ``threading.local()`` objects (so that they can run in
    parallel threads). JAX calls a NumPy function from its own callback thread, where
    those counters would look empty; with one test running at a time a process-wide
    namespace is the same thing.
    """

    local = types.SimpleNamespace

    def __getattr__(self, name):
        return getattr(threading, name)


t_optimize.optimize = _Optimize()
t_optimize.threading = _Threading()
t_hessinv.minimize = minimize
t_setulb.minimize = minimize

# Tests of test_optimize.py that call L-BFGS-B without saying so in their name or
# parameters (they loop over methods, or rely on SciPy's automatic choice).
_LOOPS_OVER_METHODS = {
    "test_minimize_tol_parameter",
    "test_initial_step_scaling",
    "test_result_x_shape_when_len_x_is_one",
    "test_x_overwritten_user_function",
    "test_minimize_automethod",
}


# Tests that do not apply (not run; run.py lists them with the reason).
NOT_APPLICABLE = {
    "test_setulb_floatround": "drives SciPy's private Fortran/C routine "
    "`scipy.optimize._lbfgsb.setulb` step by step (reverse communication with hard-coded "
    "iterates), so it tests SciPy's code whatever `minimize` is; that our iterates never "
    "leave the box is tested in tests/test_lbfgsb.py::test_iterates_stay_in_bounds",
}


def selected(item):
    """Whether a collected test (a pytest item) concerns L-BFGS-B and applies to us."""
    if item.originalname in NOT_APPLICABLE:
        return False
    if item.function.__module__ != t_optimize.__name__:
        return True  # the two test_lbfgsb_*.py files: every test
    name = item.name.lower()
    if "l-bfgs-b" in name or "l_bfgs" in name or item.cls is t_optimize.TestLBFGSBBounds:
        return True
    return item.originalname in _LOOPS_OVER_METHODS


# What pytest collects here: every test of the two test_lbfgsb_*.py files, and the
# test classes and functions of test_optimize.py (run.py keeps the selected ones).
test_hessinv_1 = t_hessinv.test_1
test_hessinv_2 = t_hessinv.test_2
test_hessinv_3 = t_hessinv.test_3
test_setulb_floatround = t_setulb.test_setulb_floatround
test_gh_issue18730 = t_setulb.test_gh_issue18730

TestOptimizeSimple = t_optimize.TestOptimizeSimple
TestLBFGSBBounds = t_optimize.TestLBFGSBBounds
TestWorkers = t_optimize.TestWorkers
TestAnnotations = t_optimize.TestAnnotations
test_minimize_with_scalar = t_optimize.test_minimize_with_scalar
test_equal_bounds = t_optimize.test_equal_bounds
test_all_bounds_equal = t_optimize.test_all_bounds_equal
test_minimize_maxiter_noninteger = t_optimize.test_minimize_maxiter_noninteger
test_result_x_shape_when_len_x_is_one = t_optimize.test_result_x_shape_when_len_x_is_one
test_x_overwritten_user_function = t_optimize.test_x_overwritten_user_function
