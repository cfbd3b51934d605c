"""method='dogbox' and method='lm' against SciPy 1.17 on the shared problem library and
on NIST StRD, plus their JAX transformations and SciPy's validation for 'lm'.

SciPy's same method is the oracle on exactly the same functions (helpers.py).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import helpers
import nist
from jaxopt_lsq import least_squares

LOSSES = ["linear", "soft_l1", "huber", "cauchy", "arctan"]
LM_PROBLEMS = helpers.UNBOUNDED_PROBLEMS
LM_JAC_PROBLEMS = [p for p in LM_PROBLEMS if p.make_jac is not None]


def ours(problem, **kw):
    if kw.get("method") != "lm":
        kw.setdefault("bounds", problem.bounds)
    return least_squares(problem.make(jnp), problem.x0_array(), args=problem.args, **kw)


def scipy(problem, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return helpers.scipy_solve(problem, **kw)


def assert_not_worse(res, ref, rtol=1e-6, atol=1e-12):
    assert res.cost <= ref.cost * (1 + rtol) + atol, (res.cost, ref.cost)


def feasible(res, problem):
    lb, ub = problem.bounds_arrays()
    return np.all(res.x >= lb) and np.all(res.x <= ub)


def same_outcome(res, ref):
    """Same status class; a success where SciPy ran out of evaluations is allowed."""
    return res.success == ref.success or (res.success and ref.status == 0)


# --------------------------------------------------------------------------------------
# The problem library: same minimum, same status class, same path with analytic Jacobians
# --------------------------------------------------------------------------------------
METHOD_JAC_CASES = [("dogbox", p) for p in helpers.JAC_PROBLEMS] + [("lm", p) for p in LM_JAC_PROBLEMS]
# Problems without an analytic Jacobian (the others are covered by the analytic test);
# this keeps the number of compilations, which dominates the runtime, down.
METHOD_CASES = [("dogbox", p) for p in helpers.PROBLEMS if p.make_jac is None] + [
    ("lm", p) for p in LM_PROBLEMS if p.make_jac is None
]


@pytest.mark.parametrize(
    "method,problem", METHOD_JAC_CASES, ids=[f"{m}-{p.name}" for m, p in METHOD_JAC_CASES]
)
def test_analytic_jacobian_follows_scipy_path(method, problem):
    """With the same analytic Jacobian our iterations are SciPy's: cost, status, nfev, njev."""
    ref = scipy(problem, method=method)
    res = ours(problem, method=method, jac=problem.make_jac(jnp))
    assert feasible(res, problem)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    assert res.status == ref.status or (res.success and ref.success)
    assert abs(res.nfev - ref.nfev) <= max(3, 0.1 * ref.nfev), (res.nfev, ref.nfev)
    assert abs(res.njev - ref.njev) <= max(3, 0.1 * ref.njev), (res.njev, ref.njev)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)


@pytest.mark.parametrize("method,problem", METHOD_CASES, ids=[f"{m}-{p.name}" for m, p in METHOD_CASES])
def test_autodiff_against_scipy_exact_jacobian(method, problem):
    """Default call (autodiff) vs SciPy's same method with an exact Jacobian."""
    ref = scipy(problem, method=method, jac="exact")
    res = ours(problem, method=method)
    assert feasible(res, problem)
    if res.cost > ref.cost * (1 + 1e-5) + 1e-10 and "hard" in problem.tags:
        jac = helpers.jax_jacobian_numpy(problem)
        kw = {} if method == "lm" else {"bounds": problem.bounds}

        def solve(x):
            return so.least_squares(problem.make(np), x, jac=jac, args=problem.args, method=method, **kw)

        if helpers.reference_is_a_fluke(solve, problem.x0_array(), lambda r: r.cost <= ref.cost * (1 + 1e-5) + 1e-10):
            pytest.skip(f"SciPy's {method} reaches its cost only from the exact start (not when it moves by 1e-13)")
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    assert same_outcome(res, ref), (res.status, ref.status)
    if ref.success and "hard" not in problem.tags:
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-4, atol=1e-6)
    # SciPy reports no Jacobian count for 'lm' unless `jac` is the user's callable.
    assert (res.njev is None) == (method == "lm")


