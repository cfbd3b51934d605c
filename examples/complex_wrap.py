"""Complex-valued residuals, wrapped into real ones: SciPy's least_squares example.

``least_squares`` works with real numbers. A complex function of complex variables,
here f(z) = z - (0.5 + 0.5j), is solved by treating real and imaginary parts as
independent real variables and residuals (an m-D complex problem becomes a 2m-D real
one). With bounds 0 <= Re z, Im z <= 1 the answer is z = 0.5 + 0.5j.

Run:  python examples/complex_wrap.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import least_squares  # noqa: E402


def f(z):
    return z - (0.5 + 0.5j)


def f_wrap(x):
    # JAX differentiates through complex arithmetic; the residuals handed to the
    # solver are real.
    fz = f(x[0] + 1j * x[1])
    return jnp.array([fz.real, fz.imag])


res = least_squares(f_wrap, (0.1, 0.1), bounds=([0, 0], [1, 1]))
z = res.x[0] + 1j * res.x[1]
print(f"jaxopt_lsq: z = {z:.12f}  (cost {res.cost:.2e}, nfev {res.nfev}, {res.message})")

try:
    import scipy.optimize as sopt
except ImportError:
    print("(SciPy is not installed: skipping the comparison)")
else:
    def f_wrap_np(x):
        fz = f(x[0] + 1j * x[1])
        return np.array([fz.real, fz.imag])

    ref = sopt.least_squares(f_wrap_np, (0.1, 0.1), bounds=([0, 0], [1, 1]))
    z_ref = ref.x[0] + 1j * ref.x[1]
    print(f"SciPy     : z = {z_ref:.12f}  (cost {ref.cost:.2e}, nfev {ref.nfev}, {ref.message})")
    print(f"|z - z_SciPy| = {abs(z - z_ref):.1e}")

# A complex problem with more unknowns: fit a complex exponential
# y(t) = A exp((-d + i w) t) with complex amplitude A to noisy complex samples.
t = np.linspace(0, 4, 40)
rng = np.random.default_rng(0)
A_true, d_true, w_true = 1.5 - 0.5j, 0.7, 3.0
y = A_true * np.exp((-d_true + 1j * w_true) * t)
y = y + 0.01 * (rng.standard_normal(t.size) + 1j * rng.standard_normal(t.size))


def residuals(p, t, y):
    A = p[0] + 1j * p[1]
    r = A * jnp.exp((-p[2] + 1j * p[3]) * t) - y
    return jnp.concatenate([r.real, r.imag])  # 2m real residuals


res = least_squares(residuals, np.array([1.0, 0.0, 0.5, 2.8]), args=(t, y))
print(f"\nComplex exponential: A = {res.x[0] + 1j * res.x[1]:.4f} (true {A_true}), "
      f"d = {res.x[2]:.4f} (true {d_true}), w = {res.x[3]:.4f} (true {w_true})")
