"""Robust curve fitting with outliers: SciPy's least_squares example, with its plot.

Model y = a + b exp(c t) with a = 0.5, b = 2, c = -1; 15 samples with noise 0.1 and
3 outliers (errors ten times larger). The ordinary least-squares fit (linear loss) is
pulled towards the outliers; the robust losses soft_l1 and cauchy with
``f_scale=0.1`` (the noise level: residuals much larger than 0.1 are treated as
outliers) recover the true curve. Every fit is repeated with SciPy when it is
installed, and the comparison plot (data, true curve, the three fits) is saved as
``robust_fitting.png`` -- in $JAXOPT_LSQ_EXAMPLE_OUTDIR if set, else the current
directory -- when matplotlib is installed.

Run:  python examples/robust_fitting.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import least_squares  # noqa: E402


def gen_data(t, a, b, c, noise=0.0, n_outliers=0, seed=None):
    """SciPy's data generator: the model plus Gaussian noise and a few outliers."""
    rng = np.random.default_rng(seed)
    y = a + b * np.exp(t * c)
    error = noise * rng.standard_normal(t.size)
    outliers = rng.integers(0, t.size, n_outliers)
    error[outliers] *= 10
    return y + error


a, b, c = 0.5, 2.0, -1.0
t_min, t_max, n_points = 0, 10, 15
t_train = np.linspace(t_min, t_max, n_points)
y_train = gen_data(t_train, a, b, c, noise=0.1, n_outliers=3, seed=0)


def fun(x, t, y):
    return x[0] + x[1] * jnp.exp(x[2] * t) - y


x0 = np.array([1.0, 1.0, 0.0])
# From c = 0 the Jacobian is singular. With the linear loss, trf (SciPy's and ours alike)
# then spends all 300 evaluations drifting along a flat valley to a = 5.5e3, b = -5.5e3;
# Levenberg-Marquardt (method='lm', linear loss only) converges, so the plain
# least-squares fit uses it. The robust fits use the default method, trf.
method = {"linear": "lm", "soft_l1": "trf", "cauchy": "trf"}
fits = {}
for loss in ("linear", "soft_l1", "cauchy"):
    fits[loss] = least_squares(fun, x0, loss=loss, f_scale=0.1, method=method[loss],
                               args=(t_train, y_train))

try:
    import scipy.optimize as sopt
except ImportError:
    sopt = None
    print("(SciPy is not installed: skipping the comparison)")

print(f"true parameters: a = {a}, b = {b}, c = {c}")
print(f"{'loss':<9}{'solver':<12}{'a':>9}{'b':>9}{'c':>9}{'cost':>11}{'nfev':>6}  status")
for loss, res in fits.items():
    print(f"{loss:<9}{'jaxopt_lsq':<12}" + "".join(f"{v:9.4f}" for v in res.x)
          + f"{res.cost:11.5f}{res.nfev:6d}  {res.status}")
    if sopt is not None:
        ref = sopt.least_squares(lambda x, t, y: x[0] + x[1] * np.exp(x[2] * t) - y, x0,
                                 loss=loss, f_scale=0.1, method=method[loss],
                                 args=(t_train, y_train))
        print(f"{'':<9}{'SciPy':<12}" + "".join(f"{v:9.4f}" for v in ref.x)
              + f"{ref.cost:11.5f}{ref.nfev:6d}  {ref.status}")

t_test = np.linspace(t_min, t_max, n_points * 10)
try:
    import matplotlib

    matplotlib.use("Agg")  # write a file, no window
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot (pip install matplotlib)")
else:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(t_train, y_train, "o", label="data (3 outliers)")
    ax.plot(t_test, gen_data(t_test, a, b, c), "k", linewidth=2, label="true")
    for loss, res in fits.items():
        ax.plot(t_test, gen_data(t_test, *res.x), label=f"{loss} loss")
    ax.set_xlabel("t")
    ax.set_ylabel("y")
    ax.legend()
    ax.set_title("least_squares with robust losses (jaxopt_lsq)")
    out = os.path.join(os.environ.get("JAXOPT_LSQ_EXAMPLE_OUTDIR", "."), "robust_fitting.png")
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print("plot saved to", out)
