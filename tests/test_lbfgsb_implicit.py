"""Differentiating L-BFGS-B solutions (implicit differentiation of grad f = 0 on the
free variables; variables on a bound move with the bound)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from jaxopt_lsq import fmin_l_bfgs_b, minimize

A = np.random.default_rng(0).standard_normal((30, 5))
B0 = np.random.default_rng(1).standard_normal(30)
OPTS = dict(ftol=1e-15, gtol=1e-12, maxiter=2000)


def f(x, b):
    return 0.5 * jnp.sum((A @ x - b) ** 2) + 0.1 * jnp.sum(x**4)


def grad_np(x, b):
    return A.T @ (A @ x - b) + 0.4 * x**3


def hess_np(x):
    return A.T @ A + np.diag(1.2 * x**2)


def reference_solution(b, bounds):
    """SciPy's L-BFGS-B, then Newton steps on the free variables (machine precision)."""
    x = scipy_minimize(lambda x: 0.5 * np.sum((A @ x - b) ** 2) + 0.1 * np.sum(x**4), np.zeros(5),
                       jac=lambda x: grad_np(x, b), method="L-BFGS-B", bounds=bounds, options=OPTS).x
    lo, hi = (np.array(v) for v in zip(*bounds)) if bounds else (np.full(5, -np.inf), np.full(5, np.inf))
    free = (x > lo + 1e-9) & (x < hi - 1e-9)
    for _ in range(5):
        x[free] -= np.linalg.solve(hess_np(x)[np.ix_(free, free)], grad_np(x, b)[free])
    return x


@pytest.mark.parametrize("bounds", [None, [(-0.1, 0.1)] * 5], ids=["unbounded", "active-bounds"])
def test_solution_derivative(bounds):
    def solve(b):
        return minimize(f, jnp.zeros(5), args=(b,), method="L-BFGS-B", bounds=bounds, options=OPTS).x

    # The solution and the reverse-mode Jacobian from one vjp (what jax.jacrev does),
    # without a separate compilation of the eager solve.
    x, vjp = jax.vjp(solve, jnp.asarray(B0))
    x = np.asarray(x)
    J_rev = np.asarray(jax.vmap(vjp)(jnp.eye(5))[0])
    J_fwd = np.asarray(jax.jacfwd(solve)(jnp.asarray(B0)))
    np.testing.assert_allclose(J_rev, J_fwd, atol=1e-13)
    # Closed form: dx_F/db = H_FF^{-1} A_F^T, dx_A = 0.
    lo, hi = (-0.1, 0.1) if bounds else (-np.inf, np.inf)
    free = (x > lo) & (x < hi)
    if bounds:
        assert not free.all(), "the case must exercise active bounds"
    J_exact = np.zeros((5, B0.size))
    J_exact[free] = np.linalg.solve(hess_np(x)[np.ix_(free, free)], A[:, free].T)
    np.testing.assert_allclose(J_rev, J_exact, rtol=1e-9, atol=1e-12)
    # Central differences of re-solved problems.
    eps = 1e-5
    J_fd = np.stack([(reference_solution(B0 + eps * e, bounds) - reference_solution(B0 - eps * e, bounds)) / (2 * eps)
                     for e in np.eye(B0.size)], axis=1)
    assert np.linalg.norm(J_rev - J_fd) <= 1e-6 * np.linalg.norm(J_fd)


def test_value_gradient():
    # d f*(b)/d b = d f/d b at the solution (envelope theorem).
    def value(b):
        return minimize(f, jnp.zeros(5), args=(b,), method="L-BFGS-B", options=OPTS).fun

    res = minimize(f, jnp.zeros(5), args=(jnp.asarray(B0),), method="L-BFGS-B", options=OPTS)
    np.testing.assert_allclose(jax.grad(value)(jnp.asarray(B0)), -(A @ np.asarray(res.x) - B0), rtol=1e-8, atol=1e-10)


def test_per_fit_gradients_under_vmap():
    bs = jnp.stack([jnp.asarray(B0), 2 * jnp.asarray(B0), jnp.asarray(B0) + 1])

    def loss(b):
        return jnp.sum(minimize(f, jnp.zeros(5), args=(b,), method="L-BFGS-B", options=OPTS).x ** 2)

    batched = jax.jit(jax.vmap(jax.grad(loss)))(bs)
    for i in range(3):
        # Batched and single solves stop at slightly different points within gtol.
        np.testing.assert_allclose(batched[i], jax.grad(loss)(bs[i]), rtol=1e-5, atol=1e-8)


def test_numpy_objective_cannot_be_differentiated_clear_error():
    def f_np(x, b):
        return float(0.5 * np.sum((A @ np.asarray(x) - np.asarray(b)) ** 2))

    with pytest.raises(TypeError, match="needs a JAX-traceable `fun`"):
        jax.grad(lambda b: minimize(f_np, jnp.zeros(5), args=(b,), method="L-BFGS-B").fun)(jnp.asarray(B0))


def test_fmin_l_bfgs_b_is_differentiable_too():
    def f_and_g(x, b):  # fmin_l_bfgs_b without fprime: func returns (f, g), as in SciPy
        return f(x, b), jax.grad(f)(x, b)

    g = jax.grad(lambda b: fmin_l_bfgs_b(f_and_g, jnp.zeros(5), args=(b,), factr=10, pgtol=1e-12)[0][0])(jnp.asarray(B0))
    x = np.asarray(minimize(f, jnp.zeros(5), args=(jnp.asarray(B0),), method="L-BFGS-B", options=OPTS).x)
    np.testing.assert_allclose(g, np.linalg.solve(hess_np(x), A.T)[0], rtol=1e-6, atol=1e-10)
