"""L-BFGS-B against SciPy's, plus the JAX behaviours (jit, vmap, dtypes, caching)."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_lsq as jl
from jaxopt_lsq import _lbfgsb as facade


# --- problems, written once for NumPy and JAX -------------------------------------
def rosen(xp):
    def f(x):
        return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    return f


def regression(xp):
    def f(beta, A, y):
        r = A @ beta - y
        return 0.5 * xp.sum(r * r)
    return f


def coupled_quadratic(xp):
    """Separable pull towards c plus a chain coupling: many bounds end up active."""
    def f(x, c):
        return 0.5 * xp.sum((x - c) ** 2) + 0.25 * xp.sum((x[1:] - x[:-1]) ** 2)
    return f


def corner(xp):
    def f(x):
        return xp.sum((x - 3.0) ** 2 * (1.0 + xp.arange(x.shape[0])))
    return f


# One function object per problem: the compiled solve is cached on the function, so
# tests that solve a problem with equal settings (size, bounds or not, options) share it.
ROSEN = rosen(jnp)
COUPLED = coupled_quadratic(jnp)


@functools.lru_cache(maxsize=None)
def _jitted_grad(fjax):
    return jax.jit(jax.grad(fjax))


def scipy_solve(fnp, fjax, x0, args=(), **kw):
    # The exact gradient, jitted: SciPy calls it once per evaluation (hundreds of times
    # for Rosenbrock-100), and op by op each call cost milliseconds.
    grad = _jitted_grad(fjax)

    def fg(x, *a):
        return fnp(x, *a), np.asarray(grad(jnp.asarray(x), *a))

    return so.minimize(fg, np.asarray(x0, float), args=args, jac=True,
                       method="L-BFGS-B", **kw)


def assert_close_to_scipy(res, ref, xtol=1e-4, nit_factor=1.5, fatol=1e-7):
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=xtol, rtol=xtol)
    np.testing.assert_allclose(float(res.fun), ref.fun, atol=fatol, rtol=1e-5)
    assert int(res.status) == ref.status, (res.message, ref.message)
    assert int(res.nit) <= nit_factor * ref.nit + 3
    assert res.message == ref.message or int(res.status) == 0


# --- comparisons with SciPy -------------------------------------------------------
@pytest.mark.parametrize("n", [2, 10, 100])
@pytest.mark.parametrize("bounded", [False, True])
def test_rosenbrock_matches_scipy(n, bounded):
    x0 = np.linspace(-1.2, 1.0, n)
    bounds = [(-1.5, 0.8)] * n if bounded else None
    res = jl.minimize(ROSEN, x0, bounds=bounds)
    ref = scipy_solve(rosen(np), ROSEN, x0, bounds=bounds)
    # Unbounded Rosenbrock-100 stops on ftol in a long valley: compare f loosely.
    loose = n == 100 and not bounded
    assert_close_to_scipy(res, ref, xtol=1e-3 if loose else 1e-4,
                          fatol=1e-6 if loose else 1e-7)
    assert res.success


@pytest.mark.parametrize("bounded", [False, True])
def test_regression_matches_scipy(bounded):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 8))
    y = A @ np.linspace(-2, 2, 8) + 0.1 * rng.standard_normal(60)
    bounds = [(-1.0, 1.0)] * 8 if bounded else None
    x0 = np.zeros(8)
    res = jl.minimize(regression(jnp), x0, args=(A, y), bounds=bounds)
    ref = scipy_solve(regression(np), regression(jnp), x0, args=(A, y), bounds=bounds)
    assert_close_to_scipy(res, ref, xtol=1e-5)


def test_many_active_bounds_matches_scipy():
    rng = np.random.default_rng(1)
    n = 200
    c = rng.uniform(-1.5, 1.5, n)
    bounds = [(-0.5, 0.5)] * n
    x0 = np.zeros(n)
    res = jl.minimize(COUPLED, x0, args=(c,), bounds=bounds)
    ref = scipy_solve(coupled_quadratic(np), COUPLED, x0, args=(c,), bounds=bounds)
    assert_close_to_scipy(res, ref, xtol=1e-5)
    active = np.isclose(np.abs(np.asarray(res.x)), 0.5)
    assert active.sum() > n // 4


def test_optimum_at_corner():
    n = 6
    bounds = [(-1.0, 1.0)] * n
    res = jl.minimize(corner(jnp), np.zeros(n), bounds=bounds)
    ref = scipy_solve(corner(np), corner(jnp), np.zeros(n), bounds=bounds)
    np.testing.assert_array_equal(np.asarray(res.x), np.ones(n))
    assert_close_to_scipy(res, ref)
    assert res.message == "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL"


def test_large_n_code_paths_agree_with_small_n_paths():
    """Sort-free chunked Cauchy point + incremental Gram give the same iterates.

    (n = 200 and default settings, as in test_many_active_bounds_matches_scipy: the
    default solve is compiled once for both tests.)"""
    rng = np.random.default_rng(2)
    n = 200
    c = rng.uniform(-1.5, 1.5, n)
    bounds = [(-0.5, 0.5)] * n
    x0 = rng.uniform(-0.5, 0.5, n)
    f = COUPLED
    a = facade._minimize_lbfgsb(f, x0, args=(c,), jac=None, bounds=bounds,
                                _check_bounds=facade._check_minimize_bounds)
    b = facade._minimize_lbfgsb(f, x0, args=(c,), jac=None, bounds=bounds,
                                _check_bounds=facade._check_minimize_bounds,
                                _gcp_chunk=5, _gram_update_size=7)
    np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), atol=1e-8)
    assert int(a.nit) == int(b.nit)


def test_large_problem_matches_scipy():
    """n above ``LARGE_N``: sort-free Cauchy point, staged Gram updates, unpacked I/O."""
    n = facade.LARGE_N + 904
    rng = np.random.default_rng(5)
    c = rng.uniform(-1.5, 1.5, n)
    bounds = [(-0.5, 0.5)] * n
    res = jl.minimize(COUPLED, np.zeros(n), args=(c,), bounds=bounds)
    ref = scipy_solve(coupled_quadratic(np), COUPLED, np.zeros(n), args=(c,),
                      bounds=bounds)
    assert_close_to_scipy(res, ref)
    assert np.all(np.abs(np.asarray(res.x)) <= 0.5)
    # The pairs come back as (m, n) arrays, newest last: H satisfies its secant equation.
    sk, yk = np.asarray(res.hess_inv.sk), np.asarray(res.hess_inv.yk)
    assert sk.shape == yk.shape == (10, n)
    np.testing.assert_allclose(np.asarray(res.hess_inv.matvec(yk[-1])), sk[-1],
                               atol=1e-8 * np.abs(sk[-1]).max())


@pytest.mark.parametrize("maxiter", [4, 10, 13])
def test_large_eager_pairs_match_traced_pairs(maxiter):
    """Above ``LARGE_N`` an eager solve orders the correction pairs on the host (a view
    of the memory when the slots are in time order): the same ``sk``/``yk`` as the
    traced solve, before the memory is full, when full, and after it wrapped around."""
    n = facade.LARGE_N + 904
    x0 = np.linspace(-1.2, 1.0, n)
    bounds = [(-1.5, 0.8)] * n
    opts = dict(maxiter=maxiter)
    res = jl.minimize(rosen(jnp), x0, bounds=bounds, options=opts)
    traced = jax.jit(lambda x: jl.minimize(rosen(jnp), x, bounds=bounds, options=opts))(
        jnp.asarray(x0))
    assert int(res.nit) == int(traced.nit) == maxiter
    np.testing.assert_array_equal(np.asarray(res.hess_inv.sk), np.asarray(traced.hess_inv.sk))
    np.testing.assert_array_equal(np.asarray(res.hess_inv.yk), np.asarray(traced.hess_inv.yk))


def test_limits_and_messages_match_scipy():
    x0 = np.zeros(10)
    for opts in [dict(maxiter=3), dict(maxfun=5)]:
        res = jl.minimize(rosen(jnp), x0, options=opts)
        ref = scipy_solve(rosen(np), ROSEN, x0, options=opts)
        assert res.message == ref.message
        assert int(res.status) == ref.status == 1
        assert int(res.nit) == ref.nit and int(res.nfev) == ref.nfev
        assert not res.success


# --- fmin_l_bfgs_b -----------------------------------------------------------------
def test_fmin_l_bfgs_b_returns_scipy_triple():
    f = rosen(jnp)

    def fg(x):
        return f(x), jax.grad(f)(x)

    x, fx, d = jl.fmin_l_bfgs_b(fg, np.zeros(4), bounds=[(None, 0.5), (-np.inf, None),
                                                         (0, 1), (0, 1)])
    xs, fs, ds = so.fmin_l_bfgs_b(
        lambda x: (float(f(x)), np.asarray(jax.grad(f)(x))), np.zeros(4),
        bounds=[(None, 0.5), (-np.inf, None), (0, 1), (0, 1)])
    assert set(d) == set(ds)
    np.testing.assert_allclose(np.asarray(x), xs, atol=1e-5)
    assert int(d["warnflag"]) == ds["warnflag"] and d["task"] == ds["task"]
    assert int(d["nit"]) == ds["nit"] and int(d["funcalls"]) == ds["funcalls"]
    # separate fprime
    x2, _, _ = jl.fmin_l_bfgs_b(f, np.zeros(4), fprime=jax.grad(f))
    x3, _, _ = so.fmin_l_bfgs_b(lambda x: float(f(x)), np.zeros(4),
                                fprime=lambda x: np.asarray(jax.grad(f)(x)))
    np.testing.assert_allclose(np.asarray(x2), x3, atol=1e-5)


def test_approx_grad_counts_like_scipy():
    def f(x):
        return jnp.sum((x - 2.0) ** 2) + x[0] * x[1]

    def fnp(x):
        return float(np.sum((x - 2.0) ** 2) + x[0] * x[1])

    bounds = [(0, 1), (0, 5), (None, None)]
    x, fx, d = jl.fmin_l_bfgs_b(f, np.ones(3), approx_grad=True, bounds=bounds)
    xs, fs, ds = so.fmin_l_bfgs_b(fnp, np.ones(3), approx_grad=True, bounds=bounds)
    np.testing.assert_allclose(np.asarray(x), xs, atol=1e-6)
    assert int(d["funcalls"]) == ds["funcalls"] and int(d["nit"]) == ds["nit"]
    # the same with a plain NumPy function run on the host
    x, fx, d = jl.fmin_l_bfgs_b(fnp, np.ones(3), approx_grad=True, bounds=bounds)
    np.testing.assert_allclose(np.asarray(x), xs, atol=1e-6)
    assert int(d["funcalls"]) == ds["funcalls"]


@pytest.mark.parametrize("method", ["2-point", "3-point"])
def test_fd_schemes_match_scipy(method):
    f = rosen(jnp)
    res = jl.minimize(f, np.array([-1.2, 1.0]), jac=method, bounds=[(-2, 2), (-2, 2)])
    ref = so.minimize(rosen(np), np.array([-1.2, 1.0]), jac=method, method="L-BFGS-B",
                      bounds=[(-2, 2), (-2, 2)])
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-4)
    assert res.success and ref.success


def test_numpy_function_runs_through_callback():
    calls = []

    def fg(x, a):
        calls.append(1)
        x = np.asarray(x)
        if x.dtype == object:  # pragma: no cover
            raise TypeError
        return float(np.sum((x - a) ** 2)), 2 * (x - a)

    def fg_numpy_only(x, a):
        x = np.array(x)  # not traceable
        return fg(x, a)

    res = jl.minimize(fg_numpy_only, np.zeros(3), args=(np.arange(3.0),), jac=True)
    np.testing.assert_allclose(np.asarray(res.x), np.arange(3.0), atol=1e-6)
    assert res.success and len(calls) == int(res.nfev)


# --- JAX behaviours -------------------------------------------------------------------
def test_float32():
    x0 = np.zeros(5, np.float32)
    res = jl.minimize(rosen(jnp), x0, bounds=[(-2, 0.9)] * 5)
    assert res.x.dtype == jnp.float32 and res.fun.dtype == jnp.float32
    ref = scipy_solve(rosen(np), ROSEN, x0.astype(float), bounds=[(-2, 0.9)] * 5)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=2e-3)
    assert int(res.status) in (0, 2)


def test_jit_and_vmap_over_x0_and_data():
    f = regression(jnp)
    rng = np.random.default_rng(3)
    A = jnp.asarray(rng.standard_normal((30, 4)))
    ys = jnp.asarray(rng.standard_normal((5, 30)))

    def solve(x0, y):
        r = jl.minimize(f, x0, args=(A, y), bounds=[(-0.3, 0.3)] * 4)
        return r.x, r.nit, r.status

    xs, nits, st = jax.jit(jax.vmap(solve))(jnp.zeros((5, 4)), ys)
    for i in range(5):
        ref = scipy_solve(regression(np), f, np.zeros(4), args=(np.asarray(A),
                          np.asarray(ys[i])), bounds=[(-0.3, 0.3)] * 4)
        np.testing.assert_allclose(np.asarray(xs[i]), ref.x, atol=1e-6)
        assert int(st[i]) == 0
    x0s = jnp.asarray(rng.uniform(-0.3, 0.3, (4, 4)))
    xs2, _, _ = jax.vmap(lambda x0: solve(x0, ys[0]))(x0s)
    np.testing.assert_allclose(np.asarray(xs2), np.repeat(np.asarray(xs[:1]), 4, 0),
                               atol=1e-6)


def test_result_is_pytree_out_of_jit():
    res = jax.jit(lambda x0: jl.minimize(rosen(jnp), x0))(jnp.zeros(3))
    assert res.success and res.message.startswith("CONVERGENCE")
    h = res.hess_inv
    assert h.todense().shape == (3, 3)


def test_no_retrace_on_new_data():
    traces = []

    def f(beta, A, y):
        traces.append(1)
        return 0.5 * jnp.sum((A @ beta - y) ** 2)

    rng = np.random.default_rng(4)
    A = rng.standard_normal((20, 3))
    for k in range(3):
        y = rng.standard_normal(20)
        jl.minimize(f, np.zeros(3), args=(A, y), bounds=[(-1, 1)] * 3)
        if k == 0:
            n_first = len(traces)
    assert len(traces) == n_first


def test_x0_not_mutated_and_clipped_into_bounds():
    x0 = np.array([5.0, 5.0])
    keep = x0.copy()
    res = jl.minimize(lambda x: jnp.sum(x**2), x0, bounds=[(1, 2), (None, 3)])
    np.testing.assert_array_equal(x0, keep)
    np.testing.assert_allclose(np.asarray(res.x), [1.0, 0.0], atol=1e-8)


def test_iterates_stay_in_bounds():
    seen = []

    def f(x):
        return jnp.sum(jnp.log(x) ** 2 + (x - 3.0) ** 2)  # NaN below zero

    res = jl.minimize(f, np.full(4, 0.5), bounds=[(1e-3, 2.0)] * 4,
                      callback=lambda xk: seen.append(np.asarray(xk)))
    assert res.success
    assert all(np.all((s >= 1e-3) & (s <= 2.0)) for s in seen) and seen


def test_nan_mid_solve_terminates():
    def f(x):
        return jnp.where(x[0] > 0.5, jnp.nan, rosen(jnp)(x))

    res = jl.minimize(f, np.zeros(5))
    ref = so.minimize(lambda x: np.nan if x[0] > 0.5 else rosen(np)(x), np.zeros(5),
                      jac=lambda x: np.asarray(jax.grad(rosen(jnp))(x)) if x[0] <= 0.5
                      else np.full(5, np.nan), method="L-BFGS-B")
    assert int(res.status) == ref.status == 2
    assert np.isfinite(float(res.fun)) and float(res.x[0]) <= 0.5
    assert "not finite" in res.message or res.message == "ABNORMAL: "


def test_nonfinite_at_start():
    res = jl.minimize(lambda x: jnp.sum(jnp.log(x)), -np.ones(2))
    assert int(res.status) == 2 and "initial point" in res.message


def test_hess_inv_matches_scipy_operator():
    from scipy.optimize import LbfgsInvHessProduct as SciPyOp

    res = jl.minimize(ROSEN, np.zeros(4), options=dict(maxcor=3, maxiter=2))
    h = res.hess_inv
    nc = int(h.n_corrs)
    ref = SciPyOp(np.asarray(h.sk)[:nc], np.asarray(h.yk)[:nc])
    v = np.arange(4.0)
    np.testing.assert_allclose(np.asarray(h.matvec(v)), ref.matvec(v), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(h.todense()), ref.todense(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(h.dot(v)), ref.dot(v), rtol=1e-10)


# --- bad input: SciPy's exceptions and messages -------------------------------------
def _error(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fn()
    except Exception as e:  # noqa: BLE001
        # By name: warnings raised as errors are jaxopt_lsq.OptimizeWarning on our side,
        # scipy.optimize.OptimizeWarning on SciPy's (the other types are builtins).
        return type(e).__name__, str(e)
    return None


def fg_np(x):
    return float(np.sum(x**2)), 2 * x


@pytest.mark.parametrize(
    "kw",
    [
        dict(bounds=[(0, 1)] * 2),
        dict(bounds=[(1, 0)] * 3),
        dict(bounds=[(0, 1, 2)] * 3),
        dict(options=dict(maxls=0)),
        dict(options=dict(foo=1)),
    ],
)
def test_minimize_bad_input_like_scipy(kw):
    ours = _error(lambda: jl.minimize(fg_np, np.zeros(3), jac=True, **kw))
    theirs = _error(lambda: so.minimize(fg_np, np.zeros(3), jac=True, method="L-BFGS-B",
                                        **kw))
    assert ours == theirs


@pytest.mark.parametrize("kw", [dict(bounds=[(0, 1)] * 2), dict(bounds=[(1, 0)] * 3),
                                dict(maxls=-1)])
def test_fmin_bad_input_like_scipy(kw):
    ours = _error(lambda: jl.fmin_l_bfgs_b(fg_np, np.zeros(3), **kw))
    theirs = _error(lambda: so.fmin_l_bfgs_b(fg_np, np.zeros(3), **kw))
    assert ours == theirs


def test_x0_two_dimensional_and_method():
    assert _error(lambda: jl.minimize(fg_np, np.zeros((2, 2)), jac=True)) == _error(
        lambda: so.minimize(fg_np, np.zeros((2, 2)), jac=True, method="L-BFGS-B"))
    with pytest.raises(ValueError, match="supports only method='L-BFGS-B'"):
        jl.minimize(fg_np, np.zeros(2), method="BFGS")


def test_deprecated_iprint_disp_warn_like_scipy():
    with pytest.warns(DeprecationWarning) as ours:
        jl.fmin_l_bfgs_b(fg_np, np.ones(2), iprint=1, disp=1)
    with pytest.warns(DeprecationWarning) as theirs:
        so.fmin_l_bfgs_b(fg_np, np.ones(2), iprint=1, disp=1)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]



def test_options_workers_accepted_and_unknown_options_warn_like_scipy():
    """SciPy 1.17's L-BFGS-B takes ``workers``; an unknown option is an OptimizeWarning."""
    f = rosen(jnp)
    for opts in (dict(workers=None), dict(workers=map)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = jl.minimize(f, np.full(2, 1.1), method="L-BFGS-B", options=opts)
            ref = so.minimize(rosen(np), np.full(2, 1.1), jac=lambda x: np.asarray(jax.grad(f)(x)),
                              method="L-BFGS-B", options=opts)
        assert (res.status, res.nit) == (ref.status, ref.nit)
    with pytest.warns(jl.OptimizeWarning, match="Unknown solver options: wrkers") as ours:
        jl.minimize(f, np.full(2, 1.1), method="L-BFGS-B", options=dict(wrkers=2))
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: wrkers") as theirs:
        so.minimize(rosen(np), np.full(2, 1.1), method="L-BFGS-B", options=dict(wrkers=2))
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]

