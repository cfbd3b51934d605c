"""Linear regression with L-BFGS-B: the example from SciPy's fmin_l_bfgs_b docs.

Fit y = m x + b to exact data (m = 2, b = 3) by minimising the sum of squared errors,
first without bounds (the answer is the truth), then with the bounds 0 <= m <= 5,
5 <= b <= 10, which exclude it (the answer lies on the bound b = 5).

The objective is written twice: SciPy's plain NumPy function with
``approx_grad=True`` (jaxopt_lsq runs it on the host through jax.pure_callback, with
SciPy's forward differences, so SciPy code runs unchanged), and the same function in
jax.numpy, whose gradient comes from autodiff.

Run:  python examples/lbfgsb_regression.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import fmin_l_bfgs_b  # noqa: E402

X = np.arange(0, 10, 1)
M, B = 2, 3
Y = M * X + B


def func(parameters, *args):  # SciPy's function, unchanged: NumPy only
    x = args[0]
    y = args[1]
    m, b = parameters
    y_model = m * x + b
    error = sum(np.power((y - y_model), 2))
    return error


def func_jax(parameters, x, y):  # the same in jax.numpy: differentiable, jit-able
    m, b = parameters
    return jnp.sum((y - (m * x + b)) ** 2)


initial_values = np.array([0.0, 1.0])
bounds = [(0, 5), (5, 10)]

try:
    import scipy.optimize as sopt
except ImportError:
    sopt = None
    print("(SciPy is not installed: skipping the comparison)")

print(f"{'case':<10}{'solver':<32}{'m':>12}{'b':>12}{'f':>12}{'nit':>5}{'funcalls':>9}")


def show(case, name, out):
    x, f, d = out
    print(f"{case:<10}{name:<32}{x[0]:12.8f}{x[1]:12.8f}{float(f):12.4e}{d['nit']:5d}{d['funcalls']:9d}")


for case, bnds in (("no bounds", None), ("bounded", bounds)):
    ours = fmin_l_bfgs_b(func, x0=initial_values, args=(X, Y), approx_grad=True, bounds=bnds)
    show(case, "jaxopt_lsq, NumPy func + FD", ours)
    # fprime=None and approx_grad=False mean "func returns (f, g)" in SciPy's API; a
    # separate gradient function can be given as fprime, here from jax.grad.
    show(case, "jaxopt_lsq, jax func + autodiff",
         fmin_l_bfgs_b(func_jax, x0=initial_values, fprime=jax.grad(func_jax), args=(X, Y),
                       bounds=bnds))
    if sopt is not None:
        ref = sopt.fmin_l_bfgs_b(func, x0=initial_values, args=(X, Y), approx_grad=True,
                                 bounds=bnds)
        show(case, "SciPy, NumPy func + FD", ref)
        # The same function and finite differences: the same path, up to rounding.
        assert np.allclose(ours[0], ref[0], rtol=1e-6) and ours[2]["nit"] == ref[2]["nit"]

x_opt, f_opt, info = fmin_l_bfgs_b(func_jax, initial_values, fprime=jax.grad(func_jax),
                                   args=(X, Y), bounds=bounds)
print(f"\nbounded solution: m = {x_opt[0]:.6f}, b = {x_opt[1]:.6f} (the bounds exclude the unconstrained b = 3), "
      f"task: {info['task']}, warnflag {info['warnflag']}")
