"""Large sparse least squares: the Broyden tridiagonal system of SciPy's documentation.

n = 100000 variables by default. Run:

    python examples/broyden_sparse.py            # n = 100000
    python examples/broyden_sparse.py 1000       # smaller: n as an argument
    BROYDEN_N=1000 python examples/broyden_sparse.py

Three ways to give jaxopt_lsq the Jacobian's sparsity: SciPy's exact call (a
``lil_array`` structure, finite differences with one evaluation per group of columns),
the same structure with autodiff (one forward-mode product per group), and matrix-free
autodiff (``tr_solver='lsmr'``, the Jacobian is never formed).
"""

import os
import sys
import time

import jax
import numpy as np
from scipy.sparse import lil_array

jax.config.update("jax_enable_x64", True)

from jaxopt_lsq import least_squares  # noqa: E402

def fun_broyden(x):
    f = (3 - x) * x + 1
    return f.at[1:].add(-x[:-1]).at[:-1].add(-2 * x[1:])


def sparsity_broyden(n):
    sparsity = lil_array((n, n), dtype=int)
    i = np.arange(n)
    sparsity[i, i] = 1
    i = np.arange(1, n)
    sparsity[i, i - 1] = 1
    i = np.arange(n - 1)
    sparsity[i, i + 1] = 1
    return sparsity


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BROYDEN_N", 100_000))
    x0 = -np.ones(n)
    sparsity = sparsity_broyden(n)
    for label, kw in [
        ("2-point + jac_sparsity", dict(jac="2-point", jac_sparsity=sparsity)),
        ("autodiff + jac_sparsity", dict(jac_sparsity=sparsity)),
        ("matrix-free autodiff", dict(tr_solver="lsmr")),
    ]:
        t = time.perf_counter()
        res = least_squares(fun_broyden, x0, **kw)
        first = time.perf_counter() - t
        t = time.perf_counter()
        res = least_squares(fun_broyden, x0, **kw)
        warm = time.perf_counter() - t
        print(
            f"n={n} {label:<24} cost={res.cost:.3e} nfev={res.nfev} status={res.status} "
            f"time: first call {first:.2f} s (compiles), then {warm * 1e3:.1f} ms"
        )
        assert res.cost < 1e-20


if __name__ == "__main__":
    main()
