"""L-BFGS-B benchmark: jaxopt_lsq vs SciPy.

(a) small problems (n <= 100), warm time per solve (after compilation), and per
    iteration;
(b) large bounded problems (n = 1e5, 1e6) with the *same* jitted f+g handed to SciPy:
    time per iteration, solver overhead per iteration (total minus f+g time) and the
    memory-bandwidth bound for the O(m n) work of one iteration, (8m+10) vectors of n
    doubles at the streaming bandwidth measured at the start of the run (the best of
    NumPy's dot and elementwise add, and a jitted JAX dot, on 1e7 doubles).

Run: OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python bench/bench_lbfgsb.py [--quick]
(single-threaded BLAS: on a loaded 2-core machine SciPy's L-BFGS-B otherwise spends
milliseconds per iteration waiting for BLAS threads, e.g. 256 ms instead of 1.1 ms
for Rosenbrock n=2). ``bench/run.py`` sets this.

Writes the tables to stdout and to ``bench/results/lbfgsb.md``, the records to
``bench/results/lbfgsb.json`` (``lbfgsb_quick.*`` with ``--quick``).
"""

import datetime
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so

jax.config.update("jax_enable_x64", True)
import jaxopt_lsq as jl  # noqa: E402

QUICK = "--quick" in sys.argv
M = 10  # memory size of the large problems (SciPy's default maxcor)
BW_GBS = []  # streaming bandwidth, GB/s: (best measured, JAX dot); see measure_bandwidth


def measure_bandwidth(n=10_000_000, repeat=7):
    """Streaming bandwidth of this machine now, GB/s: ``(best, jax_dot)``, the best of
    NumPy's dot (reads 2 vectors), NumPy's elementwise add (reads 2, writes 1) and a
    jitted JAX dot, and the JAX dot's alone; vectors of ``n`` doubles, far larger than
    the caches. (NumPy runs with the process's BLAS threads, one under ``run.py``.)"""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    c = np.empty_like(a)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jdot = jax.jit(jnp.dot)
    jdot(ja, jb).block_until_ready()
    (t_dot, t_add, t_jdot), _ = interleaved_best(
        [lambda: np.dot(a, b), lambda: np.add(a, b, out=c), lambda: jdot(ja, jb)], repeat)
    gbs = lambda nbytes, t: nbytes / t / 1e9  # noqa: E731
    jax_dot = gbs(16 * n, t_jdot)
    return max(gbs(16 * n, t_dot), gbs(24 * n, t_add), jax_dot), jax_dot


#: Best CPU time (all threads of this process) of the last ``interleaved_best`` call:
#: on a shared machine it is less disturbed by other processes than wall time.
LAST_CPU = []


def interleaved_best(fns, repeat):
    """Best wall time of each function over ``repeat`` rounds (one call of each per
    round, so a burst of load from other processes does not hit one of them only)."""
    best = [np.inf] * len(fns)
    cpu = [np.inf] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            jax.block_until_ready(out)
            best[i] = min(best[i], time.perf_counter() - t)
            cpu[i] = min(cpu[i], time.process_time() - c)
            outs[i] = out
    LAST_CPU[:] = cpu
    return best, outs


# --- (a) small problems -------------------------------------------------------------
def rosen(xp):
    return lambda x: xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def rosen_grad_np(x):
    g = np.zeros_like(x)
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    g[:-1] += -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    return g


def regression_problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 10))
    y = A @ np.linspace(-1, 1, 10) + 0.01 * rng.standard_normal(50)
    fj = lambda b, A, y: 0.5 * jnp.sum((A @ b - y) ** 2)  # noqa: E731

    def fgnp(b, A, y):
        r = A @ b - y
        return 0.5 * r @ r, A.T @ r

    return fj, fgnp, (A, y)