# --- shared host/FD machinery and the eager facade ------------------------------------
@pytest.mark.parametrize("method", ["2-point", "3-point", "cs"])
def test_numpy_function_fd_schemes_match_scipy(method):
    """A NumPy objective: f and its FD gradient in one host callback, SciPy's counts."""
    def f(x):
        x = np.asarray(x)
        return np.sum((x - 0.3) ** 2 * np.arange(1, x.size + 1)) + x[0] * x[1] ** 3

    bounds = [(-1, 1), (0.1, 2), (-2, 0.2)]
    x0 = np.array([0.5, 0.5, 0.0])
    res = jl.minimize(f, x0, jac=method, bounds=bounds)
    ref = so.minimize(f, x0, jac=method, method="L-BFGS-B", bounds=bounds)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert res.nit == ref.nit and res.nfev == ref.nfev


def test_fmin_epsilon_is_an_absolute_step():
    def f(x):
        return float(np.sum(np.cosh(np.asarray(x) - 1.0)))

    for eps in (1e-8, 1e-3):
        x, fx, d = jl.fmin_l_bfgs_b(f, np.zeros(2), approx_grad=True, epsilon=eps)
        xs, fs, ds = so.fmin_l_bfgs_b(f, np.zeros(2), approx_grad=True, epsilon=eps)
        np.testing.assert_allclose(x, xs, atol=1e-7)
        np.testing.assert_allclose(d["grad"], ds["grad"], rtol=1e-6, atol=1e-9)
        assert d["funcalls"] == ds["funcalls"]


