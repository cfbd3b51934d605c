"""Reliability: faults in the user's function and determinism, for least_squares and
L-BFGS-B, eagerly, under ``jax.jit`` and under ``jax.vmap``.

Faults (issue #7): a function that returns NaN or inf part way, raises, returns the wrong
shape or dtype, or is discontinuous. Whatever happens: no hang, no crash, no silent
wrong success. Eager calls behave as SciPy does on the same function (the oracle);
under ``jit`` the result reports the fault; under ``vmap`` one bad fit in a batch leaves
the other fits bit for bit as they are without it.

The fault is selected by a *data* argument (``kind``), so eager, jit and vmap runs of
one function share a compiled solve per mode.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_lsq as jl

HEALTHY, NAN, INF, JUMP, RAISES = 0.0, 1.0, 2.0, 3.0, 4.0
FAULTS = {"nan": NAN, "inf": INF, "discontinuous": JUMP}

T = np.linspace(0.0, 3.0, 12)
Y = 0.5 + 2.0 * np.exp(-1.0 * T)
X0 = np.array([1.0, 1.0, -0.5])  # the path to c = -1 crosses c = -0.7


def residuals(xp):
    """a + b exp(c t) - y, with a fault once c < -0.7 (or a jump in a) chosen by ``kind``."""
    def fun(x, t, y, kind):
        r = x[0] + x[1] * xp.exp(x[2] * t) - y
        far = x[2] < -0.7
        r = xp.where((kind == NAN) & far, xp.nan, r)
        r = xp.where((kind == INF) & far, xp.inf, r)
        return r + xp.where(kind == JUMP, 0.05 * xp.floor(4.0 * x[0]), 0.0)
    return fun


RES = residuals(jnp)  # one function object: its compiled solves are reused


def residuals_host(x, t, y, kind):
    """The same in plain NumPy (runs on the host); ``kind == RAISES`` raises part way."""
    if float(kind) == RAISES and x[2] < -0.7:
        raise FloatingPointError("model undefined for c < -0.7")
    with np.errstate(invalid="ignore"):
        return residuals(np)(np.asarray(x), t, y, float(kind))


def objective(xp):
    """A smooth bounded problem with the same faults once x[0] > 0.5."""
    def f(x, c, kind):
        v = xp.sum((x - c) ** 2 * (1.0 + xp.arange(x.shape[0]))) + 0.1 * xp.sum(x**4)
        far = x[0] > 0.5
        v = xp.where((kind == NAN) & far, xp.nan, v)
        v = xp.where((kind == INF) & far, xp.inf, v)
        return v + xp.where(kind == JUMP, 0.1 * xp.floor(4.0 * x[1]), 0.0)
    return f


OBJ = objective(jnp)


def objective_host(x, c, kind):
    if float(kind) == RAISES and x[0] > 0.5:
        raise FloatingPointError("objective undefined for x[0] > 0.5")
    return float(objective(np)(np.asarray(x), c, float(kind)))


C = np.array([1.0, -0.4, 0.3, 2.0])
LBFGSB_X0 = np.zeros(4)
LBFGSB_BOUNDS = [(-1.0, 1.5), (-1.0, 1.0), (0.0, 1.0), (-1.0, 1.0)]

SCIPY_LSQ_STATUSES = {-1, 0, 1, 2, 3, 4}


def lsq_eager(fun, kind, **kw):
    return jl.least_squares(fun, X0, args=(T, Y, kind), **kw)


def lsq_traced(fun, **kw):
    return lambda kind: jl.least_squares(fun, jnp.asarray(X0), args=(T, Y, kind), **kw)


def lbfgsb_traced(fun, **kw):
    return lambda kind: jl.minimize(fun, jnp.asarray(LBFGSB_X0), args=(C, kind),
                                    bounds=LBFGSB_BOUNDS, **kw)


@functools.cache
def lsq_jit(method, batched=False):
    """One jitted (optionally vmapped) solve per method, shared by the tests below."""
    solve = lsq_traced(RES, method=method)
    return jax.jit(jax.vmap(solve) if batched else solve)


@functools.cache
def lbfgsb_jit(batched=False):
    solve = lbfgsb_traced(OBJ)
    return jax.jit(jax.vmap(solve) if batched else solve)


def assert_sane_lsq(res, cost0):
    """No silent wrong answer: finite x and cost, no worse than the start, a status
    SciPy knows (or our -3, 'Jacobian not finite')."""
    status = int(res.status)
    assert status in SCIPY_LSQ_STATUSES | {-3}
    assert np.all(np.isfinite(np.asarray(res.x)))
    assert np.isfinite(float(res.cost)) and float(res.cost) <= cost0
    assert int(res.nfev) <= 100 * X0.size


def cost_at_x0(kind):
    r = residuals(np)(X0, T, Y, kind)
    return 0.5 * float(r @ r)


# --------------------------------------------------------------------------------------
# least_squares
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("method", ["trf", "lm"])
def test_least_squares_fault_eager_like_scipy(fault, method):
    kind = FAULTS[fault]
    res = lsq_eager(RES, kind, method=method)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = so.least_squares(residuals(np), X0, args=(T, Y, kind), method=method,
                               jac=lambda x, t, y, k: np.asarray(
                                   jax.jacfwd(RES)(jnp.asarray(x), t, y, k)))
    assert_sane_lsq(res, cost_at_x0(kind))
    assert res.status == ref.status
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-6, atol=1e-12)
    if fault != "discontinuous":
        assert res.x[2] >= -0.7  # never accepted a point in the bad region


@pytest.mark.parametrize("method", ["trf", "dogbox", "lm"])
def test_least_squares_faults_under_jit_and_vmap(method):
    kinds = jnp.array([HEALTHY, NAN, INF, JUMP])
    for kind in kinds:
        one = lsq_jit(method)(kind)
        assert_sane_lsq(one, cost_at_x0(float(kind)))
        eager = lsq_eager(RES, float(kind), method=method)
        np.testing.assert_allclose(np.asarray(one.x), eager.x, rtol=1e-10, atol=1e-12)
        assert int(one.status) == eager.status
    # One bad fit in a batch does not spoil the others: bit for bit the same as a batch
    # of healthy fits.
    healthy = lsq_jit(method, True)(jnp.zeros(4))
    mixed = lsq_jit(method, True)(kinds)
    for f in ("x", "cost", "fun", "nfev", "status"):
        np.testing.assert_array_equal(np.asarray(mixed[f])[0], np.asarray(healthy[f])[0])
    for i in range(1, 4):
        assert_sane_lsq(jax.tree_util.tree_map(lambda a: a[i], mixed), cost_at_x0(float(kinds[i])))


def test_least_squares_function_that_raises_eager_jit_vmap():
    with pytest.raises(FloatingPointError, match="model undefined"):
        lsq_eager(residuals_host, RAISES)
    with pytest.raises(FloatingPointError, match="model undefined"):
        so.least_squares(residuals_host, X0, args=(T, Y, RAISES))
    # Inside jit/vmap nothing can raise: a warning, and the failed evaluations count as
    # non-finite. Under vmap the function is called per fit: only the bad fit sees it.
    with pytest.warns(RuntimeWarning, match="model undefined"):
        mixed = jax.jit(jax.vmap(lsq_traced(residuals_host)))(jnp.array([HEALTHY, RAISES]))
    healthy = lsq_eager(residuals_host, HEALTHY)
    np.testing.assert_allclose(np.asarray(mixed.x[0]), healthy.x, rtol=1e-10)
    assert int(mixed.nfev[0]) == healthy.nfev
    bad = jax.tree_util.tree_map(lambda a: a[1], mixed)
    assert_sane_lsq(bad, cost_at_x0(HEALTHY))
    assert float(bad.x[2]) >= -0.7


def test_least_squares_wrong_shape_raises_in_every_mode():
    msg = "`fun` must return at most 1-d array_like"
    bad = lambda x, t, y, kind: jnp.outer(RES(x, t, y, kind), x)  # noqa: E731
    for run in (lambda: lsq_eager(bad, HEALTHY), lambda: jax.jit(lsq_traced(bad))(HEALTHY),
                lambda: jax.vmap(lsq_traced(bad))(jnp.zeros(2))):
        with pytest.raises(ValueError, match=msg):
            run()
    jac3 = lambda x, t, y, kind: jnp.ones((3, 3))  # noqa: E731
    for run in (lambda: lsq_eager(RES, HEALTHY, jac=jac3),
                lambda: jax.jit(lsq_traced(RES, jac=jac3))(HEALTHY)):
        with pytest.raises(ValueError, match="The return value of `jac` has wrong shape"):
            run()


@pytest.mark.parametrize("out_dtype", [np.float32, np.int64])
def test_least_squares_other_output_dtype_like_scipy(out_dtype):
    """float32 or integer residuals for a float64 x0: SciPy converts them, as we do."""
    def fun(xp):
        return lambda x: (xp.round(4 * (x - xp.asarray([1.0, 2.0]))) if out_dtype == np.int64
                          else (x - xp.asarray([1.0, 2.0]))).astype(out_dtype)

    res = jl.least_squares(fun(jnp), [0.3, 0.4])
    ref = so.least_squares(fun(np), [0.3, 0.4])
    assert res.x.dtype == np.float64 and res.status == ref.status
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    jit_x = jax.jit(lambda x0: jl.least_squares(fun(jnp), x0).x)(jnp.array([0.3, 0.4]))
    np.testing.assert_array_equal(np.asarray(jit_x), res.x)


# --------------------------------------------------------------------------------------
# L-BFGS-B
# --------------------------------------------------------------------------------------
def assert_sane_lbfgsb(res, kind):
    f0 = objective(np)(LBFGSB_X0, C, kind)
    assert int(res.status) in (0, 1, 2)
    x = np.asarray(res.x)
    lo, hi = np.array(LBFGSB_BOUNDS).T
    assert np.all(np.isfinite(x)) and np.all((x >= lo) & (x <= hi))
    assert np.isfinite(float(res.fun)) and float(res.fun) <= f0
    if kind in (NAN, INF):
        assert x[0] <= 0.5 and int(res.status) == 2


@pytest.mark.parametrize("fault", list(FAULTS))
def test_lbfgsb_fault_eager_like_scipy(fault):
    kind = FAULTS[fault]
    res = jl.minimize(OBJ, LBFGSB_X0, args=(C, kind), bounds=LBFGSB_BOUNDS)
    grad = jax.grad(OBJ)
    with np.errstate(invalid="ignore"):
        ref = so.minimize(objective(np), LBFGSB_X0, args=(C, kind), bounds=LBFGSB_BOUNDS,
                          method="L-BFGS-B",
                          jac=lambda x, c, k: np.asarray(grad(jnp.asarray(x), c, k)))
    assert_sane_lbfgsb(res, kind)
    if fault == "discontinuous":
        assert res.status == ref.status
        np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-6)
    elif fault == "nan":
        # SciPy stops ABNORMAL too, but reports the NaN of its last trial as `fun`; we
        # report the last accepted point.
        assert res.status == ref.status == 2 and np.isnan(ref.fun)
    else:
        # SciPy's relative-reduction test divides inf by inf and claims convergence
        # after 3 evaluations; we stop ABNORMAL, with a lower objective.
        assert ref.status == 0 and ref.nfev == 3 and res.status == 2
        assert res.fun < ref.fun


def test_lbfgsb_faults_under_jit_and_vmap():
    kinds = jnp.array([HEALTHY, NAN, INF, JUMP])
    for kind in kinds:
        one = lbfgsb_jit()(kind)
        assert_sane_lbfgsb(one, float(kind))
        eager = jl.minimize(OBJ, LBFGSB_X0, args=(C, float(kind)),
                            bounds=LBFGSB_BOUNDS)
        np.testing.assert_allclose(np.asarray(one.x), eager.x, rtol=1e-10, atol=1e-12)
        assert int(one.status) == eager.status and int(one.nfev) == eager.nfev
    healthy = lbfgsb_jit(True)(jnp.zeros(4))
    mixed = lbfgsb_jit(True)(kinds)
    for f in ("x", "fun", "jac", "nfev", "nit", "status"):
        np.testing.assert_array_equal(np.asarray(mixed[f])[0], np.asarray(healthy[f])[0])
    for i in range(1, 4):
        assert_sane_lbfgsb(jax.tree_util.tree_map(lambda a: a[i], mixed), float(kinds[i]))


def test_lbfgsb_function_that_raises_eager_jit_vmap():
    kw = dict(args=(C, RAISES), bounds=LBFGSB_BOUNDS)
    with pytest.raises(FloatingPointError, match="objective undefined"):
        jl.minimize(objective_host, LBFGSB_X0, **kw)
    with pytest.raises(FloatingPointError, match="objective undefined"):
        so.minimize(objective_host, LBFGSB_X0, method="L-BFGS-B", **kw)
    with pytest.warns(RuntimeWarning, match="objective undefined"):
        mixed = jax.jit(jax.vmap(lbfgsb_traced(objective_host)))(jnp.array([HEALTHY, RAISES]))
    healthy = jl.minimize(objective_host, LBFGSB_X0, args=(C, HEALTHY), bounds=LBFGSB_BOUNDS)
    np.testing.assert_allclose(np.asarray(mixed.x[0]), healthy.x, rtol=1e-10)
    assert int(mixed.nfev[0]) == healthy.nfev
    # the failing evaluations count as non-finite: as with NaN
    assert_sane_lbfgsb(jax.tree_util.tree_map(lambda a: a[1], mixed), NAN)


def test_lbfgsb_wrong_shape_raises_in_every_mode():
    vec = lambda x, c, kind: (x - c) ** 2  # noqa: E731
    fg = lambda x, c, kind: (jnp.sum((x - c) ** 2), jnp.ones(5))  # noqa: E731

    def vec_np(x, c, kind):
        return (np.asarray(x) - c) ** 2

    cases = [(vec, {}, "must return a scalar value"),
             (fg, dict(jac=True), r"gradient must have shape \(4,\)")]
    for fun, kw, msg in cases:
        for run in (lambda: jl.minimize(fun, LBFGSB_X0, args=(C, HEALTHY), **kw),
                    lambda: jax.jit(lbfgsb_traced(fun, **kw))(HEALTHY),
                    lambda: jax.vmap(lbfgsb_traced(fun, **kw))(jnp.zeros(2))):
            with pytest.raises(ValueError, match=msg):
                run()
    with pytest.raises(ValueError, match="must return a scalar value") as ours:
        jl.minimize(vec_np, LBFGSB_X0, args=(C, HEALTHY))
    with pytest.raises(ValueError) as theirs:
        so.minimize(vec_np, LBFGSB_X0, args=(C, HEALTHY), method="L-BFGS-B")
    assert str(ours.value) == str(theirs.value)


def test_lbfgsb_float32_gradient_gh18730():
    """A NumPy (f, g) in float32 for a float64 x0 (SciPy's gh-18730)."""
    def fg(x):
        x = np.asarray(x).astype(np.float32)
        return np.sum(x**2), 2 * x

    res = jl.minimize(fg, np.array([1.0, 1.0]), jac=True)
    ref = so.minimize(fg, np.array([1.0, 1.0]), jac=True, method="L-BFGS-B")
    assert res.x.dtype == np.float64 and res.status == ref.status == 0
    np.testing.assert_allclose(res.fun, 0.0, atol=1e-15)


# --------------------------------------------------------------------------------------
# Determinism: the same call twice gives bit-identical results
# --------------------------------------------------------------------------------------
def assert_identical(a, b):
    for k in a:
        if k in ("message", "success", "hess_inv") or a[k] is None:
            continue
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("method", ["trf", "dogbox", "lm"])
def test_least_squares_is_deterministic(method):
    assert_identical(lsq_eager(RES, JUMP, method=method), lsq_eager(RES, JUMP, method=method))
    assert_identical(lsq_jit(method)(JUMP), lsq_jit(method)(JUMP))
    kinds = jnp.array([HEALTHY, JUMP, NAN, INF])
    assert_identical(lsq_jit(method, True)(kinds), lsq_jit(method, True)(kinds))


def test_curve_fit_is_deterministic():
    def model(t, a, b, c):
        return a + b * jnp.exp(c * t)

    y = Y + 0.01 * np.sin(7 * T)
    p1, c1 = jl.curve_fit(model, T, y, p0=X0)
    p2, c2 = jl.curve_fit(model, T, y, p0=X0)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)


def test_lbfgsb_is_deterministic():
    kw = dict(args=(C, JUMP), bounds=LBFGSB_BOUNDS)
    assert_identical(jl.minimize(OBJ, LBFGSB_X0, **kw), jl.minimize(OBJ, LBFGSB_X0, **kw))
    assert_identical(lbfgsb_jit()(JUMP), lbfgsb_jit()(JUMP))
    kinds = jnp.array([HEALTHY, JUMP, NAN, INF])
    assert_identical(lbfgsb_jit(True)(kinds), lbfgsb_jit(True)(kinds))


# Last in the module: it drops the compiled solves the tests above share.
def test_deterministic_across_recompilation():
    """Dropping every cache and compiling again gives the same bits."""
    from jaxopt_lsq import _lbfgsb, _least_squares

    def run():
        a = lsq_eager(RES, HEALTHY)
        b = jl.minimize(OBJ, LBFGSB_X0, args=(C, HEALTHY), bounds=LBFGSB_BOUNDS)
        return a, b

    first = run()
    _least_squares._compiled_solve.cache_clear()
    _lbfgsb._compiled_solve.cache_clear()
    jax.clear_caches()
    second = run()
    for a, b in zip(first, second):
        assert_identical(a, b)
