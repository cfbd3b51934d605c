"""curve_fit against SciPy 1.17, and its JAX-native uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxopt_lsq import OptimizeWarning, curve_fit


def decay(xp):
    def f(x, a, b, c):
        return a * xp.exp(-b * x) + c

    return f


# One model function object: curve_fit caches its residual function, and the solver its
# compiled solve, on it, so cases with equal settings (sigma and bounds are data) share one.
DECAY = decay(jnp)
X = np.linspace(0, 4, 50)
Y = decay(np)(X, 2.5, 1.3, 0.5) + 0.2 * np.random.default_rng(1).normal(size=X.size)
SIG = 0.1 + 0.1 * X
COV = np.diag(SIG**2) + 0.001

CASES = [
    dict(),  # SciPy's default for an unbounded fit: method='lm'
    dict(sigma=SIG),
    dict(sigma=COV, absolute_sigma=True),
    dict(method="dogbox", bounds=(0, [3.0, 1.0, 0.5])),
    dict(method="trf"),
    dict(bounds=(0, [3.0, 1.0, 0.5])),
    dict(method="trf", sigma=SIG),
    dict(method="trf", sigma=SIG, absolute_sigma=True),
    dict(method="trf", sigma=COV),
    dict(method="trf", sigma=0.3),
    dict(method="trf", p0=[2.0, 1.0, 0.1], loss="soft_l1", f_scale=0.1),
]


@pytest.mark.parametrize("kw", CASES, ids=[str({k: np.shape(v) if isinstance(v, np.ndarray) else v for k, v in c.items()}) for c in CASES])
def test_matches_scipy(kw):
    popt, pcov = curve_fit(DECAY, X, Y, **kw)
    ref_popt, ref_pcov = so.curve_fit(decay(np), X, Y, **kw)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-5, atol=1e-12)


def test_full_output_and_numpy_model():
    popt, pcov, info, mesg, ier = curve_fit(decay(np), X, Y, method="trf", full_output=True)
    ref = so.curve_fit(decay(np), X, Y, method="trf", full_output=True)
    np.testing.assert_allclose(popt, ref[0], rtol=1e-6)
    assert info["nfev"] == ref[2]["nfev"] and ier == ref[4] and mesg == ref[3]
    np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], rtol=1e-6, atol=1e-9)


def test_p0_from_signature_and_bounds_midpoint():
    popt, _ = curve_fit(DECAY, X, Y, bounds=([0, 0, 0], [5, 5, 5]))
    ref, _ = so.curve_fit(decay(np), X, Y, bounds=([0, 0, 0], [5, 5, 5]))
    np.testing.assert_allclose(popt, ref, rtol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [dict(sigma=np.ones(3)), dict(args=(1,)), dict(sigma=-np.eye(50)), dict(method="lm", bounds=(0, 5)),
     dict(p0=np.ones(60), method="lm")],
    ids=["sigma-shape", "args", "sigma-not-pd", "lm-bounds", "lm-more-params-than-data"],
)
def test_errors_match_scipy(kw):
    with pytest.raises(Exception) as expected:
        so.curve_fit(decay(np), X, Y, **kw)
    with pytest.raises(type(expected.value)) as got:
        curve_fit(DECAY, X, Y, **kw)
    assert str(got.value) == str(expected.value)


def test_cannot_infer_parameters():
    with pytest.raises(ValueError, match="Unable to determine number of fit parameters."):
        curve_fit(lambda *a: a[0], X, Y)


def test_empty_and_nonfinite_data():
    with pytest.raises(ValueError, match="`ydata` must not be empty!"):
        curve_fit(DECAY, [], [], method="trf", p0=[1, 1, 1])
    y = Y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError):
        curve_fit(DECAY, X, y, method="trf")
    popt, _ = curve_fit(DECAY, X, y, method="trf", nan_policy="omit")
    keep = ~np.isnan(y)
    ref, _ = so.curve_fit(decay(np), X[keep], y[keep], method="trf")
    np.testing.assert_allclose(popt, ref, rtol=1e-6)


def test_covariance_warning_when_exactly_determined():
    # A line through two points: no degrees of freedom left for the reduced chi-square.
    def line(x, a, b):
        return a * x + b

    with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        popt, pcov = curve_fit(line, X[:2], Y[:2], method="trf")
    with pytest.warns(so.OptimizeWarning):
        ref, _ = so.curve_fit(line, X[:2], Y[:2], method="trf")
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    assert np.all(np.isinf(pcov))


def test_failure_raises_runtime_error():
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        curve_fit(DECAY, X, Y, method="trf", max_nfev=2)


def test_vmap_jit_grad_and_no_retrace():
    calls = []

    def f(x, a, b, c):
        calls.append(1)
        return a * jnp.exp(-b * x) + c

    ys = jnp.stack([jnp.asarray(Y), 1.1 * jnp.asarray(Y), jnp.asarray(Y) + 0.3])
    fit = jax.jit(jax.vmap(lambda y: curve_fit(f, X, y, p0=[1.0, 1.0, 1.0], method="trf")))
    P, C = fit(ys)
    for i in range(3):
        ref, ref_cov = so.curve_fit(decay(np), X, np.asarray(ys[i]), p0=[1.0, 1.0, 1.0], method="trf")
        np.testing.assert_allclose(P[i], ref, rtol=1e-6)
        np.testing.assert_allclose(C[i], ref_cov, rtol=1e-5)
    # Differentiable: d popt / d ydata by implicit differentiation.
    g = jax.grad(lambda y: curve_fit(f, X, y, p0=[1.0, 1.0, 1.0], method="trf", xtol=1e-12, ftol=1e-12)[0][0])(jnp.asarray(Y))
    eps = 1e-3
    e = np.zeros_like(Y)
    e[5] = eps
    fd = (so.curve_fit(decay(np), X, Y + e, p0=[1, 1, 1], xtol=1e-14, ftol=1e-14)[0][0]
          - so.curve_fit(decay(np), X, Y - e, p0=[1, 1, 1], xtol=1e-14, ftol=1e-14)[0][0]) / (2 * eps)
    np.testing.assert_allclose(g[5], fd, rtol=1e-4)
    # New data, same shapes: no new trace of f.
    curve_fit(f, X, Y, p0=[1.0, 1.0, 1.0], method="trf")
    n = len(calls)
    curve_fit(f, X, Y * 1.2, p0=[1.0, 1.0, 1.0], method="trf")
    assert len(calls) == n