def small():
    rows = []
    cases = []
    for n in (2, 10, 100):
        for bounded in (False, True):
            bounds = [(-1.5, 0.8)] * n if bounded else None
            x0 = np.linspace(-1.2, 1.0, n)
            fnp = rosen(np)
            cases.append((f"rosenbrock n={n}{' bounded' if bounded else ''}", rosen(jnp),
                          lambda x, f=fnp: (f(x), rosen_grad_np(x)), x0, (), bounds))
    fj, fgnp, a = regression_problem()
    cases.append(("regression 50x10 bounded", fj, fgnp, np.zeros(10), a, [(-0.5, 0.5)] * 10))
    for name, fj, fgnp, x0, args, bounds in cases:
        t0 = time.perf_counter()
        res = jl.minimize(fj, x0, args=args, bounds=bounds)
        jax.block_until_ready(res.x)
        compile_s = time.perf_counter() - t0
        rep = 5 if QUICK else 30
        (t_ours, t_sp), (res, ref) = interleaved_best(
            [lambda: jl.minimize(fj, x0, args=args, bounds=bounds),
             lambda: so.minimize(fgnp, x0, args=args, jac=True, method="L-BFGS-B",
                                 bounds=bounds)], rep)
        rows.append(dict(problem=name, n=len(x0), nit=int(res.nit), sp_nit=int(ref.nit),
                         ours_ms=t_ours * 1e3, sp_ms=t_sp * 1e3, compile_s=compile_s))
    print("\n(a) small problems, warm per solve (best of repeats)")
    print(f"{'problem':30s} {'nit':>5s} {'sp nit':>6s} {'ours ms':>9s} {'scipy ms':>9s} "
          f"{'speedup':>8s} {'ours us/it':>10s} {'scipy us/it':>11s} {'compile s':>9s}")
    for r in rows:
        print(f"{r['problem']:30s} {r['nit']:5d} {r['sp_nit']:6d} {r['ours_ms']:9.3f} "
              f"{r['sp_ms']:9.3f} {r['sp_ms'] / r['ours_ms']:8.1f} "
              f"{r['ours_ms'] * 1e3 / max(r['nit'], 1):10.1f} "
              f"{r['sp_ms'] * 1e3 / max(r['sp_nit'], 1):11.1f} {r['compile_s']:9.2f}")
    _report_small(rows)


# --- (b) large bounded problems --------------------------------------------------------
def large_problem(n):
    """A chain-coupled quartic with bounds; about a third of the bounds end active."""
    rng = np.random.default_rng(n)
    c = jnp.asarray(rng.uniform(-1.5, 1.5, n))

    def f(x, c):
        return (0.5 * jnp.sum((x - c) ** 2) + 0.25 * jnp.sum((x[1:] - x[:-1]) ** 2)
                + 0.1 * jnp.sum(x ** 4))

    return f, c


def large(n, maxiter, repeat, m=M):
    f, c = large_problem(n)
    fg = jax.jit(jax.value_and_grad(f))
    x0 = np.zeros(n)
    # Bounds as arrays for both: converting a list of 1e6 (min, max) tuples costs each
    # library about 0.1 s on the host, which is no part of the solver's work.
    bounds = so.Bounds(np.full(n, -0.5), np.full(n, 0.5))
    opts = dict(maxiter=maxiter, maxcor=m)
    # f+g time
    jax.block_until_ready(fg(jnp.asarray(x0), c))
    (t_fg,), _ = interleaved_best([lambda: fg(jnp.asarray(x0), c)], 10)
    # ours: compile once, then time
    jax.block_until_ready(jl.minimize(f, x0, args=(c,), bounds=bounds, options=opts).x)

    def fg_np(x):
        v, g = fg(jnp.asarray(x), c)
        return float(v), np.asarray(g)

    (t_ours, t_sp), (res, ref) = interleaved_best(
        [lambda: jl.minimize(f, x0, args=(c,), bounds=bounds, options=opts),
         lambda: so.minimize(fg_np, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                             options=opts)], repeat)
    cpu_ours, cpu_sp = LAST_CPU
    nit, nfev = int(res.nit), int(res.nfev)
    per_ours = t_ours / nit
    per_sp = t_sp / ref.nit
    over_ours = per_ours - nfev / nit * t_fg
    over_sp = per_sp - ref.nfev / ref.nit * t_fg
    bytes_ = (8 * m + 10) * n * 8
    bound_lo, bound_hi = (bytes_ / (bw * 1e9) for bw in BW_GBS)
    x_ok = bool(np.all(np.abs(np.asarray(res.x)) <= 0.5))
    return dict(n=n, nit=nit, sp_nit=int(ref.nit), nfev=nfev, sp_nfev=int(ref.nfev),
                fg_ms=t_fg * 1e3, ours_ms=per_ours * 1e3, sp_ms=per_sp * 1e3,
                over_ours=over_ours * 1e3, over_sp=over_sp * 1e3,
                bw=(bound_lo * 1e3, bound_hi * 1e3), df=float(res.fun) - ref.fun,
                in_bounds=x_ok, cpu_ours_ms=cpu_ours / nit * 1e3,
                cpu_sp_ms=cpu_sp / ref.nit * 1e3)


