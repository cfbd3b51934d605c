"""Loads: a batch of 1e6 tiny fits and an L-BFGS-B problem with n = 1e7.

Each workload runs in its own subprocess, which reports its wall time (first call,
compilation included, and a second, warm call) and its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), together with the resident memory
after importing JAX (the baseline every JAX process pays).

* ``fits``: ``jax.jit(jax.vmap(least_squares))`` over N data sets of the 3-parameter
  model ``a + b exp(c t)`` on 8 points (float64, trf, autodiff Jacobian), N = 1e6.
* ``lbfgsb``: ``minimize(method='L-BFGS-B')`` of a bounded coupled quadratic
  ``0.5 sum w (x - c)^2 + 0.25 sum (x[i+1] - x[i])^2`` with box [-0.5, 0.5] (about a
  third of the bounds active at the solution), n = 1e7, m = 10, float64, autodiff
  gradient.

Run from the repository root: ``python bench/bench_loads.py [--quick]`` (``--quick``:
N = 1e4 fits, n = 1e5). Writes ``bench/results/loads.md`` and ``bench/results/loads.json``.
"""

import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def worker_fits(n_fits):
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jaxopt_lsq as jl

    base = _rss_gib()
    t = np.linspace(0.0, 3.0, 8)

    def fun(x, t, y):
        return x[0] + x[1] * jnp.exp(x[2] * t) - y

    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(0.5, 1.5, n_fits), rng.uniform(1.0, 3.0, n_fits), -rng.uniform(0.5, 2.0, n_fits)
    ys = a[:, None] + b[:, None] * np.exp(c[:, None] * t) + 0.01 * rng.standard_normal((n_fits, t.size))
    x0 = np.tile([1.0, 1.0, -1.0], (n_fits, 1))

    @jax.jit
    def solve(x0, ys):
        res = jax.vmap(lambda x0, y: jl.least_squares(fun, x0, args=(t, y)))(x0, ys)
        return res.x, res.status, res.nfev

    t0 = time.perf_counter()
    x, status, nfev = jax.block_until_ready(solve(x0, ys))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    x, status, nfev = jax.block_until_ready(solve(x0, ys))
    warm = time.perf_counter() - t0
    status = np.asarray(status)
    return dict(workload="vmap least_squares, a+b*exp(c*t), 8 points", solver="jaxopt_lsq trf",
                n=n_fits, first_call_s=first, time_s=warm, fits_per_s=n_fits / warm,
                converged=int(np.sum(status > 0)), mean_nfev=float(np.mean(np.asarray(nfev))),
                peak_rss_gib=_rss_gib(), baseline_rss_gib=base)


def worker_lbfgsb(n):
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jaxopt_lsq as jl

    base = _rss_gib()

    def f(x, c, w):
        return 0.5 * jnp.sum(w * (x - c) ** 2) + 0.25 * jnp.sum((x[1:] - x[:-1]) ** 2)

    rng = np.random.default_rng(1)
    c = rng.uniform(-1.5, 1.5, n)
    w = rng.uniform(0.5, 2.0, n)
    bounds = np.stack([np.full(n, -0.5), np.full(n, 0.5)], axis=1)
    x0 = np.zeros(n)
    t0 = time.perf_counter()
    res = jl.minimize(f, x0, args=(c, w), bounds=bounds)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jl.minimize(f, x0, args=(c, w), bounds=bounds)
    warm = time.perf_counter() - t0
    active = float(np.mean(np.abs(res.x) >= 0.5))
    return dict(workload="L-BFGS-B bounded coupled quadratic, m=10", solver="jaxopt_lsq",
                n=n, first_call_s=first, time_s=warm, nit=res.nit, nfev=res.nfev,
                status=res.status, active_fraction=active, time_per_iter_s=warm / max(res.nit, 1),
                peak_rss_gib=_rss_gib(), baseline_rss_gib=base)


def run_worker(kind, size):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(size)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    quick = "--quick" in sys.argv
    sizes = {"fits": 10_000 if quick else 1_000_000, "lbfgsb": 100_000 if quick else 10_000_000}
    records = []
    for kind, size in sizes.items():
        rec = run_worker(kind, size)
        print(json.dumps(rec))
        records.append(rec)
    import jax
    import numpy as np
    import scipy

    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"loads{suffix}.json").write_text(json.dumps(records, indent=1))
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# Loads: 1e6 tiny fits, L-BFGS-B with n = 1e7",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{mem_total:.1f} GiB RAM (CPU only); {datetime.date.today()}; jax {jax.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, Python {platform.python_version()}.",
        f"Reproduce: `python bench/bench_loads.py{' --quick' if quick else ''}` (each workload in "
        "its own process; peak resident memory from `getrusage`). The machine was shared "
        "with other jobs: times are indicative.",
        "",
        "| workload | size | first call (s) | warm call (s) | throughput | peak RSS (GiB) | "
        "RSS after importing JAX (GiB) | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "fits_per_s" in r:
            thr = f"{r['fits_per_s']:,.0f} fits/s"
            outcome = f"{r['converged']:,} of {r['n']:,} converged, mean nfev {r['mean_nfev']:.1f}"
        else:
            thr = f"{r['time_per_iter_s']:.2f} s/iteration"
            outcome = (f"status {r['status']}, nit {r['nit']}, nfev {r['nfev']}, "
                       f"{100 * r['active_fraction']:.0f}% of bounds active")
        lines.append(f"| {r['workload']} | {r['n']:.0e} | {r['first_call_s']:.1f} | "
                     f"{r['time_s']:.1f} | {thr} | {r['peak_rss_gib']:.2f} | "
                     f"{r['baseline_rss_gib']:.2f} | {outcome} |")
    (RESULTS / f"loads{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if "--worker" in sys.argv:
        i = sys.argv.index("--worker")
        kind, size = sys.argv[i + 1], int(sys.argv[i + 2])
        rec = {"fits": worker_fits, "lbfgsb": worker_lbfgsb}[kind](size)
        print(json.dumps(rec))
    else:
        main()