def test_eager_result_types_like_scipy():
    # n = 2 with bounds: the configuration of test_rosenbrock_matches_scipy[True-2]
    # (bounds are data), compiled once for both.
    res = jl.minimize(ROSEN, np.zeros(2), bounds=[(-1, 0.5)] * 2)
    ref = scipy_solve(rosen(np), ROSEN, np.zeros(2), bounds=[(-1, 0.5)] * 2)
    assert isinstance(res.x, np.ndarray) and isinstance(res.jac, np.ndarray)
    for k in ("nit", "nfev", "njev", "status"):
        assert type(res[k]) is int and res[k] == ref[k]
    assert isinstance(res.fun, np.floating) and isinstance(res.success, (bool, np.bool_))
    assert res.message == ref.message


def test_callback_and_new_data_reuse_the_compiled_solve():
    seen = []
    cb = seen.append
    f = regression(jnp)
    rng = np.random.default_rng(5)
    A = rng.standard_normal((12, 3))
    jl.minimize(f, np.zeros(3), args=(A, rng.standard_normal(12)), callback=cb)
    misses = facade._compiled_solve.cache_info().misses
    jl.minimize(f, np.zeros(3), args=(A, rng.standard_normal(12)), callback=cb)
    assert facade._compiled_solve.cache_info().misses == misses
    assert seen