_MD, _RECORDS = [], []  # the markdown report and the JSON records, filled as we go


def _report_small(rows):
    _MD.extend(["### Small problems, warm time per solve (best of repeats)", "",
                "| problem | nit (ours / SciPy) | ours ms | SciPy ms | speed-up | ours µs/it "
                "| SciPy µs/it | compile s |",
                "|---|---|---|---|---|---|---|---|"])
    for r in rows:
        us_ours = r["ours_ms"] * 1e3 / max(r["nit"], 1)
        us_sp = r["sp_ms"] * 1e3 / max(r["sp_nit"], 1)
        _MD.append(f"| {r['problem']} | {r['nit']} / {r['sp_nit']} | {r['ours_ms']:.3f} | "
                   f"{r['sp_ms']:.3f} | {r['sp_ms'] / r['ours_ms']:.1f} | {us_ours:.1f} | "
                   f"{us_sp:.1f} | {r['compile_s']:.2f} |")
        name = r["problem"]
        family = name.split(" n=")[0] + (" bounded" if name.endswith("bounded") else "")
        for solver, t, it in (("jaxopt_lsq", r["ours_ms"], r["nit"]),
                              ("SciPy", r["sp_ms"], r["sp_nit"])):
            rec = dict(workload="lbfgsb", problem=name, family=family, solver=solver,
                       n=r["n"], nit=int(it), time_s=t / 1e3,
                       time_per_iter_s=t / 1e3 / max(it, 1))
            if solver == "jaxopt_lsq":
                rec.update(compile_s=r["compile_s"], speedup_vs_scipy=r["sp_ms"] / r["ours_ms"])
            _RECORDS.append(rec)
    _MD.append("")


