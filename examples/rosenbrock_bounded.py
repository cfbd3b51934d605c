"""Rosenbrock with a bound: SciPy's second least_squares example.

We require x[1] >= 1.5 (x[0] free), which makes the unconstrained minimum [1, 1]
infeasible: the solution lies on the bound, at about [1.2244, 1.5], and
``active_mask`` reports the active lower bound. All three methods that accept bounds
(trf, dogbox; lm does not take bounds) are compared with SciPy, and the same
problem is solved as a scalar minimisation with L-BFGS-B.

Run:  python examples/rosenbrock_bounded.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import least_squares, minimize  # noqa: E402


def fun_rosenbrock(x):
    return jnp.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def jac_rosenbrock(x):
    return jnp.array([[-20 * x[0], 10.0], [-1.0, 0.0]])


x0 = np.array([2.0, 2.0])
bounds = ([-np.inf, 1.5], np.inf)  # SciPy's form: (lower, upper), scalars broadcast

try:
    import scipy.optimize as sopt
except ImportError:
    sopt = None
    print("(SciPy is not installed: skipping the comparison)")

print(f"{'solver':<22}{'x':<30}{'cost':>14}{'optimality':>12}  active_mask")
for method in ("trf", "dogbox"):
    res = least_squares(fun_rosenbrock, x0, jac_rosenbrock, bounds=bounds, method=method)
    print(f"{'jaxopt_lsq ' + method:<22}{np.array2string(res.x, precision=8):<30}"
          f"{res.cost:>14.10f}{res.optimality:>12.1e}  {res.active_mask}")
    if sopt is not None:
        ref = sopt.least_squares(
            lambda x: np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]]), x0,
            lambda x: np.array([[-20 * x[0], 10.0], [-1.0, 0.0]]), bounds=bounds, method=method)
        print(f"{'SciPy ' + method:<22}{np.array2string(ref.x, precision=8):<30}"
              f"{ref.cost:>14.10f}{ref.optimality:>12.1e}  {ref.active_mask}")
        assert abs(res.cost - ref.cost) <= 1e-8 * ref.cost, "cost differs from SciPy's"


# The same problem as a scalar minimisation: L-BFGS-B with the same bound, written as
# (min, max) pairs (None = unbounded), as scipy.optimize.minimize takes them.
def cost(x):
    return 0.5 * jnp.sum(fun_rosenbrock(x) ** 2)


res = minimize(cost, x0, method="L-BFGS-B", bounds=[(None, None), (1.5, None)])
print(f"\nL-BFGS-B: x = {np.array2string(res.x, precision=8)}, f = {res.fun:.10f}, "
      f"nit = {res.nit}, {res.message}")
if sopt is not None:
    ref = sopt.minimize(lambda x: 0.5 * (100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2), x0,
                        method="L-BFGS-B", bounds=[(None, None), (1.5, None)])
    print(f"SciPy   : x = {np.array2string(ref.x, precision=8)}, f = {ref.fun:.10f}, "
          f"nit = {ref.nit}, {ref.message}")