# --- what SciPy's minimize adds around L-BFGS-B (found by SciPy's own test suite) -----
def _stop_at(k, by_name):
    calls = []

    def cb_x(xk):
        calls.append(1)
        if len(calls) == k:
            raise StopIteration

    def cb_res(intermediate_result):
        assert isinstance(intermediate_result, so.OptimizeResult)
        cb_x(intermediate_result.x)

    return cb_res if by_name else cb_x


@pytest.mark.parametrize("by_name", [False, True])
def test_callback_stop_iteration_like_scipy(by_name):
    f = ROSEN  # `limited` below is compiled once for both parametrisations
    res = jl.minimize(f, np.full(5, 1.1), callback=_stop_at(4, by_name))
    ref = so.minimize(rosen(np), np.full(5, 1.1), jac=lambda x: np.asarray(jax.grad(f)(x)),
                      method="L-BFGS-B", callback=_stop_at(4, by_name))
    assert (res.status, res.message, res.nit, res.success) == (
        ref.status, ref.message, ref.nit, ref.success) == (
        99, "`callback` raised `StopIteration`.", 4, False)
    limited = jl.minimize(f, np.full(5, 1.1), options=dict(maxiter=4))
    np.testing.assert_array_equal(res.x, limited.x)
    if not by_name:  # fmin_l_bfgs_b's callback takes x only: the same check for both
        x, fx, d = jl.fmin_l_bfgs_b(f, np.full(5, 1.1), fprime=jax.grad(f),
                                    callback=_stop_at(4, False))
        xs, fs, ds = so.fmin_l_bfgs_b(rosen(np), np.full(5, 1.1),
                                      fprime=lambda x: np.asarray(jax.grad(f)(x)),
                                      callback=_stop_at(4, False))
        assert (d["warnflag"], d["task"], d["nit"]) == (ds["warnflag"], ds["task"], ds["nit"])
    out = jax.jit(lambda x0: jl.minimize(f, x0, callback=_stop_at(4, by_name)))(
        jnp.full(5, 1.1))
    assert int(out.status) == 99 and int(out.nit) == 4