def _report_large(results):
    _MD.extend(["### Large bounded problems (m = 10, the same jitted f+g for both), "
                "per iteration", "",
                "| n | nit (ours / SciPy) | f+g ms | ours ms/it | SciPy ms/it | SciPy / ours "
                "| ours minus f+g | SciPy minus f+g | bandwidth bound ms | ours overhead / bound "
                "| CPU ms/it (ours / SciPy) | f - f_SciPy |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"])
    for r in results:
        ratio = r["sp_ms"] / r["ours_ms"]
        over_bound = (r["over_ours"] / r["bw"][1], r["over_ours"] / r["bw"][0])
        _MD.append(f"| {r['n']:.0e} | {r['nit']} / {r['sp_nit']} | {r['fg_ms']:.2f} | "
                   f"{r['ours_ms']:.2f} | {r['sp_ms']:.2f} | {ratio:.1f} | "
                   f"{r['over_ours']:.2f} | {r['over_sp']:.2f} | "
                   f"{r['bw'][0]:.1f}-{r['bw'][1]:.1f} | {over_bound[0]:.1f}-{over_bound[1]:.1f} "
                   f"| {r['cpu_ours_ms']:.2f} / {r['cpu_sp_ms']:.2f} | {r['df']:.1e} |")
        for solver, per_it, it, over in (("jaxopt_lsq", r["ours_ms"], r["nit"], r["over_ours"]),
                                         ("SciPy", r["sp_ms"], r["sp_nit"], r["over_sp"])):
            rec = dict(workload="lbfgsb", problem=f"bounded quartic n={r['n']}",
                       family="large bounded quartic", solver=solver, n=r["n"],
                       nit=int(it), time_s=per_it * it / 1e3,
                       time_per_iter_s=per_it / 1e3, overhead_per_iter_s=over / 1e3,
                       fg_s=r["fg_ms"] / 1e3, bw_bound_lo_s=r["bw"][0] / 1e3,
                       bw_bound_hi_s=r["bw"][1] / 1e3,
                       cpu_per_iter_s=(r["cpu_ours_ms"] if solver == "jaxopt_lsq"
                                       else r["cpu_sp_ms"]) / 1e3)
            if solver == "jaxopt_lsq":
                rec.update(scipy_time_per_iter_s=r["sp_ms"] / 1e3, speedup_vs_scipy=ratio,
                           overhead_over_bw_bound=over / r["bw"][1], f_minus_f_scipy=r["df"],
                           iterates_in_bounds=r["in_bounds"])
            _RECORDS.append(rec)
    _MD.extend([
        "",
        "*ours minus f+g* is the solver's own time per iteration (total minus the "
        "evaluations' time, `nfev / nit` evaluations per iteration); the bandwidth bound "
        f"streams (8m+10) vectors of n doubles at {BW_GBS[0]:.0f}-{BW_GBS[1]:.0f} GB/s (measured at "
        "the start of this run: the best of NumPy's dot and add, and a jitted JAX dot, on 1e7 doubles); "
        "*overhead / bound* compares the two (target: at most 2). CPU ms/it is the "
        "process's CPU time (all threads; XLA runs independent operations on two) per "
        "iteration: on a shared machine it is less disturbed by other processes than "
        "wall time.",
        "",
    ])


def _write_results():
    import scipy

    stem = "lbfgsb_quick" if QUICK else "lbfgsb"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    try:
        load = "load average %.1f %.1f %.1f at the end" % os.getloadavg()
    except OSError:  # pragma: no cover
        load = ""
    head = [
        "## L-BFGS-B: jaxopt_lsq vs SciPy", "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"CPUs, backend {jax.default_backend()}; {load}",
        f"- versions: jax {jax.__version__}, numpy {np.__version__}, scipy {scipy.__version__}",
        "- command: `OPENBLAS_NUM_THREADS=1 python bench/bench_lbfgsb.py"
        + (" --quick`" if QUICK else "`"),
        "- float64; SciPy gets the same problem (NumPy f+g for the small problems, the "
        "jitted JAX f+g for the large ones); warm times after one compiling call, best of "
        "repeats interleaved between the two libraries",
    ]
    if QUICK:
        head.append("- **--quick run: fewer repeats and sizes, numbers are rough**")
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write("\n".join(head + [""] + _MD))
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(_RECORDS, f, indent=1)


def main():
    small()
    print("\n(b) large bounded problems (m = 10, same jitted f+g for both)")
    print(f"{'n':>8s} {'nit':>4s} {'sp nit':>6s} {'f+g ms':>7s} {'ours ms/it':>10s} "
          f"{'scipy ms/it':>11s} {'ours over':>9s} {'scipy over':>10s} "
          f"{'BW bound ms':>12s} {'f-f_sp':>9s}")
    sizes = [(100_000, 30, 2)] if QUICK else [(100_000, 40, 5), (1_000_000, 15, 2)]
    BW_GBS[:] = measure_bandwidth()
    print(f"streaming bandwidth: {BW_GBS[0]:.1f} GB/s (best), {BW_GBS[1]:.1f} GB/s (JAX dot)", flush=True)
    results = []
    for n, it, rep in sizes:
        r = large(n, it, rep)
        results.append(r)
        print(f"{r['n']:8d} {r['nit']:4d} {r['sp_nit']:6d} {r['fg_ms']:7.2f} "
              f"{r['ours_ms']:10.2f} {r['sp_ms']:11.2f} {r['over_ours']:9.2f} "
              f"{r['over_sp']:10.2f} {r['bw'][0]:5.1f}-{r['bw'][1]:5.1f} {r['df']:9.1e}",
              flush=True)
    _report_large(results)
    _write_results()


if __name__ == "__main__":
    main()
