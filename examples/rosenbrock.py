"""Rosenbrock without bounds: SciPy's first least_squares example, three ways.

The residuals f(x) = [10 (x1 - x0^2), 1 - x0] make 0.5 ||f||^2 the Rosenbrock
function, whose minimum is at x = [1, 1]. We solve it with

1. automatic differentiation (jaxopt_lsq's default: ``jac=None``),
2. the analytic Jacobian from SciPy's documentation,
3. SciPy's own ``least_squares`` (when SciPy is installed), for comparison,

and then minimise the scalar Rosenbrock function of 10 variables with L-BFGS-B.

Run:  python examples/rosenbrock.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # SciPy works in float64; float32 works too

from jaxopt_lsq import least_squares, minimize  # noqa: E402


def fun_rosenbrock(x):
    return jnp.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def jac_rosenbrock(x):
    return jnp.array([[-20 * x[0], 10.0], [-1.0, 0.0]])


x0 = np.array([2.0, 2.0])
print("Rosenbrock residuals from x0 = [2, 2]")
print(f"{'solver':<28}{'x':<28}{'cost':>12}{'nfev':>6}{'njev':>6}")


def show(name, res):
    x = np.array2string(np.asarray(res.x), precision=8)
    njev = "-" if res.njev is None else int(res.njev)  # None: 'lm' without a Jacobian count
    print(f"{name:<28}{x:<28}{float(res.cost):>12.3e}{int(res.nfev):>6}{njev:>6}")


show("jaxopt_lsq, autodiff", least_squares(fun_rosenbrock, x0))
show("jaxopt_lsq, analytic jac", least_squares(fun_rosenbrock, x0, jac=jac_rosenbrock))
show("jaxopt_lsq, method='lm'", least_squares(fun_rosenbrock, x0, method="lm"))

try:
    import scipy.optimize as sopt
except ImportError:
    print("(SciPy is not installed: skipping the comparison)")
else:
    def fun_np(x):  # the same residuals in NumPy, for SciPy
        return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    def jac_np(x):
        return np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])

    show("SciPy, '2-point' (default)", sopt.least_squares(fun_np, x0))
    show("SciPy, analytic jac", sopt.least_squares(fun_np, x0, jac=jac_np))


# The scalar Rosenbrock function in 10 variables, minimised with L-BFGS-B; the
# gradient comes from jax.grad.
def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


x0 = np.full(10, -1.0)
res = minimize(rosen, x0, method="L-BFGS-B")
print(f"\nL-BFGS-B, Rosenbrock n=10: f = {float(res.fun):.3e}, nit = {res.nit}, "
      f"max|x - 1| = {np.abs(res.x - 1).max():.1e}, {res.message}")
try:
    import scipy.optimize as sopt
except ImportError:
    pass
else:
    ref = sopt.minimize(sopt.rosen, x0, jac=sopt.rosen_der, method="L-BFGS-B")
    print(f"SciPy   , Rosenbrock n=10: f = {ref.fun:.3e}, nit = {ref.nit}, "
          f"max|x - 1| = {np.abs(ref.x - 1).max():.1e}, {ref.message}")