def test_callback_exception_propagates_like_scipy():
    def cb(xk):
        raise KeyError("from the callback")

    for solve in (lambda: jl.minimize(rosen(jnp), np.zeros(3), callback=cb),
                  lambda: so.minimize(rosen(np), np.zeros(3), method="L-BFGS-B",
                                      callback=cb)):
        with pytest.raises(KeyError, match="from the callback"):
            solve()


@pytest.mark.parametrize("jac", [None, "2-point", "grad"])
def test_variables_fixed_by_equal_bounds_like_scipy(jac):
    """SciPy removes variables with lb == ub when it differentiates numerically."""
    lb = np.array([0.0, 2.0, -1.0, -1.0])
    ub = np.array([3.0, 2.0, 2.0, -1.0])
    x0 = np.array([0.6, 0.4, 0.3, 0.2])
    grad = (lambda x: np.asarray(jax.grad(rosen(jnp))(x))) if jac == "grad" else jac
    def rosen_host(x):  # float() of a tracer fails: runs on the host, like SciPy's
        return float(rosen(np)(np.asarray(x)))

    res = jl.minimize(rosen_host, x0, jac=grad, bounds=so.Bounds(lb, ub))
    ref = so.minimize(rosen(np), x0, jac=grad, method="L-BFGS-B", bounds=so.Bounds(lb, ub))
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(res.jac), np.isnan(ref.jac))
    assert (res.hess_inv is None) == (ref.hess_inv is None)
    assert res.nfev == ref.nfev and res.nit == ref.nit and res.message == ref.message
    # traced: the same result from inside jit. With jac=None and jac="grad" the traced
    # solve is the same program (autodiff): it runs once, against SciPy with the exact
    # gradient.
    if jac is not None:
        out = jax.jit(lambda x0: jl.minimize(ROSEN, x0, jac=grad if jac != "grad" else None,
                                             bounds=so.Bounds(lb, ub)))(jnp.asarray(x0))
        np.testing.assert_allclose(np.asarray(out.x), ref.x, rtol=1e-5)


