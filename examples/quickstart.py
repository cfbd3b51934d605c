"""Quick start: SciPy's least_squares examples, solved by jaxopt_lsq.

Run:  python examples/quickstart.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # SciPy's precision; float32 works too

from jaxopt_lsq import least_squares  # noqa: E402  (the only change from SciPy code)


# 1. Rosenbrock, unconstrained and with a bound on x[1] (SciPy's documentation example).
def fun_rosenbrock(x):
    return jnp.array([10 * (x[1] - x[0] ** 2), (1 - x[0])])


res = least_squares(fun_rosenbrock, np.array([2.0, 2.0]))
print("Rosenbrock:          x =", res.x, "cost =", res.cost, "|", res.message)
res = least_squares(fun_rosenbrock, np.array([2.0, 2.0]), bounds=([-np.inf, 1.5], np.inf))
print("Bounded Rosenbrock:  x =", res.x, "cost =", res.cost, "active_mask =", res.active_mask)


# 2. Robust curve fitting with outliers: y = a + b * exp(c * t).
def gen_data(t, a, b, c, noise=0.0, n_outliers=0, seed=None):
    rng = np.random.default_rng(seed)
    y = a + b * np.exp(t * c)
    error = noise * rng.standard_normal(t.size)
    outliers = rng.integers(0, t.size, n_outliers)
    error[outliers] *= 10
    return y + error


t_train = np.linspace(0, 10, 15)
y_train = gen_data(t_train, 0.5, 2.0, -1.0, noise=0.1, n_outliers=3, seed=0)


def fun(x, t, y):
    return x[0] + x[1] * jnp.exp(x[2] * t) - y


x0 = np.array([1.0, 1.0, 0.0])
# From c = 0 the Jacobian is singular: trf (SciPy's and ours) drifts along a flat valley
# with the linear loss, while Levenberg-Marquardt converges; the robust losses converge
# with trf and ignore the outliers.
r = least_squares(fun, x0, method="lm", args=(t_train, y_train))
print(f"Linear loss, lm:      x = {np.round(r.x, 4)}, cost = {r.cost:.4f}, status = {r.status}")
for loss in ("soft_l1", "cauchy"):
    r = least_squares(fun, x0, loss=loss, f_scale=0.1, args=(t_train, y_train))
    print(f"Robust fit ({loss:7s}): x = {np.round(r.x, 4)}, nfev = {r.nfev}, status = {r.status}")

# 3. The same solve inside jax.jit, and 1000 fits at once with jax.vmap.
solve = jax.jit(lambda x0, y: least_squares(fun, x0, loss="soft_l1", f_scale=0.1, args=(t_train, y)).x)
ys = jnp.stack([jnp.asarray(gen_data(t_train, 0.5, 2.0, -1.0, noise=0.1, seed=s)) for s in range(1000)])
xs = jax.vmap(solve, in_axes=(None, 0))(jnp.array([1.0, 1.0, -0.5]), ys)
print("1000 batched fits: mean parameters =", np.round(np.asarray(xs.mean(axis=0)), 3), "(true 0.5, 2.0, -1.0)")

# 4. Differentiate the fitted parameters with respect to the data (implicit differentiation).
dc_dy = jax.grad(lambda y: least_squares(fun, jnp.array([1.0, 1.0, -0.5]), args=(t_train, y)).x[2])(y_train)
print("d(fitted c)/d(y_i) for the first 5 points:", np.round(np.asarray(dc_dy[:5]), 4))
