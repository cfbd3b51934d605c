"""Large sparse problems: the Broyden tridiagonal system of SciPy's documentation.

``fun(x) = (3 - x) x + 1 - x_{i-1} - 2 x_{i+1}`` from ``x0 = -1``, n = 1e4, 1e5, 1e6,
solved to a zero residual by ``least_squares(method='trf')``, side by side in one
process:

* SciPy: its documentation's call, ``jac_sparsity`` (a ``lil_array``), NumPy ``fun``,
  sparse 2-point finite differences, ``tr_solver='lsmr'`` (chosen by the sparsity).
* ours, autodiff + sparsity: the same call with a ``jax.numpy`` fun (compressed forward
  mode, one ``jvp`` per colour).
* ours, FD + sparsity: the same call with ``jac='2-point'`` (SciPy's finite differences,
  one evaluation per colour).
* ours, FD + sparsity, colouring recomputed: as above with our colouring cache emptied
  before each call (SciPy recomputes its grouping on every call; we cache ours on the
  structure's content).
* ours, matrix-free: ``tr_solver='lsmr'`` with autodiff and no sparsity (the Jacobian
  is applied through ``jax.linearize`` and never formed).

Every call is the SciPy-style eager call from Python (argument checks, the sparsity
structure converted on the host, the cached compiled solve, NumPy results). Warm time:
min over the repeats, repeats interleaved across solvers; first call: trace + compile +
solve. The growth exponent is the slope of log(time) against log(n).

Run: OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python bench/bench_broyden.py [--quick]
(single-threaded BLAS for SciPy, as in bench_lbfgsb.py: on a loaded 2-core machine its
BLAS threads otherwise wait on each other, e.g. 2.9 s instead of 0.5 s at n = 1e5).
Writes bench/results/broyden.md and bench/results/broyden.json.
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import jax
import numpy as np
import scipy
import scipy.optimize as so

jax.config.update("jax_enable_x64", True)
import jaxopt_lsq  # noqa: E402
from jaxopt_lsq import _least_squares  # noqa: E402
from jaxopt_lsq import least_squares  # noqa: E402

QUICK = "--quick" in sys.argv
SIZES = [10_000, 100_000] if QUICK else [10_000, 100_000, 1_000_000]
REPEAT = 3 if QUICK else 5


def fun_broyden_np(x):
    f = (3 - x) * x + 1
    f[1:] -= x[:-1]
    f[:-1] -= 2 * x[1:]
    return f


# The jax.numpy residuals and SciPy's sparsity structure, as in the example.
sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "examples"))
from broyden_sparse import fun_broyden as fun_broyden_jnp  # noqa: E402
from broyden_sparse import sparsity_broyden  # noqa: E402


def solvers(n):
    sp = sparsity_broyden(n)
    x0 = -np.ones(n)

    def fd_cold():
        _least_squares._COLOURING_CACHE.clear()
        return least_squares(fun_broyden_jnp, x0, jac="2-point", jac_sparsity=sp)

    return {
        "SciPy trf (lsmr, sparse 2-point)": lambda: so.least_squares(fun_broyden_np, x0, jac_sparsity=sp),
        "ours autodiff + jac_sparsity": lambda: least_squares(fun_broyden_jnp, x0, jac_sparsity=sp),
        "ours 2-point + jac_sparsity": lambda: least_squares(fun_broyden_jnp, x0, jac="2-point", jac_sparsity=sp),
        "ours 2-point + jac_sparsity, colouring recomputed": fd_cold,
        "ours matrix-free autodiff (lsmr)": lambda: least_squares(fun_broyden_jnp, x0, tr_solver="lsmr"),
    }


def main():
    t_start = time.time()
    records = []
    for n in SIZES:
        runs = solvers(n)
        first, best, res = {}, {}, {}
        for name, fn in runs.items():
            t = time.perf_counter()
            res[name] = fn()
            first[name] = time.perf_counter() - t
            best[name] = np.inf
        for _ in range(REPEAT):
            for name, fn in runs.items():
                t = time.perf_counter()
                res[name] = fn()
                best[name] = min(best[name], time.perf_counter() - t)
        t_scipy = best["SciPy trf (lsmr, sparse 2-point)"]
        for name in runs:
            r = res[name]
            records.append(
                dict(
                    workload="broyden_tridiagonal",
                    solver=name,
                    n=n,
                    time_s=best[name],
                    first_call_s=first[name],
                    fits_per_s=1 / best[name],
                    nfev=int(r.nfev),
                    njev=int(r.njev),
                    cost=float(r.cost),
                    status=int(r.status),
                    speedup_vs_scipy=t_scipy / best[name],
                )
            )
            print(f"n={n:>8} {name:<52} {best[name]*1e3:9.1f} ms  first {first[name]:6.2f} s  "
                  f"nfev {int(r.nfev)}  cost {float(r.cost):.3e}  x{t_scipy / best[name]:.2f}", flush=True)
    growth = {}
    for name in solvers(10).keys():
        pts = [(r["n"], r["time_s"]) for r in records if r["solver"] == name]
        ln = np.log([p[0] for p in pts])
        lt = np.log([p[1] for p in pts])
        growth[name] = float(np.polyfit(ln, lt, 1)[0])
    write(records, growth, time.time() - t_start)


def write(records, growth, total):
    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "broyden.json").write_text(json.dumps(records, indent=1))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [
        "## Broyden tridiagonal system (SciPy's documentation example): large sparse least squares",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; jaxopt_lsq source: {rev}",
        f"- command: `OPENBLAS_NUM_THREADS=1 python bench/bench_broyden.py{' --quick' if QUICK else ''}`",
        f"- CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs), load average "
        f"at the end {load:.1f}; backend: {jax.default_backend()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, jaxopt_lsq {jaxopt_lsq.__version__}",
        "- float64, x0 = -1, method='trf', default tolerances; every call is the eager SciPy-style call "
        "(`least_squares(fun, x0, jac_sparsity=sparsity_broyden(n))`), sparsity built once per n",
        f"- warm time: min over {REPEAT} repeats interleaved across solvers; first call: trace + compile + solve",
        f"- total wall time of the run: {total:.0f} s",
        "",
        "| n | solver | warm time (ms) | speed-up vs SciPy | first call (s) | nfev | njev | cost | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['n']:,} | {r['solver']} | {r['time_s'] * 1e3:,.1f} | {r['speedup_vs_scipy']:.2f} | "
            f"{r['first_call_s']:.2f} | {r['nfev']} | {r['njev']} | {r['cost']:.2e} | {r['status']} |"
        )
    lines += ["", "Growth of the warm time with n (slope of log time vs log n):", "",
              "| solver | exponent |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in growth.items()]
    (out / "broyden.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
