"""method='trf' against SciPy 1.17 on the shared problem library and on NIST StRD.

SciPy is the oracle on exactly the same functions (each problem is written once for
NumPy and jax.numpy, see helpers.py).
"""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import nist
from jaxopt_lsq import least_squares

LOSSES = ["linear", "soft_l1", "huber", "cauchy", "arctan"]


def ours(problem, **kw):
    kw.setdefault("bounds", problem.bounds)
    return least_squares(problem.make(jnp), problem.x0_array(), args=problem.args, **kw)


def assert_not_worse(res, ref, rtol=1e-6, atol=1e-12):
    """Our cost is no worse than SciPy's (up to rounding)."""
    assert res.cost <= ref.cost * (1 + rtol) + atol, (res.cost, ref.cost)


def feasible(res, problem):
    lb, ub = problem.bounds_arrays()
    return np.all(res.x >= lb) and np.all(res.x <= ub)


def assert_same_minimum(res, ref, problem):
    """Feasible, no worse than SciPy, same status class; the same x and active set
    where SciPy succeeds on a problem that is not tagged hard."""
    assert feasible(res, problem)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    assert res.success == ref.success
    if ref.success and "hard" not in problem.tags:
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(res.active_mask, ref.active_mask)


# Problems without an analytic Jacobian; the others run with the same assertions (and
# SciPy's path) in test_analytic_jacobian_follows_scipy_path, against the same
# reference: for them SciPy's "exact" Jacobian is the analytic one. The autodiff
# Jacobian still runs here on 15 problems, in the loss and x_scale tests below, and on
# the 27 NIST datasets. As in test_dogbox_lm_vs_scipy.py, this keeps the number of
# compilations, which dominates the runtime, down.
AUTODIFF_PROBLEMS = [p for p in helpers.PROBLEMS if p.make_jac is None]


@pytest.mark.parametrize("problem", AUTODIFF_PROBLEMS, ids=helpers.problem_ids)
def test_autodiff_against_scipy_exact_jacobian(problem):
    """Default call (autodiff) vs SciPy with an exact Jacobian: same minimum, status class."""
    ref = helpers.scipy_solve(problem, jac="exact")
    res = ours(problem)
    assert_same_minimum(res, ref, problem)


@pytest.mark.parametrize("problem", helpers.JAC_PROBLEMS, ids=helpers.problem_ids)
def test_analytic_jacobian_follows_scipy_path(problem):
    """With the same analytic Jacobian our iterations are SciPy's: x, cost, status, nfev."""
    ref = helpers.scipy_solve(problem)
    res = ours(problem, jac=problem.make_jac(jnp))
    assert_same_minimum(res, ref, problem)
    assert res.status == ref.status or (res.success and ref.success)
    # Round-off differences may change the path on ill-conditioned problems by a few steps.
    assert abs(res.nfev - ref.nfev) <= max(2, 0.1 * ref.nfev), (res.nfev, ref.nfev)
    assert res.njev <= res.nfev


@pytest.mark.parametrize("problem", helpers.PROBLEMS, ids=helpers.problem_ids)
def test_two_point_against_scipy_two_point(problem):
    ref = helpers.scipy_solve(problem, jac="2-point")
    res = ours(problem, jac="2-point")
    assert feasible(res, problem)
    assert_not_worse(res, ref, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", ["exp_fit_outliers", "exp_fit_bounded", "osborne1", "rosenbrock_bounded_doc"])
def test_every_loss(loss, name):
    problem = helpers.get_problem(name)
    kw = dict(loss=loss, f_scale=0.1)
    ref = helpers.scipy_solve(problem, jac="exact", **kw)
    res = ours(problem, **kw)
    assert feasible(res, problem)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    if ref.status > 0 and name != "exp_fit_outliers":
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-4, atol=1e-6)


def test_callable_loss_matches_builtin():
    problem = helpers.get_problem("exp_fit_outliers")

    def soft_l1(z):
        t = 1 + z
        return jnp.stack([2 * (t**0.5 - 1), t**-0.5, -0.5 * t**-1.5])

    def soft_l1_np(z):
        t = 1 + z
        return np.stack([2 * (t**0.5 - 1), t**-0.5, -0.5 * t**-1.5])

    builtin = ours(problem, loss="soft_l1", f_scale=0.1)
    for fn in (soft_l1, soft_l1_np):
        res = ours(problem, loss=fn, f_scale=0.1)
        np.testing.assert_allclose(res.x, builtin.x, rtol=1e-10)
        assert res.nfev == builtin.nfev


@pytest.mark.parametrize("x_scale", ["jac", 2.0])
@pytest.mark.parametrize("name", ["osborne2", "powell_singular_lb", "meyer"])
def test_x_scale(x_scale, name):
    problem = helpers.get_problem(name)
    ref = helpers.scipy_solve(problem, jac="exact", x_scale=x_scale)
    res = ours(problem, x_scale=x_scale)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("name", ["rosenbrock", "rosenbrock_bounded_doc", "complex_wrapped", "exp_fit_bounded"])
def test_seed_examples_numpy_function(name):
    """Existing SciPy code (a NumPy fun) runs unchanged and matches SciPy's FD path."""
    problem = helpers.get_problem(name)
    ref = helpers.scipy_solve(problem, jac="2-point")
    res = least_squares(problem.make(np), problem.x0_array(), bounds=problem.bounds, args=problem.args)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6, atol=1e-9)
    assert res.status == ref.status
    assert abs(res.nfev - ref.nfev) <= 1


# --------------------------------------------------------------------------------------
# NIST StRD: certified parameters to 6 significant digits.
# --------------------------------------------------------------------------------------
TIGHT = dict(xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=100000)
CASES = [(name, k) for name in nist.DATASETS for k in (1, 2)]


@functools.lru_cache(maxsize=None)
def _nist_fun(name):
    # One function object per dataset: both starts reuse its compiled solves (the
    # compilation, not the solve, is what a test here costs).
    return nist.residual_fun(name, jnp)


def rel_err(x, ds):
    return float(np.max(np.abs(x - ds.certified_params) / np.abs(ds.certified_params)))


@pytest.mark.parametrize("name,start", CASES, ids=[f"{n}-start{k}" for n, k in CASES])
def test_nist_certified_values(name, start):
    from scipy.optimize import least_squares as scipy_least_squares

    ds = nist.load(name)
    fun_j, fun_n = _nist_fun(name), nist.residual_fun(name, np)
    args = nist.residual_args(name)
    x0 = ds.start(start)
    # Tight tolerances: SciPy with an exact Jacobian reaches every certified value; so must we.
    res = least_squares(fun_j, x0, args=args, **TIGHT)
    assert rel_err(res.x, ds) < 1e-6, rel_err(res.x, ds)
    # Default settings: wherever SciPy's trf (its default 2-point Jacobian) reaches them.
    with np.errstate(all="ignore"):
        ref = scipy_least_squares(fun_n, x0, args=args)
    res = least_squares(fun_j, x0, args=args)
    if rel_err(ref.x, ds) < 1e-6:
        assert rel_err(res.x, ds) < 1e-6, (rel_err(res.x, ds), rel_err(ref.x, ds))
    assert_not_worse(res, ref, rtol=1e-6, atol=1e-12)