@pytest.mark.parametrize("method", ["dogbox", "lm"])
@pytest.mark.parametrize("name", ["rosenbrock", "osborne1", "meyer", "exp_fit_outliers"])
def test_two_point_against_scipy_two_point(method, name):
    """Finite differences on both sides: 'lm' counts only the algorithm's evaluations."""
    problem = helpers.get_problem(name)
    ref = scipy(problem, method=method, jac="2-point")
    res = ours(problem, method=method, jac="2-point")
    assert_not_worse(res, ref, rtol=1e-4, atol=1e-9)
    assert abs(res.nfev - ref.nfev) <= max(3, 0.1 * ref.nfev), (res.nfev, ref.nfev)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", ["exp_fit_outliers", "exp_fit_bounded", "osborne1_bounded"])
def test_dogbox_every_loss(loss, name):
    problem = helpers.get_problem(name)
    kw = dict(method="dogbox", loss=loss, f_scale=0.1)
    ref = scipy(problem, jac="exact", **kw)
    res = ours(problem, **kw)
    assert feasible(res, problem)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    assert res.status == ref.status or (res.success and ref.success)
    if ref.success and name != "exp_fit_outliers":
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("x_scale", ["jac", 2.0])
@pytest.mark.parametrize("method,name", [("dogbox", "powell_singular_lb"), ("dogbox", "osborne2"),
                                         ("lm", "osborne2"), ("lm", "meyer")])
def test_x_scale(method, name, x_scale):
    problem = helpers.get_problem(name)
    ref = scipy(problem, method=method, jac="exact", x_scale=x_scale)
    res = ours(problem, method=method, x_scale=x_scale)
    assert_not_worse(res, ref, rtol=1e-5, atol=1e-10)
    if method == "lm":
        assert abs(res.nfev - ref.nfev) <= max(3, 0.1 * ref.nfev), (res.nfev, ref.nfev)


NUMPY_CASES = [("dogbox", "rosenbrock_bounded_doc"), ("dogbox", "exp_fit_bounded"), ("dogbox", "complex_wrapped"),
               ("lm", "rosenbrock"), ("lm", "box3d"), ("lm", "osborne1")]


@pytest.mark.parametrize("method,name", NUMPY_CASES)
def test_numpy_function_runs_unchanged(method, name):
    """Existing SciPy code (NumPy fun, default FD Jacobian) matches SciPy's path."""
    problem = helpers.get_problem(name)
    ref = scipy(problem, method=method, jac="2-point")
    kw = dict(bounds=problem.bounds) if method != "lm" else {}
    res = least_squares(problem.make(np), problem.x0_array(), args=problem.args, method=method, **kw)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6, atol=1e-9)
    assert res.status == ref.status
    assert abs(res.nfev - ref.nfev) <= 1
    assert res.njev == ref.njev


def test_dogbox_variables_on_bounds_at_x0():
    """dogbox starts on the bounds (no shift into the interior) and keeps them exactly."""
    problem = helpers.get_problem("rosenbrock_ub")
    lb, ub = problem.bounds_arrays()
    x0 = np.clip(problem.x0_array(), lb, ub)
    ref = so.least_squares(problem.make(np), x0, jac=problem.make_jac(np), bounds=problem.bounds, method="dogbox")
    res = least_squares(problem.make(jnp), x0, jac=problem.make_jac(jnp), bounds=problem.bounds, method="dogbox")
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)
    assert res.nfev == ref.nfev


# --------------------------------------------------------------------------------------
# NIST StRD: certified values wherever SciPy's same method (default settings) reaches them
# --------------------------------------------------------------------------------------
NIST_CASES = [(m, name, k) for m in ("dogbox", "lm") for name in nist.DATASETS for k in (1, 2)]


