"""least_squares: SciPy's interface, validation, JAX transformations and edge cases."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_lsq
from jaxopt_lsq import least_squares


def rosen(xp):
    def fun(x):
        return xp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    return fun


def rosen_jac(xp):
    def jac(x):
        return xp.stack([xp.stack([-20 * x[0], 10 * xp.ones_like(x[0])]), xp.stack([-xp.ones_like(x[0]), 0 * x[0]])])

    return jac


def expfit(xp):
    def fun(x, t, y):
        return x[0] + x[1] * xp.exp(x[2] * t) - y

    return fun


# One function object per problem: compiled solves are cached on the function, so the
# tests' solves with equal settings (and the loop of single fits in
# test_vmap_over_x0_and_data) compile once.
ROSEN = rosen(jnp)
EXPFIT = expfit(jnp)

T = np.linspace(0, 10, 20)
Y = 0.5 + 2.0 * np.exp(-1.0 * T) + 0.05 * np.random.default_rng(1).standard_normal(20)


# --------------------------------------------------------------------------------------
# Validation: SciPy's exception type and message, before any work.
# --------------------------------------------------------------------------------------
BAD_INPUTS = [
    dict(x0=[[1.0, 2.0]]),
    dict(x0=[1.0 + 1j, 2.0]),
    dict(method="newton"),
    dict(jac="4-point"),
    dict(tr_solver="qr"),
    dict(loss="l3"),
    dict(verbose=3),
    dict(max_nfev=0),
    dict(max_nfev=-5),
    dict(bounds=(0, 1, 2)),
    dict(bounds=([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])),
    dict(bounds=([3.0, 0.0], [1.0, 5.0])),
    dict(bounds=([1.0, 1.0], [1.0, 5.0])),
    dict(bounds=([3.0, 3.0], [4.0, 4.0])),
    dict(x_scale=-1.0),
    dict(x_scale=[1.0, 2.0, 3.0]),
    dict(x_scale="foo"),
    dict(ftol=None, xtol=None, gtol=None),
    dict(ftol=1e-20, xtol=1e-20, gtol=1e-20),
    dict(x0=[np.nan, 1.0]),
]


@pytest.mark.parametrize("kw", BAD_INPUTS, ids=[str(k) for k in BAD_INPUTS])
def test_bad_input_matches_scipy(kw):
    kw = dict(kw)
    x0 = kw.pop("x0", [2.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            so.least_squares(rosen(np), np.asarray(x0) if not isinstance(x0, list) else x0, **kw)
        with pytest.raises(type(expected.value)) as got:
            least_squares(ROSEN, x0, **kw)
    assert str(got.value) == str(expected.value)


def test_residuals_not_finite_at_x0():
    def fun(x):
        return jnp.array([jnp.log(x[0]), x[1]])

    with pytest.raises(ValueError, match="Residuals are not finite in the initial point."):
        least_squares(fun, [-1.0, 1.0])

    def fun_np(x):
        with np.errstate(all="ignore"):
            return np.array([np.log(x[0]), x[1]])

    with pytest.raises(ValueError, match="Residuals are not finite in the initial point."):
        least_squares(fun_np, [-1.0, 1.0])


def test_fun_returning_2d_is_rejected():
    with pytest.raises(ValueError, match="`fun` must return at most 1-d array_like"):
        least_squares(lambda x: jnp.outer(x, x), [1.0, 2.0])
    with pytest.raises(ValueError, match="`fun` must return at most 1-d array_like"):
        least_squares(lambda x: np.outer(np.asarray(x), x) + float(x[0]), [1.0, 2.0])


def test_jac_wrong_shape():
    with pytest.raises(ValueError, match="The return value of `jac` has wrong shape"):
        least_squares(ROSEN, [2.0, 2.0], jac=lambda x: jnp.ones((3, 2)))


def test_tolerance_below_eps_warns_like_scipy():
    with pytest.warns(UserWarning, match="Setting `ftol` below the machine epsilon"):
        least_squares(ROSEN, [2.0, 2.0], ftol=1e-20)


def test_x0_not_modified():
    x0 = np.array([2.0, 2.0])
    x0_copy = x0.copy()
    least_squares(ROSEN, x0, bounds=([-np.inf, 1.5], np.inf))
    np.testing.assert_array_equal(x0, x0_copy)


# --------------------------------------------------------------------------------------
# Results: fields and types as in SciPy.
# --------------------------------------------------------------------------------------
def test_result_fields_and_types():
    res = least_squares(ROSEN, [2.0, 2.0])
    ref = so.least_squares(rosen(np), [2.0, 2.0])
    assert list(res.keys()) == list(ref.keys())
    assert isinstance(res.x, np.ndarray) and isinstance(res.nfev, int) and isinstance(res.status, int)
    assert res.message == ref.message and res.success == ref.success
    assert res.nfev == ref.nfev and res.njev == ref.njev
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8)
    np.testing.assert_allclose(res.jac, ref.jac, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.grad, ref.grad, atol=1e-8)
    assert res["x"] is res.x


def test_result_is_a_pytree():
    res = least_squares(ROSEN, [2.0, 2.0])
    leaves, treedef = jax.tree_util.tree_flatten(res)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back.message == res.message
    assert isinstance(back, jaxopt_lsq.OptimizeResult)


def test_analytic_jacobian_traced_and_numpy():
    ref = so.least_squares(rosen(np), [2.0, 2.0], jac=rosen_jac(np))
    for jac_fn, fun in ((rosen_jac(jnp), ROSEN), (rosen_jac(np), rosen(np))):
        res = least_squares(fun, [2.0, 2.0], jac=jac_fn)
        np.testing.assert_allclose(res.x, ref.x, atol=1e-10)
        assert res.nfev == ref.nfev and res.status == ref.status


@pytest.mark.parametrize("jac", ["2-point", "3-point", "cs"])
@pytest.mark.parametrize("host", [False, True])
def test_finite_differences_match_scipy(jac, host):
    xp = np if host else jnp
    kw = dict(jac=jac, args=(T, Y), bounds=([0, 0, -3], [2, 5, 0]))
    res = least_squares(expfit(xp), [1.0, 1.0, -0.5], **kw)
    ref = so.least_squares(expfit(np), [1.0, 1.0, -0.5], **kw)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-8)
    assert res.status == ref.status
    assert abs(res.nfev - ref.nfev) <= 2


def test_diff_step():
    kw = dict(jac="2-point", diff_step=1e-3, args=(T, Y))
    res = least_squares(EXPFIT, [1.0, 1.0, -0.5], **kw)
    ref = so.least_squares(expfit(np), [1.0, 1.0, -0.5], **kw)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5)
    assert res.nfev == ref.nfev


def test_verbose_prints_scipy_table(capsys):
    least_squares(ROSEN, [2.0, 2.0], jac="2-point", verbose=2)
    ours = capsys.readouterr().out
    so.least_squares(rosen(np), [2.0, 2.0], jac="2-point", verbose=2)
    theirs = capsys.readouterr().out
    assert ours.splitlines()[:4] == theirs.splitlines()[:4]
    assert ours.splitlines()[-2] == theirs.splitlines()[-2]


def test_verbose_works_under_jit(capsys):
    jax.jit(lambda x0: least_squares(ROSEN, x0, verbose=1).x)(jnp.array([2.0, 2.0])).block_until_ready()
    out = capsys.readouterr().out
    assert "`gtol` termination condition is satisfied." in out
    assert "Function evaluations 3" in out


@pytest.mark.parametrize("signature", ["intermediate_result", "x"])
def test_callback_stop_iteration(signature):
    seen = []

    if signature == "intermediate_result":
        def cb(intermediate_result):
            seen.append(intermediate_result.nit)
            if intermediate_result.nit >= 2:
                raise StopIteration
    else:
        def cb(x):
            seen.append(np.array(x))
            if len(seen) >= 2:
                raise StopIteration

    res = least_squares(EXPFIT, [1.0, 1.0, 0.0], args=(T, Y), callback=cb)
    seen.clear()
    ref = so.least_squares(expfit(np), [1.0, 1.0, 0.0], args=(T, Y), callback=cb)
    assert res.status == ref.status == -2
    assert res.message == ref.message
    assert res.nfev == ref.nfev


# --------------------------------------------------------------------------------------
# JAX-native use.
# --------------------------------------------------------------------------------------
def test_jit_matches_eager():
    eager = least_squares(EXPFIT, [1.0, 1.0, -0.5], args=(T, Y))
    jitted = jax.jit(lambda x0, y: least_squares(EXPFIT, x0, args=(T, y)))(jnp.array([1.0, 1.0, -0.5]), Y)
    np.testing.assert_allclose(jitted.x, eager.x, rtol=1e-12)
    assert int(jitted.nfev) == eager.nfev
    assert jitted.message == eager.message  # derived once the status is concrete


def test_no_retrace_on_new_data():
    calls = []

    def fun(x, t, y):
        calls.append(1)  # runs only while JAX traces
        return x[0] + x[1] * jnp.exp(x[2] * t) - y

    least_squares(fun, [1.0, 1.0, -0.5], args=(T, Y))
    n_traced = len(calls)
    for k in range(3):
        res = least_squares(fun, [1.0 + k, 1.0, -0.5], args=(T, Y * (1 + 0.1 * k)), bounds=(-10, 10))
        assert res.success
    after_bounds = len(calls)
    for k in range(3):
        least_squares(fun, [1.0 + k, 1.0, -0.5], args=(T, Y * (1 + 0.2 * k)), bounds=(-10 - k, 10))
    assert len(calls) == after_bounds, "new data/bounds of the same shapes must not retrace"
    assert n_traced > 0


def test_vmap_over_x0_and_data():
    ys = jnp.stack([Y, 2 * Y, Y + 1])
    x0s = jnp.array([[1.0, 1.0, -0.5], [1.0, 2.0, -1.5], [0.5, 1.0, -0.8]])
    batched = jax.vmap(lambda x0, y: least_squares(EXPFIT, x0, args=(T, y)))(x0s, ys)
    for i in range(3):
        one = least_squares(EXPFIT, x0s[i], args=(T, np.asarray(ys[i])))
        np.testing.assert_allclose(batched.x[i], one.x, rtol=1e-10)
        assert int(batched.nfev[i]) == one.nfev
        assert int(batched.status[i]) == one.status
    assert batched.message.shape == (3,)


def test_vmap_over_bounds():
    lbs = jnp.array([[-np.inf, 1.5], [-np.inf, 0.5]])
    res = jax.vmap(lambda lb: least_squares(ROSEN, jnp.array([0.0, 2.0]), bounds=(lb, jnp.inf)))(lbs)
    for i in range(2):
        ref = so.least_squares(rosen(np), [0.0, 2.0], bounds=(np.asarray(lbs[i]), np.inf))
        np.testing.assert_allclose(res.x[i], ref.x, rtol=1e-6)


def test_float32_follows_x0():
    res = least_squares(EXPFIT, np.array([1.0, 1.0, -0.5], np.float32), args=(T.astype(np.float32), Y.astype(np.float32)))
    ref = so.least_squares(expfit(np), [1.0, 1.0, -0.5], args=(T, Y))
    assert res.x.dtype == np.float32 and res.fun.dtype == np.float32
    assert res.success
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-4)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-3)


def test_float32_finite_difference_step_gh12991():
    # A float64-sized FD step in float32 would make the Jacobian zero and stop at nfev=1.
    res = least_squares(EXPFIT, np.array([1.0, 1.0, -0.5], np.float32), jac="2-point",
                        args=(T.astype(np.float32), Y.astype(np.float32)))
    assert res.nfev > 2 and res.success


def test_inside_jit_with_numpy_function():
    f = jax.jit(lambda x0: least_squares(rosen(np), x0).x)
    np.testing.assert_allclose(f(jnp.array([2.0, 2.0])), [1.0, 1.0], atol=1e-6)


def test_traced_invalid_x0_reports_status():
    res = jax.jit(lambda x0: least_squares(ROSEN, x0, bounds=(0, 1)))(jnp.array([2.0, 2.0]))
    assert int(res.status) == -5 and not bool(res.success)
    res = jax.jit(lambda x0: least_squares(lambda x: jnp.log(x), x0))(jnp.array([-1.0, 1.0]))
    assert int(res.status) == -4


# --------------------------------------------------------------------------------------
# Faults mid-solve.
# --------------------------------------------------------------------------------------
def test_nan_mid_solve_shrinks_region_like_scipy():
    def fun(xp):
        def f(x):
            bad = x[0] > 1.5
            return xp.where(bad, xp.nan, 1.0) * xp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])
        return f

    res = least_squares(fun(jnp), [-1.2, 1.0])
    with np.errstate(invalid="ignore"):
        ref = so.least_squares(fun(np), [-1.2, 1.0])
    np.testing.assert_allclose(res.x, ref.x, atol=1e-8)
    assert res.status == ref.status and res.nfev == ref.nfev


def test_always_nan_after_start_is_bounded():
    def fun(x):
        return jnp.where(jnp.all(x == 2.0), 1.0, jnp.nan) * (x - 1)

    res = least_squares(fun, [2.0, 2.0], max_nfev=30)
    np.testing.assert_array_equal(res.x, [2.0, 2.0])
    assert res.nfev <= 30

    def fun_np(x):
        with np.errstate(invalid="ignore"):
            return np.where(np.all(x == 2.0), 1.0, np.nan) * (x - 1)

    # SciPy's own finite differences hit the NaNs and crash in the SVD; with an exact
    # Jacobian SciPy shrinks the region until the step vanishes, as we do.
    ref = so.least_squares(fun_np, [2.0, 2.0], max_nfev=30, jac=lambda x: np.eye(2))
    assert res.status == ref.status and res.nfev == ref.nfev


def test_nonfinite_jacobian_stops_with_status():
    def fun(x):
        return jnp.stack([jnp.sqrt(jnp.abs(x[0])), x[1] - 1.0])

    res = least_squares(fun, [0.0, 0.0])
    assert res.status == -3 and not res.success
    assert "Jacobian is not finite" in res.message


def test_bounds_object_like_scipy():
    bounds = so.Bounds([-np.inf, 1.5], [np.inf, np.inf])
    res = least_squares(ROSEN, [2.0, 2.0], bounds=bounds)
    ref = so.least_squares(rosen(np), [2.0, 2.0], bounds=bounds)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)
    assert res.nfev == ref.nfev


def test_python_float_args_do_not_retrace():
    calls = []

    def fun(x, a):
        calls.append(1)
        return jnp.stack([x[0] - a, 10 * (x[1] - x[0] ** 2)])

    for a in (1.0, 2.0, 3.0):
        res = least_squares(fun, [0.5, 0.5], args=(a,))
        np.testing.assert_allclose(res.x, [a, a * a], rtol=1e-6)
    first = len(calls)
    least_squares(fun, [0.5, 0.5], args=(4.0,))
    assert len(calls) == first


def test_bounded_fewer_residuals_than_variables_follows_scipy():
    # SciPy's rank test counts residuals only: with m < n no Gauss-Newton step is taken,
    # even though the bounded case's augmented matrix has full column rank.
    def fun(xp):
        return lambda x: xp.stack([x[0] + 2 * x[1] - 1.0 + 0.1 * x[2] ** 2])

    kw = dict(bounds=([0, 0, -1], [1, 1, 1]), jac="2-point")
    res = least_squares(fun(jnp), [0.5, 0.5, 0.5], **kw)
    ref = so.least_squares(fun(np), [0.5, 0.5, 0.5], **kw)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8)
    assert res.nfev == ref.nfev and res.status == ref.status


def test_kwargs_with_arrays_match_scipy():
    def fun(xp):
        def f(x, t, *, y, scale=1.0):
            return scale * (x[0] + x[1] * xp.exp(x[2] * t) - y)
        return f

    res = least_squares(fun(jnp), [1.0, 1.0, -0.5], args=(T,), kwargs={"y": Y, "scale": 2.0})
    ref = so.least_squares(fun(np), [1.0, 1.0, -0.5], args=(T,), kwargs={"y": Y, "scale": 2.0})
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)


def test_callback_under_jit():
    seen = []

    def cb(intermediate_result):
        seen.append(float(intermediate_result.cost))

    res = jax.jit(lambda x0: least_squares(EXPFIT, x0, args=(T, Y), callback=cb))(jnp.array([1.0, 1.0, -0.5]))
    assert len(seen) >= 1 and seen == sorted(seen, reverse=True)
    np.testing.assert_allclose(seen[-1], float(res.cost), rtol=1e-12)


@pytest.mark.parametrize("host", [False, True])
def test_one_dimensional_jacobian_is_atleast_2d_like_scipy(host):
    xp = np if host else jnp
    res = least_squares(lambda x: xp.stack([x[0] ** 2 - 2.0]), [1.0], jac=lambda x: xp.stack([2 * x[0]]))
    ref = so.least_squares(lambda x: np.array([x[0] ** 2 - 2.0]), [1.0], jac=lambda x: np.array([2 * x[0]]))
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)
    assert res.nfev == ref.nfev


@pytest.mark.parametrize("bounds", [(-np.inf, np.inf), ([-np.inf, 1.5], np.inf), ([2.0, -np.inf], np.inf)])
def test_numpy_function_call_count_matches_scipy(bounds):
    """A NumPy fun is called exactly as often as SciPy calls it (after the one-time
    traceability probe of a new function object)."""

    class Counted:
        def __init__(self):
            self.calls = 0

        def __call__(self, x):
            self.calls += 1
            return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    ours, theirs = Counted(), Counted()
    least_squares(ours, [2.0, 2.0], bounds=bounds)  # first use: probes traceability once
    ours.calls = 0
    res = least_squares(ours, [2.0, 2.0], bounds=bounds)
    ref = so.least_squares(theirs, [2.0, 2.0], bounds=bounds)
    assert res.nfev == ref.nfev
    assert ours.calls == theirs.calls


def test_exception_in_numpy_function_propagates_like_scipy():
    class Fails:
        calls = 0

        def __call__(self, x):
            self.calls += 1
            if self.calls == 6:
                raise ZeroDivisionError("boom")
            return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    f = Fails()
    with pytest.raises(ZeroDivisionError, match="boom"):
        least_squares(f, [-1.2, 1.0])
    assert f.calls == 6  # stopped calling the function after it raised
    with pytest.raises(ZeroDivisionError, match="boom"):
        so.least_squares(Fails(), [-1.2, 1.0])


def test_exception_in_numpy_function_under_jit_warns_and_is_not_a_success():
    def fun(x):
        if x[0] > 0.5:
            raise ValueError("outside the model's domain")
        return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    with pytest.warns(RuntimeWarning, match="outside the model's domain"):
        res = jax.jit(lambda x0: least_squares(fun, x0))(jnp.array([-1.2, 1.0]))
    # The failing trials count as non-finite residuals (the region shrinks, as in SciPy).
    assert float(res.x[0]) <= 0.5


def test_sparse_jacobian_from_numpy_jac_selects_lsmr_as_scipy():
    import scipy.sparse as sp

    def jac(x):
        return sp.csr_matrix(rosen_jac(np)(x))

    res = least_squares(rosen(np), [2.0, 2.0], jac=jac)
    ref = so.least_squares(rosen(np), [2.0, 2.0], jac=jac)  # SciPy: tr_solver='lsmr' too
    assert sp.issparse(res.jac) and res.nfev == ref.nfev
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)
