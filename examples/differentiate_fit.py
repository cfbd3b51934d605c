"""Gradients through a fit: learn a robust loss's ``f_scale`` on validation data.

A bilevel problem. Inner level: a robust fit (soft_l1 loss) of y = a + b exp(c t) to
training data with outliers; its soft margin ``f_scale`` decides which residuals count
as outliers. Outer level: choose ``f_scale`` so that the fitted curve predicts a
clean validation set well:

    min_s  L(s) = mean((model(t_val, x*(s)) - y_val)^2),   x*(s) = argmin_x cost(x; s).

``jax.grad`` of L goes through ``least_squares`` by implicit differentiation (the
optimality conditions J^T rho' f = 0 at x*), never through the solver's iterations,
so the gradient costs one small linear solve. We check it against central finite
differences of re-solved fits (with SciPy when it is installed), then run gradient
descent on log f_scale.

Run:  python examples/differentiate_fit.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import least_squares  # noqa: E402

QUICK = os.environ.get("JAXOPT_LSQ_EXAMPLE_QUICK") == "1"


def gen_data(t, a, b, c, noise=0.0, n_outliers=0, seed=None):
    rng = np.random.default_rng(seed)
    error = noise * rng.standard_normal(t.size)
    error[rng.integers(0, t.size, n_outliers)] *= 10
    return a + b * np.exp(c * t) + error


t_train = np.linspace(0, 10, 30)
y_train = gen_data(t_train, 0.5, 2.0, -1.0, noise=0.1, n_outliers=6, seed=1)
t_val = np.linspace(0.2, 9.8, 30)
y_val = gen_data(t_val, 0.5, 2.0, -1.0, noise=0.1, seed=2)  # no outliers


def fun(x, t, y):
    return x[0] + x[1] * jnp.exp(x[2] * t) - y


x0 = np.array([1.0, 1.0, -0.5])
# Tight tolerances: a derivative of a solution is only as accurate as the solve.
tols = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def fit(log_f_scale):
    return least_squares(fun, x0, loss="soft_l1", f_scale=jnp.exp(log_f_scale),
                         args=(t_train, y_train), **tols).x


def validation_loss(log_f_scale):
    return jnp.mean(fun(fit(log_f_scale), t_val, y_val) ** 2)


value_and_grad = jax.jit(jax.value_and_grad(validation_loss))

# 1. Check the hypergradient at f_scale = 1 against finite differences of re-solves.
s, h = 0.0, 1e-3
_, g = value_and_grad(s)
try:
    import scipy.optimize as sopt

    def loss_scipy(log_f_scale):  # the same outer loss with SciPy's inner fit
        x = sopt.least_squares(lambda x, t, y: x[0] + x[1] * np.exp(x[2] * t) - y, x0,
                               loss="soft_l1", f_scale=np.exp(log_f_scale), jac="3-point",
                               args=(t_train, y_train), **tols).x
        return np.mean((x[0] + x[1] * np.exp(x[2] * t_val) - y_val) ** 2)

    g_fd, who = (loss_scipy(s + h) - loss_scipy(s - h)) / (2 * h), "SciPy re-solves"
except ImportError:
    g_fd, who = (validation_loss(s + h) - validation_loss(s - h)) / (2 * h), "re-solves"
print(f"dL/d(log f_scale) at f_scale = 1: jax.grad {float(g):.6e}, "
      f"finite differences of {who} {float(g_fd):.6e}")
assert abs(g - g_fd) <= 1e-3 * abs(g_fd) + 1e-10

# 2. Gradient descent on log f_scale (Adam's update: robust to the gradient's scale).
log_s, m, v = 1.0, 0.0, 0.0
lr, b1, b2 = 0.2, 0.5, 0.999
n_steps = 10 if QUICK else 30
print(f"\n{'step':>4}{'f_scale':>10}{'validation MSE':>16}")
for k in range(1, n_steps + 1):
    loss, g = value_and_grad(log_s)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    log_s = log_s - lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + 1e-12)
    if k == 1 or k % 5 == 0:
        print(f"{k:4d}{np.exp(float(log_s)):10.4f}{float(loss):16.6f}")

x_learned = fit(log_s)
x_plain = least_squares(fun, x0, method="lm", args=(t_train, y_train)).x
print(f"\nlearned f_scale = {np.exp(float(log_s)):.3f} (the data's noise level is 0.1)")
print(f"validation MSE: learned soft_l1 fit {float(validation_loss(log_s)):.5f}, "
      f"f_scale = 1 fit {float(validation_loss(0.0)):.5f}, plain least squares "
      f"{float(jnp.mean(fun(x_plain, t_val, y_val) ** 2)):.5f}")
print(f"parameters (true 0.5, 2, -1): learned {np.round(np.asarray(x_learned), 4)}")
