"""Differentiating least_squares solutions (implicit differentiation).

Derivatives of the solution with respect to data are checked against central finite
differences of re-solved problems. Each re-solve is SciPy's MINPACK (method 'lm'), with
active variables held at their bounds, polished by Newton steps on the gradient of the
cost: MINPACK alone stops on its cost-change test with ~1e-8 errors in x, which would
swamp a 1e-6 comparison; the Newton steps bring x to machine precision.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares as scipy_least_squares

from jaxopt_lsq import least_squares

T = np.linspace(0.0, 2.0, 25)
Y = 1.0 * np.exp(-1.0 * T) + 0.5 * T + 0.05 * np.random.default_rng(3).standard_normal(T.size)
Y[[4, 17]] += 0.3  # outliers: robust losses then differ from the linear loss
X0 = np.array([0.5, 1.5, 0.6])  # feasible for every case below
# The derivative is that of the exact solution map, evaluated at the returned x: it is as
# accurate as the solve (with ftol=1e-8, x itself is only good to ~1e-4 in flat directions).
TIGHT = dict(xtol=1e-13, ftol=1e-13, gtol=1e-13)


def model(xp):
    def fun(x, t, y):
        return x[0] * xp.exp(-x[1] * t) + x[2] * t - y

    return fun


# One function object for every solve below: solves of one configuration (and their
# jvp/vjp programs) are compiled once and reused, also from test to test.
MODEL = model(jnp)


def rho(loss, z):
    return {"linear": z, "soft_l1": 2 * ((1 + z) ** 0.5 - 1), "cauchy": np.log1p(z),
            "huber": np.where(z <= 1, z, 2 * np.sqrt(z) - 1), "arctan": np.arctan(z)}[loss]


def reference_solution(y, x_start, active, loss, f_scale):
    """Re-solve with MINPACK: robust cost as sum of squares of sqrt(rho) * f_scale."""
    free = np.flatnonzero(active == 0)

    def residuals(z):
        x = x_start.copy()
        x[free] = z
        r = model(np)(x, T, y)
        return r if loss == "linear" else np.sqrt(rho(loss, (r / f_scale) ** 2)) * f_scale

    z = scipy_least_squares(residuals, x_start[free], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    x = x_start.copy()
    x[free] = z

    grad, hess = _newton_derivatives(loss, f_scale)
    for _ in range(4):
        g = np.asarray(grad(x, y))[free]
        H = np.asarray(hess(x, y))[np.ix_(free, free)]
        x[free] -= np.linalg.solve(H, g)
    return x


@functools.lru_cache(maxsize=None)
def _newton_derivatives(loss, f_scale):
    def cost(x, y):
        r = model(jnp)(x, T, y)
        z = (r / f_scale) ** 2
        rho_z = {"linear": z, "soft_l1": 2 * ((1 + z) ** 0.5 - 1), "cauchy": jnp.log1p(z),
                 "huber": jnp.where(z <= 1, z, 2 * jnp.sqrt(jnp.where(z <= 1, 1.0, z)) - 1),
                 "arctan": jnp.arctan(z)}[loss]
        return 0.5 * f_scale**2 * jnp.sum(rho_z)

    return jax.jit(jax.grad(cost)), jax.jit(jax.hessian(cost))


CASES = [
    dict(),
    dict(loss="soft_l1", f_scale=0.1),
    dict(loss="huber", f_scale=0.1),
    dict(loss="cauchy", f_scale=0.1),
    dict(loss="arctan", f_scale=0.5),
    dict(bounds=([-np.inf, 1.2, -np.inf], np.inf)),  # b's lower bound is active
    dict(loss="soft_l1", f_scale=0.1, bounds=([-np.inf, -np.inf, 0.55], [np.inf, np.inf, 2.0])),
]


@pytest.mark.parametrize("kw", CASES, ids=[str(c) for c in CASES])
def test_solution_derivative_matches_finite_differences(kw):
    kw = {**TIGHT, **kw}
    res = least_squares(MODEL, X0, args=(T, Y), **kw)
    assert res.success
    lb = np.broadcast_to(np.asarray(kw.get("bounds", (-np.inf, np.inf))[0], float), (3,))
    ub = np.broadcast_to(np.asarray(kw.get("bounds", (-np.inf, np.inf))[1], float), (3,))
    x_start = np.where(res.active_mask == -1, lb, np.where(res.active_mask == 1, ub, res.x))
    if "bounds" in kw:
        assert np.any(res.active_mask != 0), "the case must exercise an active bound"

    def solve_x(y):
        return least_squares(MODEL, X0, args=(T, y), **kw).x

    J_rev = np.asarray(jax.jacrev(solve_x)(jnp.asarray(Y)))
    J_fwd = np.asarray(jax.jacfwd(solve_x)(jnp.asarray(Y)))
    loss, f_scale = kw.get("loss", "linear"), kw.get("f_scale", 1.0)
    eps = 1e-4
    J_fd = np.stack(
        [
            (reference_solution(Y + eps * e, x_start, res.active_mask, loss, f_scale)
             - reference_solution(Y - eps * e, x_start, res.active_mask, loss, f_scale)) / (2 * eps)
            for e in np.eye(T.size)
        ],
        axis=1,
    )
    np.testing.assert_allclose(J_rev, J_fwd, rtol=1e-10, atol=1e-14)
    assert np.linalg.norm(J_rev - J_fd) <= 1e-6 * np.linalg.norm(J_fd)
    # Variables held at a bound do not move.
    assert np.all(J_rev[res.active_mask != 0] == 0)


def test_derivative_with_respect_to_x0_is_zero():
    g = jax.grad(lambda x0: least_squares(MODEL, x0, args=(T, Y)).x.sum())(jnp.asarray(X0))
    np.testing.assert_array_equal(g, 0.0)


def test_grad_of_cost_and_residuals():
    # d cost*/dy = dC/dy at fixed x (envelope theorem): -f(x*) for the linear loss.
    res = least_squares(MODEL, X0, args=(T, Y), **TIGHT)
    g = jax.grad(lambda y: least_squares(MODEL, X0, args=(T, y), **TIGHT).cost)(jnp.asarray(Y))
    np.testing.assert_allclose(g, -res.fun, rtol=1e-6, atol=1e-9)  # up to the final gradient
    # Residuals f(x*(y), y): tangent = J dx - dy.
    dy = np.random.default_rng(0).standard_normal(T.size)
    _, dfun = jax.jvp(lambda y: least_squares(MODEL, X0, args=(T, y), **TIGHT).fun, (jnp.asarray(Y),), (jnp.asarray(dy),))
    _, dx = jax.jvp(lambda y: least_squares(MODEL, X0, args=(T, y), **TIGHT).x, (jnp.asarray(Y),), (jnp.asarray(dy),))
    np.testing.assert_allclose(dfun, res.jac @ np.asarray(dx) - dy, rtol=1e-8, atol=1e-12)


def test_per_fit_gradients_under_vmap_and_jit():
    ys = jnp.stack([jnp.asarray(Y), jnp.asarray(Y) * 1.1, jnp.asarray(Y) + 0.2])

    def loss_of_fit(y):
        return jnp.sum(least_squares(MODEL, X0, args=(T, y), loss="soft_l1", f_scale=0.1, **TIGHT).x ** 2)

    batched = jax.jit(jax.vmap(jax.grad(loss_of_fit)))(ys)
    for i in range(3):
        # Under vmap the solve's rounding differs, and an ftol stop (1e-13) pins x only
        # to about sqrt(ftol) = 3e-7 relative: the two gradients agree to that, relative
        # to the gradient's size (measured: 3.6e-8 on an Intel Xeon, 0 on an AMD EPYC).
        ref = jax.grad(loss_of_fit)(ys[i])
        np.testing.assert_allclose(batched[i], ref, rtol=1e-7, atol=1e-6 * float(jnp.max(jnp.abs(ref))))


def test_derivative_with_respect_to_f_scale_and_bounds():
    # An active bound moves the solution with it; f_scale changes the robust fit.
    kw = dict(bounds=([-np.inf, 1.2, -np.inf], np.inf), **TIGHT)
    dx = jax.jacfwd(lambda lb: least_squares(MODEL, X0, args=(T, Y), bounds=(jnp.stack([-jnp.inf, lb, -jnp.inf]), jnp.inf), **TIGHT).x)(1.2)
    assert abs(float(dx[1]) - 1.0) < 1e-12
    res = least_squares(MODEL, X0, args=(T, Y), **kw)
    assert res.active_mask[1] == -1
    g = jax.grad(lambda fs: least_squares(MODEL, X0, args=(T, Y), loss="cauchy", f_scale=fs, **TIGHT).x[0])(0.1)
    x_start = np.asarray(least_squares(MODEL, X0, args=(T, Y), loss="cauchy", f_scale=0.1, **TIGHT).x)
    eps, free = 1e-4, np.zeros(3, int)
    fd = (reference_solution(Y, x_start, free, "cauchy", 0.1 + eps)[0]
          - reference_solution(Y, x_start, free, "cauchy", 0.1 - eps)[0]) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_numpy_function_cannot_be_differentiated_clear_error():
    with pytest.raises(TypeError, match="needs a JAX-traceable `fun`"):
        jax.grad(lambda y: least_squares(model(np), X0, args=(T, y)).cost)(jnp.asarray(Y))
