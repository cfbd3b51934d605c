"""Property-based tests against SciPy (hypothesis).

Random well-posed problems must be solved at least as well as SciPy solves them:

* least squares: ``r(x) = s_r (A u(x / s_x) - b)`` with ``u(z) = z + 0.1 z^3`` (a monotone
  bijection, so the problem in ``u`` is linear least squares: one minimum, also inside a
  box), random sizes, parameter scales ``s_x`` and residual scales ``s_r`` from 1e-8 to
  1e8, no bounds / inactive / active bounds, every loss, trf, dogbox and lm (unbounded);
* L-BFGS-B: convex quadratics in scaled variables with random boxes, some bounds exactly
  at the unconstrained optimum, some active, some not.

Checks: the final cost is no worse than SciPy's (within a tolerance that follows from the
stopping rules), ``x`` is feasible, ``status`` is one of SciPy's and ``success`` agrees
with it. SciPy gets the exact Jacobian/gradient, so both follow the same algorithm on
the same function.

The default profile (CI) is derandomised, without an example database, with a modest
number of examples drawn from a few shapes (so compiled solves are reused: data go
through ``args``). ``JAXOPT_LSQ_HYPOTHESIS=large`` runs many more random examples.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import jaxopt_lsq as jl  # noqa: E402

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("jaxopt_lsq_ci", max_examples=20, derandomize=True, **_COMMON)
settings.register_profile("jaxopt_lsq_large", max_examples=300, **_COMMON)
PROFILE = settings.get_profile(
    "jaxopt_lsq_large" if os.environ.get("JAXOPT_LSQ_HYPOTHESIS") == "large" else "jaxopt_lsq_ci"
)

SHAPES = [(6, 2), (12, 4)]  # (m, n): few shapes, so compiled solves are reused
LOSSES = ["linear", "soft_l1", "huber", "cauchy", "arctan"]
SCIPY_STATUSES = {-1, 0, 1, 2, 3, 4}


def residuals(xp):
    def fun(x, A, b, sx, sr):
        z = x / sx
        return sr * (A @ (z + 0.1 * z**3) - b)
    return fun


RES = residuals(jnp)
JAC = jax.jit(jax.jacfwd(RES))


@st.composite
def lsq_problems(draw):
    m, n = draw(st.sampled_from(SHAPES))
    method = draw(st.sampled_from(["trf", "trf", "dogbox", "lm"]))
    loss = "linear" if method == "lm" else draw(st.sampled_from(LOSSES))
    seed = draw(st.integers(0, 2**32 - 1))
    sx = 10.0 ** draw(st.integers(-8, 8))
    sr = 10.0 ** draw(st.integers(-8, 8))
    bounds_kind = "none" if method == "lm" else draw(st.sampled_from(["none", "loose", "tight"]))
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) * rng.uniform(0.5, 2.0, n)
    b = rng.standard_normal(m) * 2.0
    z0 = rng.uniform(-1.0, 1.0, n)
    if bounds_kind == "none":
        lb, ub = np.full(n, -np.inf), np.full(n, np.inf)
    else:
        width = 5.0 if bounds_kind == "loose" else 0.3  # tight: the minimum is usually outside
        lb = z0 - rng.uniform(0.05, width, n)
        ub = z0 + rng.uniform(0.05, width, n)
        lb[rng.uniform(size=n) < 0.25] = -np.inf
    f_scale = sr * 10.0 ** draw(st.sampled_from([-1, 0, 1]))
    return dict(method=method, loss=loss, A=A, b=b, sx=sx, sr=sr, x0=sx * z0,
                lb=sx * lb, ub=sx * ub, f_scale=f_scale)


@PROFILE
@given(lsq_problems())
def test_least_squares_no_worse_than_scipy(p):
    args = (p["A"], p["b"], np.float64(p["sx"]), np.float64(p["sr"]))
    kw = dict(method=p["method"], loss=p["loss"], f_scale=p["f_scale"], args=args)
    if p["method"] != "lm":
        kw["bounds"] = (p["lb"], p["ub"])
    res = jl.least_squares(RES, p["x0"], **kw)
    with np.errstate(all="ignore"):
        ref = so.least_squares(residuals(np), p["x0"], jac=lambda x, *a: np.asarray(JAC(x, *a)), **kw)
    assert res.status in SCIPY_STATUSES and res.success == (res.status > 0)
    assert np.all(res.x >= p["lb"]) and np.all(res.x <= p["ub"])
    # The stopping rules (ftol = 1e-8 on the relative reduction) bound how far from the
    # minimum either solver may stop.
    tol = 1e-6 * abs(ref.cost) + 1e-12 * p["sr"] ** 2
    assert res.cost <= ref.cost + tol, (res.cost, ref.cost, res.message, ref.message)


@st.composite
def bounded_quadratics(draw):
    n = draw(st.sampled_from([3, 8]))
    seed = draw(st.integers(0, 2**32 - 1))
    sx = 10.0 ** draw(st.integers(-4, 4))
    sf = 10.0 ** draw(st.integers(-6, 6))
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = Q @ np.diag(10.0 ** rng.uniform(-1.5, 1.5, n)) @ Q.T
    c = rng.uniform(-2.0, 2.0, n)  # unconstrained minimum (in z = x / sx)
    lb = rng.uniform(-2.0, 0.0, n)
    ub = lb + rng.uniform(0.2, 3.0, n)
    at_opt = rng.uniform(size=n) < 0.3  # a bound exactly at the minimum's coordinate
    lb = np.where(at_opt, c, lb)
    ub = np.where(at_opt, np.maximum(ub, c + 0.5), ub)
    lb[rng.uniform(size=n) < 0.15] = -np.inf
    ub[rng.uniform(size=n) < 0.15] = np.inf
    z0 = np.clip(rng.uniform(-1.0, 1.0, n), lb, ub)
    return dict(H=H, c=c, sx=sx, sf=sf, x0=sx * z0, lb=sx * lb, ub=sx * ub)


def quadratic(xp):
    def f(x, H, c, sx, sf):
        d = x / sx - c
        return 0.5 * sf * (d @ (H @ d))
    return f


QUAD = quadratic(jnp)
QUAD_GRAD = jax.jit(jax.grad(QUAD))


@PROFILE
@given(bounded_quadratics())
def test_lbfgsb_no_worse_than_scipy(p):
    args = (p["H"], p["c"], np.float64(p["sx"]), np.float64(p["sf"]))
    bounds = list(zip(p["lb"], p["ub"]))
    res = jl.minimize(QUAD, p["x0"], args=args, bounds=bounds)
    ref = so.minimize(quadratic(np), p["x0"], args=args, bounds=bounds, method="L-BFGS-B",
                      jac=lambda x, *a: np.asarray(QUAD_GRAD(x, *a)))
    assert res.status in (0, 1, 2) and res.success == (res.status == 0)
    assert np.all(res.x >= p["lb"]) and np.all(res.x <= p["ub"])
    f0 = float(quadratic(np)(p["x0"], *args))
    tol = 1e-5 * max(f0 - ref.fun, 0.0) + 1e-9 * abs(ref.fun)
    assert res.fun <= ref.fun + tol, (res.fun, ref.fun, res.message, ref.message)
    if ref.status == 0:
        assert res.status == 0, res.message