@functools.lru_cache(maxsize=None)
def _nist_fun(name):
    return nist.residual_fun(name, jnp)


def rel_err(x, ds):
    return float(np.max(np.abs(x - ds.certified_params) / np.abs(ds.certified_params)))


@pytest.mark.parametrize("method,name,start", NIST_CASES, ids=[f"{m}-{n}-start{k}" for m, n, k in NIST_CASES])
def test_nist_certified_values(method, name, start):
    ds = nist.load(name)
    args = nist.residual_args(name)
    x0 = ds.start(start)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ref = so.least_squares(nist.residual_fun(name, np), x0, args=args, method=method)
    # From the far start (start 1) of the hard datasets, the methods stop at other local
    # minima or run out of evaluations, with either Jacobian; only SciPy's successes bind.
    if rel_err(ref.x, ds) >= 1e-6:
        pytest.skip(f"SciPy's {method} does not reach the certified values from start {start}")
    res = least_squares(_nist_fun(name), x0, args=args, method=method)
    if rel_err(res.x, ds) >= 1e-6 and helpers.reference_is_a_fluke(
        lambda x: so.least_squares(nist.residual_fun(name, np), x, args=args, method=method),
        x0,
        lambda r: rel_err(r.x, ds) < 1e-6,
    ):
        pytest.skip(f"SciPy's {method} reaches the certified values from start {start} only from the exact start")
    assert rel_err(res.x, ds) < 1e-6, (rel_err(res.x, ds), rel_err(ref.x, ds))


# --------------------------------------------------------------------------------------
# JAX transformations and float32
# --------------------------------------------------------------------------------------
def _expfit(x, t, y):
    return x[0] + x[1] * jnp.exp(x[2] * t) - y


T = np.linspace(0, 3, 25)
Y = 0.5 + 2.0 * np.exp(-1.3 * T) + 0.01 * np.random.default_rng(0).standard_normal(25)
X0 = np.array([1.0, 1.0, -0.5])


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_jit_matches_eager(method):
    eager = least_squares(_expfit, X0, args=(T, Y), method=method)
    solve = jax.jit(lambda x0, y: least_squares(_expfit, x0, args=(T, y), method=method))
    res = solve(jnp.asarray(X0), jnp.asarray(Y))
    np.testing.assert_allclose(res.x, eager.x, rtol=1e-10)
    assert int(res.nfev) == eager.nfev and int(res.status) == eager.status
    assert res.message == eager.message


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_vmap_over_data_matches_loop(method):
    ys = np.stack([Y, 2 * Y, Y + 0.3])
    batched = jax.vmap(lambda y: least_squares(_expfit, jnp.asarray(X0), args=(T, y), method=method))(jnp.asarray(ys))
    for i, y in enumerate(ys):
        single = least_squares(_expfit, X0, args=(T, y), method=method)
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-8, atol=1e-10)
        assert int(batched.nfev[i]) == single.nfev


