"""The L-BFGS-B iteration log behind ``iprint``/``disp``.

SciPy 1.17 deprecates both options and prints nothing; SciPy <= 1.14 (the Fortran
code) printed a log for ``iprint >= 0``, ``disp`` overriding ``iprint``. We warn as
SciPy 1.17 does and print the old log, through ``jax.debug.callback`` (so also under
``jax.jit``). The iterates in the log are checked against SciPy's own path.
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_lsq as jl
from jaxopt_lsq._solvers._report import _fortran_d


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


X0 = np.array([-1.2, 1.0, 0.8])
AT_ITERATE = re.compile(r"^At iterate\s+(\d+)\s+f=\s*(\S+)\s+\|proj g\|=\s*(\S+)$", re.M)


def fortran_float(s):
    return float(s.replace("D", "E"))


def quiet_minimize(*args, **kwargs):
    with pytest.warns(DeprecationWarning, match="`disp` and `iprint` options"):
        return jl.minimize(*args, **kwargs)


def scipy_path(x0, bounds=None):
    """SciPy's f and projected-gradient norm at x0 and after each iteration."""
    lb, ub = (np.full(x0.size, -np.inf), np.full(x0.size, np.inf)) if bounds is None else (
        np.array(bounds, float).T)

    def pg(x):
        g = so.rosen_der(x)
        p = np.where(g < 0, np.maximum(x - ub, g), np.minimum(x - lb, g))
        return np.max(np.abs(p))

    x = np.clip(x0, lb, ub)
    path = [(so.rosen(x), pg(x))]
    res = so.minimize(so.rosen, x0, jac=so.rosen_der, method="L-BFGS-B", bounds=bounds,
                      callback=lambda intermediate_result: path.append(
                          (intermediate_result.fun, pg(intermediate_result.x))))
    return path, res


def test_fortran_number_format():
    assert _fortran_d(24.0, 12, 5) == " 2.40000D+01"
    assert _fortran_d(-4.379e-6, 10, 3) == "-4.379D-06"
    assert _fortran_d(1.5e-120, 12, 5) == " 1.50000-120"  # three-digit exponents drop the D


def test_default_and_negative_iprint_print_nothing(capsys):
    jl.minimize(rosen, X0, method="L-BFGS-B")
    quiet_minimize(rosen, X0, method="L-BFGS-B", options=dict(iprint=-1))
    quiet_minimize(rosen, X0, method="L-BFGS-B", options=dict(disp=0, iprint=50))  # disp=0 wins
    assert capsys.readouterr().out == ""


def test_disp_prints_the_fortran_log_along_scipys_path(capsys):
    res = quiet_minimize(rosen, X0, method="L-BFGS-B", options=dict(disp=True))
    out = capsys.readouterr().out
    path, ref = scipy_path(X0)
    assert out.startswith("RUNNING THE L-BFGS-B CODE\n\n           * * *\n\nMachine precision = 2.220D-16\n")
    assert " N =            3     M =           10\n This problem is unconstrained.\n" in out
    assert "At X0         0 variables are exactly at the bounds" in out
    rows = [(int(k), fortran_float(f), fortran_float(p)) for k, f, p in AT_ITERATE.findall(out)]
    assert [k for k, _, _ in rows] == list(range(res.nit + 1))
    assert res.nit == ref.nit
    # To the printed 6 digits while the paths agree (later, rounding makes them drift).
    for (k, f, p), (f_ref, p_ref) in list(zip(rows, path))[:15]:
        np.testing.assert_allclose([f, p], [f_ref, p_ref], rtol=1e-5, err_msg=f"iterate {k}")
    summary = out.split("   N    Tit     Tnf  Tnint  Skip  Nact     Projg        F\n")[1].splitlines()
    n, tit, tnf, tnint, skip, nact, projg, f = summary[0].split()
    assert (int(n), int(tit), int(tnf), tnint, int(skip), int(nact)) == (3, res.nit, res.njev, "-", 0, 0)
    assert fortran_float(projg) == pytest.approx(np.abs(res.jac).max(), rel=1e-3)
    assert float(summary[1].split("=")[1]) == pytest.approx(res.fun, rel=1e-15)
    assert out.rstrip().endswith("\n" + res.message)


def test_iprint_every_k_iterations_and_under_jit(capsys):
    quiet_minimize(rosen, X0, method="L-BFGS-B", options=dict(iprint=5))
    eager = capsys.readouterr().out
    iterates = [int(k) for k, _, _ in AT_ITERATE.findall(eager)]
    assert iterates and all(k % 5 == 0 for k in iterates) and iterates == list(range(0, iterates[-1] + 1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        solve = jax.jit(lambda x0: jl.minimize(rosen, x0, method="L-BFGS-B", options=dict(iprint=5)).x)
        jax.block_until_ready(solve(jnp.asarray(X0)))
    assert capsys.readouterr().out == eager


def test_fmin_l_bfgs_b_iprint_101_bounded_infeasible_start(capsys):
    bounds = [(0.0, 0.5)] * 3
    with pytest.warns(DeprecationWarning):
        x, f, d = jl.fmin_l_bfgs_b(rosen, np.array([-1.3, 0.7, 3.0]), fprime=jax.grad(rosen),
                                   bounds=bounds, iprint=101)
    out = capsys.readouterr().out
    assert " The initial X is infeasible.  Restart with its projection." in out
    assert "At X0         3 variables are exactly at the bounds" in out
    assert "This problem is unconstrained" not in out
    assert out.count(" LINE SEARCH") == d["nit"]  # one per iteration from level 99
    assert out.count("\nG = ") == d["nit"] and out.count("\nX = ") == d["nit"] + 1  # > 100
    assert "\nX0 = -1.3000D+00  7.0000D-01  3.0000D+00" in out
    path, ref = scipy_path(np.array([-1.3, 0.7, 3.0]), bounds)
    rows = AT_ITERATE.findall(out)
    assert len(rows) == d["nit"] + 1 == ref.nit + 1
    np.testing.assert_allclose([fortran_float(r[1]) for r in rows], [p[0] for p in path], rtol=1e-5)
    nact = int(out.split("Projg        F\n")[1].split()[5])
    assert nact == np.sum((x <= 0) | (x >= 0.5)) == 1