def test_all_variables_fixed_like_scipy():
    def f(x, p=1.0):
        return float(np.linalg.norm(x)) + p

    res = jl.minimize(f, (1.0, 3.0), bounds=[(1, 1), (2, 2)], args=(2.0,))
    ref = so.minimize(f, (1.0, 3.0), bounds=[(1, 1), (2, 2)], args=(2.0,), method="L-BFGS-B")
    assert (res.message, res.success, res.nfev, res.njev) == (
        ref.message, ref.success, ref.nfev, ref.njev)
    np.testing.assert_allclose(res.fun, ref.fun)
    np.testing.assert_array_equal(res.x, ref.x)


def test_hess_inv_is_callable_and_has_rho_like_scipy():
    # The solve of test_hess_inv_matches_scipy_operator (compiled once for both).
    res = jl.minimize(ROSEN, np.zeros(4), options=dict(maxcor=3, maxiter=2))
    h = res.hess_inv
    nc = int(h.n_corrs)
    assert nc == 2
    ref = so.LbfgsInvHessProduct(np.asarray(h.sk)[:nc], np.asarray(h.yk)[:nc])
    v = np.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(np.asarray(h(v)), ref(v), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(h.rho)[:nc], ref.rho, rtol=1e-12)


def test_fixed_variables_callback_sees_every_variable():
    seen = []

    def cb(intermediate_result):
        seen.append(np.array(intermediate_result.x))

    bounds = so.Bounds([0.0, 2.0, -1.0], [3.0, 2.0, 2.0])
    res = jl.minimize(rosen(np), np.array([0.5, 0.4, 0.3]), jac="2-point", bounds=bounds,
                      callback=cb)
    assert seen and all(s.shape == (3,) and s[1] == 2.0 for s in seen)
    np.testing.assert_array_equal(seen[-1], res.x)