def test_dogbox_vmap_over_bounds():
    lbs = jnp.asarray([[-np.inf, -np.inf, -np.inf], [0.6, -np.inf, -np.inf], [-np.inf, -np.inf, -1.0]])
    batched = jax.vmap(
        lambda lb: least_squares(_expfit, jnp.asarray(X0), bounds=(lb, jnp.inf), args=(T, Y), method="dogbox")
    )(lbs)
    for i, lb in enumerate(np.asarray(lbs)):
        ref = so.least_squares(lambda x: x[0] + x[1] * np.exp(x[2] * T) - Y, X0, bounds=(lb, np.inf), method="dogbox")
        np.testing.assert_allclose(batched.x[i], ref.x, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(batched.active_mask[i], ref.active_mask)


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_float32(method):
    res = least_squares(_expfit, X0.astype(np.float32), args=(T.astype(np.float32), Y.astype(np.float32)), method=method)
    ref = least_squares(_expfit, X0, args=(T, Y), method=method)
    assert res.x.dtype == np.float32 and res.fun.dtype == np.float32
    assert res.success
    np.testing.assert_allclose(res.x, ref.x, rtol=2e-3, atol=2e-4)
    assert res.nfev < 50


# --------------------------------------------------------------------------------------
# SciPy's validation, callback and verbose behaviour
# --------------------------------------------------------------------------------------
def _rosen(xp):
    return lambda x: xp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def _underdetermined(xp):
    return lambda x: xp.stack([x[0] + x[1] + x[2]])


LM_BAD = [
    dict(bounds=([0.0, 0.0], [5.0, 5.0])),
    dict(bounds=(-1.0, np.inf)),
    dict(loss="soft_l1"),
    dict(ftol=1e-20),
    dict(xtol=None),
    dict(gtol=0.0),
    dict(jac_sparsity=[[1, 1], [1, 1]]),
    dict(fun=_underdetermined, x0=[1.0, 2.0, 3.0]),
]


@pytest.mark.parametrize("kw", LM_BAD, ids=[str({k: getattr(v, "__name__", v) for k, v in kw.items()}) for kw in LM_BAD])
def test_lm_bad_input_matches_scipy(kw):
    kw = dict(kw, method="lm")
    make = kw.pop("fun", _rosen)
    x0 = kw.pop("x0", [2.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            so.least_squares(make(np), x0, **kw)
        with pytest.raises(type(expected.value)) as got:
            least_squares(make(jnp), x0, **kw)
    assert str(got.value) == str(expected.value)


def test_lm_callback_warns_and_is_ignored():
    calls = []
    with pytest.warns(UserWarning, match="Callback function specified, but not supported with `lm` method."):
        res = least_squares(_rosen(jnp), [2.0, 2.0], method="lm", callback=lambda x: calls.append(x))
    assert res.success and calls == []


def test_lm_max_nfev_and_njev():
    ref = so.least_squares(_rosen(np), [-1.2, 1.0], method="lm", max_nfev=5)
    res = least_squares(_rosen(jnp), [-1.2, 1.0], method="lm", max_nfev=5)
    assert res.status == ref.status == 0 and res.nfev == ref.nfev
    assert res.njev is None and ref.njev is None
    jac = lambda x: np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])  # noqa: E731
    ref = so.least_squares(_rosen(np), [-1.2, 1.0], jac=jac, method="lm")
    res = least_squares(_rosen(np), [-1.2, 1.0], jac=jac, method="lm")
    assert (res.nfev, res.njev, res.status) == (ref.nfev, ref.njev, ref.status)
    np.testing.assert_allclose(res.grad, ref.grad, atol=1e-12)
    assert res.optimality == pytest.approx(ref.optimality, abs=1e-12)


def test_dogbox_callback_like_scipy():
    problem = helpers.get_problem("rosenbrock_bounded_doc")
    seen_ref, seen = [], []
    so.least_squares(problem.make(np), problem.x0_array(), jac=helpers.jax_jacobian_numpy(problem),
                     bounds=problem.bounds, method="dogbox", callback=lambda intermediate_result: seen_ref.append(
                         intermediate_result.nit))
    least_squares(problem.make(jnp), problem.x0_array(), bounds=problem.bounds, method="dogbox",
                  callback=lambda intermediate_result: seen.append(intermediate_result.nit))
    assert seen == seen_ref

    def stop(x):
        raise StopIteration

    res = least_squares(problem.make(jnp), problem.x0_array(), bounds=problem.bounds, method="dogbox", callback=stop)
    assert res.status == -2 and res.nfev == 2


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_verbose_output_like_scipy(method, capsys):
    least_squares(_rosen(jnp), [2.0, 2.0], method=method, verbose=2)
    jax.effects_barrier()
    out = capsys.readouterr().out
    so.least_squares(_rosen(np), [2.0, 2.0], jac=lambda x: np.array([[-20 * x[0], 10.0], [-1.0, 0.0]]),
                     method=method, verbose=2)
    ref = capsys.readouterr().out
    # Same table and message; the last digits of a zero cost differ (autodiff vs analytic).
    assert len(out.splitlines()) == len(ref.splitlines())
    assert out.splitlines()[-2] == ref.splitlines()[-2]
    assert out.splitlines()[-1].split(", final")[0] == ref.splitlines()[-1].split(", final")[0]


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_no_retrace_on_new_data(method):
    calls = []

    def fun(x, t, y):
        calls.append(1)  # runs only while JAX traces
        return x[0] + x[1] * jnp.exp(x[2] * t) - y

    least_squares(fun, X0, args=(T, Y), method=method)
    n_traced = len(calls)
    for k in range(3):
        res = least_squares(fun, X0 + 0.1 * k, args=(T, Y * (1 + 0.1 * k)), method=method)
        assert res.success
    assert len(calls) == n_traced > 0, "new data of the same shapes must not retrace"


@pytest.mark.parametrize("method", ["dogbox", "lm"])
def test_nan_mid_solve_like_scipy(method):
    """A non-finite trial is a failed step (dogbox: radius shrinks; lm: MINPACK's rules)."""

    def fun(xp):
        def f(x):
            bad = x[0] > 1.5
            return xp.where(bad, xp.nan, 1.0) * xp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])

        return f

    jac = lambda xp: lambda x: xp.stack([xp.stack([-20 * x[0], 10 + 0 * x[0]]), xp.stack([-1 + 0 * x[0], 0 * x[0]])])  # noqa: E731
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = so.least_squares(fun(np), [-1.2, 1.0], jac=jac(np), method=method)
    res = least_squares(fun(jnp), [-1.2, 1.0], jac=jac(jnp), method=method)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6, atol=1e-8)
    assert res.status == ref.status
    assert abs(res.nfev - ref.nfev) <= 2, (res.nfev, ref.nfev)


