"""Switching existing scipy.optimize code to jaxopt_lsq by changing the import.

``analysis`` below is ordinary SciPy code: plain NumPy functions, ``curve_fit``,
``least_squares`` with a robust loss and bounds, ``minimize(method="L-BFGS-B")``. It
is run twice, once with ``opt = scipy.optimize`` and once with ``opt = jaxopt_lsq``,
and the answers are printed side by side. Nothing in it knows about JAX: jaxopt_lsq
notices that these functions cannot be traced by JAX, runs them on the host through
``jax.pure_callback`` and differentiates them with SciPy's finite-difference rules, so
the results agree with SciPy's to the last digits. Writing the functions with
``jax.numpy`` instead unlocks autodiff, jit, vmap and grad (see the other examples).

Run:  python examples/replace_scipy.py
"""

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)  # SciPy computes in float64


def analysis(opt):
    """Existing SciPy code: only ``opt`` (the module) changes."""
    out = {}

    # curve_fit of a Gaussian peak on a background, with per-point uncertainties.
    def peak(x, height, center, width, background):
        return height * np.exp(-0.5 * ((x - center) / width) ** 2) + background

    rng = np.random.default_rng(42)
    xdata = np.linspace(-5, 5, 60)
    sigma = 0.05 + 0.02 * np.abs(xdata)
    ydata = peak(xdata, 3.0, 0.4, 1.1, 0.5) + sigma * rng.standard_normal(xdata.size)
    popt, pcov = opt.curve_fit(peak, xdata, ydata, p0=[1, 0, 1, 0], sigma=sigma,
                               absolute_sigma=True)
    out["curve_fit popt"] = popt
    out["curve_fit perr"] = np.sqrt(np.diag(pcov))

    # least_squares: a bounded robust fit of a rational function.
    def residuals(p, x, y):
        return p[0] * x / (p[1] + x) - y

    x = np.linspace(0.1, 5, 25)
    y = 2.0 * x / (0.7 + x) + 0.05 * rng.standard_normal(x.size)
    y[[3, 17]] += 1.0  # two outliers
    res = opt.least_squares(residuals, [1.0, 1.0], bounds=([0, 0.1], [10, 10]),
                            loss="huber", f_scale=0.05, args=(x, y))
    out["least_squares x"] = res.x
    out["least_squares nfev"] = res.nfev

    # minimize with L-BFGS-B: a bounded Rosenbrock in 5 variables, NumPy gradient.
    def rosen(z):
        return np.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2)

    def rosen_der(z):
        g = np.zeros_like(z)
        g[:-1] = -400 * z[:-1] * (z[1:] - z[:-1] ** 2) - 2 * (1 - z[:-1])
        g[1:] += 200 * (z[1:] - z[:-1] ** 2)
        return g

    r = opt.minimize(rosen, np.full(5, 0.3), jac=rosen_der, method="L-BFGS-B",
                     bounds=[(0, 0.8)] * 5)
    out["minimize x"] = r.x
    out["minimize nit"] = r.nit
    return out


import jaxopt_lsq  # noqa: E402

ours = analysis(jaxopt_lsq)
try:
    import scipy.optimize
except ImportError:
    scipy = None
    print("(SciPy is not installed: showing jaxopt_lsq's answers only)")

theirs = analysis(scipy.optimize) if scipy is not None else None
np.set_printoptions(precision=7, suppress=True)
for key, value in ours.items():
    print(f"{key:<20} jaxopt_lsq: {value}")
    if theirs is not None:
        print(f"{'':<20} SciPy     : {theirs[key]}")
if theirs is not None:
    worst = max(np.max(np.abs(np.asarray(ours[k]) - np.asarray(theirs[k]))) for k in ours)
    print(f"largest difference from SciPy over all outputs: {worst:.1e}")
    assert worst < 1e-6