def test_traced_invalid_inputs_report_status():
    res = jax.jit(lambda x0: least_squares(_rosen(jnp), x0, bounds=(0, 1), method="dogbox"))(jnp.array([2.0, 2.0]))
    assert int(res.status) == -5 and not bool(res.success)
    res = jax.jit(lambda x0: least_squares(lambda x: jnp.log(x), x0, method="lm"))(jnp.array([-1.0, 1.0]))
    assert int(res.status) == -4


@pytest.mark.parametrize("method,bounds", [("dogbox", (-np.inf, np.inf)), ("dogbox", ([0.6, -np.inf, -np.inf], np.inf)),
                                           ("lm", (-np.inf, np.inf))])
def test_implicit_derivative_matches_trf(method, bounds):
    """The derivative of the solution with respect to the data depends only on the minimum
    and its active set, so every method gives trf's (which is checked against re-solves)."""
    tight = dict(xtol=1e-13, ftol=1e-13, gtol=1e-13)

    def solve_x(y, method):
        kw = dict(bounds=bounds) if method != "lm" else {}
        return least_squares(_expfit, jnp.asarray(X0), args=(T, y), method=method, **tight, **kw).x

    J = np.asarray(jax.jacrev(solve_x)(jnp.asarray(Y), method))
    J_trf = np.asarray(jax.jacrev(solve_x)(jnp.asarray(Y), "trf"))
    np.testing.assert_allclose(J, J_trf, rtol=1e-6, atol=1e-9)
    if bounds[0] != -np.inf:
        assert np.all(J[0] == 0)  # held at its bound


def test_lm_rejects_sparse_jacobian_like_scipy():
    import scipy.sparse as sp

    def fun(x):
        return np.array([x[0] - 1.0, x[1] - 2.0, x[0] * x[1]])

    def jac(x):
        return sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [x[1], x[0]]]))

    with pytest.raises(ValueError) as expected:
        so.least_squares(fun, [0.5, 0.5], jac=jac, method="lm")
    with pytest.raises(ValueError) as got:
        least_squares(fun, [0.5, 0.5], jac=jac, method="lm")
    assert str(got.value) == str(expected.value)
