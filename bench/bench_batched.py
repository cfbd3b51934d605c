"""Batched fits: throughput (fits/s) and converged fraction, side by side in one process.

Workloads
---------
* ``decay``: N fits of ``a + b*exp(c*t)`` (50 points each, noise 0.02, starts perturbed by
  up to +-30%), float64 and float32, N = 1e4 and 1e5. Solvers: ours
  (``least_squares_batch``, method ``'lm-normal'``, inside ``jax.jit``; the default
  ``strategy='rounds'`` and the plain ``strategy='vmap'``), ours with
  ``method='trf'`` (SciPy's algorithm under vmap), jaxopt's (its defaults, and "dense":
  ``materialize_jac=True, solver='cholesky'``, its fastest setting here) and optimistix's
  Levenberg-Marquardt under ``jax.vmap`` + ``jax.jit``, and a SciPy loop (``trf``, the
  NumPy model, analytic-free defaults) on a subset, extrapolated. Everyone gets SciPy's
  default tolerances (1e-8; in float32 raised to float32's epsilon for everyone, the rule
  ours applies) and an iteration budget of 300. The float32 rows run in a child process
  with x64 disabled: with x64 on, jaxopt's default LM and optimistix's fail on float32
  inputs.
  *Converged*: the cost at the returned parameters, recomputed in float64, within 1e-6
  (relative, f64 runs) or 1e-4 (f32 runs) of the best cost any solver found for that fit.
* ``rounds``: N = 1e4 decay fits of which 1% start far away and need many more
  iterations: ``strategy='vmap'`` against ``strategy='rounds'`` (compaction between
  rounds), both inside ``jax.jit``.
* ``grad``: ``jax.grad`` of a function of all fitted rates with respect to all data
  (implicit differentiation, per-fit) against the solve itself, N = 1e4, float64.
* ``gauss2d``: the Gpufit workload: 2-D Gaussians (amplitude, x0, y0, width, offset) on
  5x5 pixels with Poisson noise, float32, ``ftol=1e-4``, at most 10 iterations
  (``max_nfev=11``), N = 1e5 and 1e6. Gpufit's published figures: 3.04 M fits/s on one
  GPU, 61 k fits/s for its CPU version.
* ``scaling``: ours (lm-normal) fits/s against the batch size, float64 and float32.

Timing: best of R calls of the jitted function, results blocked. Run as
``python bench/bench_batched.py [--quick]``; writes ``bench/results/batched.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax

# float64 runs need x64. The float32 decay rows run in a child process with x64 off
# (BENCH_X64=0): jaxopt's default LM and optimistix's LM fail on float32 inputs when
# x64 is enabled (their internals create float64 arrays), so that is the fair setting.
jax.config.update("jax_enable_x64", os.environ.get("BENCH_X64", "1") == "1")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxopt_lsq import least_squares_batch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import cpu_model  # noqa: E402
RESULTS = os.path.join(HERE, "results")
M = 50
T = np.linspace(0, 4, M)
TOL = 1e-8
BUDGET = 300


# --- problems ---------------------------------------------------------------------------
def decay(x, t, y):
    return x[0] + x[1] * jnp.exp(x[2] * t) - y


def decay_data(N, seed=0, far=0.0):
    rng = np.random.default_rng(seed)
    P = np.stack([rng.uniform(0.5, 1.5, N), rng.uniform(1, 3, N), -rng.uniform(0.5, 2, N)], 1)
    Y = P[:, :1] + P[:, 1:2] * np.exp(P[:, 2:3] * T) + 0.02 * rng.standard_normal((N, M))
    X0 = P * rng.uniform(0.7, 1.3, P.shape)
    if far:
        k = max(1, int(far * N))
        X0[rng.choice(N, k, replace=False)] = [5.0, -4.0, -0.01]
    return X0, Y


def decay_cost64(X, Y):
    X = np.asarray(X, np.float64)
    r = X[:, :1] + X[:, 1:2] * np.exp(X[:, 2:3] * T) - Y
    return 0.5 * np.sum(r * r, axis=1)


def best_of(fn, repeats):
    out = fn()
    jax.block_until_ready(out)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return best, out


# --- solvers for the decay workload -------------------------------------------------------
def ours(method, strategy="rounds"):
    @jax.jit
    def run(X0, Y):
        r = least_squares_batch(decay, X0, args=(T.astype(X0.dtype), Y), in_axes=(None, 0), method=method,
                                ftol=TOL, xtol=TOL, gtol=TOL, max_nfev=BUDGET, strategy=strategy)
        return r.x, r.status

    return run


def peer_tol(dtype):
    """The peers' tolerance: TOL, raised to the dtype's machine epsilon as ours is."""
    return max(TOL, float(np.finfo(dtype).eps))


def jaxopt_lm(**options):
    import jaxopt

    def one(x0, y):
        t, tol = T.astype(x0.dtype), peer_tol(x0.dtype)
        solver = jaxopt.LevenbergMarquardt(residual_fun=lambda x, y: decay(x, t, y), tol=tol, xtol=tol, gtol=tol,
                                           maxiter=BUDGET, **options)
        return solver.run(x0, y).params

    return jax.jit(jax.vmap(one))


def jaxopt_lm_dense():
    # jaxopt's best setting for small dense fits: the Jacobian formed with jacfwd and the
    # damped normal equations solved by Cholesky (its default is conjugate gradients on
    # Jacobian products, about 40x slower here).
    return jaxopt_lm(materialize_jac=True, solver="cholesky")


def optx_lm():
    import optimistix as optx

    def one(x0, y):
        t, tol = T.astype(x0.dtype), peer_tol(x0.dtype)
        sol = optx.least_squares(lambda x, y: decay(x, t, y), optx.LevenbergMarquardt(rtol=tol, atol=tol), x0,
                                 args=y, max_steps=BUDGET, throw=False)
        return sol.value

    return jax.jit(jax.vmap(one))


def scipy_loop(X0, Y, k):
    from scipy.optimize import least_squares as sls

    def f(x, y):
        return x[0] + x[1] * np.exp(x[2] * T) - y

    t0 = time.perf_counter()
    xs = [sls(f, X0[i], args=(Y[i],)).x for i in range(k)]
    return time.perf_counter() - t0, np.array(xs)


# --- workloads ----------------------------------------------------------------------------------
def decay_rows(N, dtype, repeats):
    """Time every solver on N decay fits in ``dtype``: ``(rows, failures)`` with rows
    ``(name, seconds, X)`` (ours first) and failures ``(name, message)``."""
    X0, Y = decay_data(N)
    X0d, Yd = X0.astype(dtype), Y.astype(dtype)
    rows, failures = [], []
    lm_normal, lm_vmap, trf = ours("lm-normal"), ours("lm-normal", "vmap"), ours("trf")
    cand = [("jaxopt_lsq lm-normal", lambda: lm_normal(X0d, Yd)[0]),
            ("jaxopt_lsq lm-normal, strategy='vmap'", lambda: lm_vmap(X0d, Yd)[0])]
    if N <= 10_000 and dtype == np.float64:
        cand.append(("jaxopt_lsq trf", lambda: trf(X0d, Yd)[0]))
    for name, builder in (("jaxopt LM (vmap)", jaxopt_lm), ("jaxopt LM dense (vmap)", jaxopt_lm_dense),
                          ("optimistix LM (vmap)", optx_lm)):
        try:
            fn = builder()
            cand.append((name, lambda fn=fn: fn(X0d, Yd)))
        except ImportError:
            failures.append((name, "not installed"))
    for name, call in cand:
        # Peers that take seconds per call at the largest size: one timed call.
        reps = repeats if (N <= 10_000 or name.startswith("jaxopt_lsq")) else 1
        try:
            t, X = best_of(call, reps)
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            failures.append((name, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"))
            continue
        rows.append((name, t, np.asarray(X, np.float64)))
    return rows, failures


def decay_rows_child(N, repeats):
    """``decay_rows(N, float32)`` in a child process with x64 disabled."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.npz")
        env = dict(os.environ, BENCH_X64="0")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child-f32", str(N), "--repeats", str(repeats),
                        "--child-out", out], env=env, check=True)
        z = np.load(out, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        rows = [(name, t, z[f"X{i}"]) for i, (name, t) in enumerate(meta["rows"])]
        return rows, [tuple(f) for f in meta["failures"]]


def _child_f32(N, repeats, out):
    assert not jax.config.jax_enable_x64
    rows, failures = decay_rows(N, np.float32, repeats)
    meta = json.dumps(dict(rows=[(name, t) for name, t, _ in rows], failures=failures))
    np.savez(out, meta=np.array(meta), **{f"X{i}": X for i, (_, _, X) in enumerate(rows)})


def run_decay(sizes, repeats, records, lines):
    lines += ["## Decay fits a + b exp(c t), 50 points", "",
              "float32 rows: every solver in a child process with x64 disabled (with x64 enabled, jaxopt's "
              "default LM and optimistix's LM fail on float32 inputs).", "",
              "| N | dtype | solver | time (s) | fits/s | converged | vs ours |", "|---|---|---|---|---|---|---|"]
    for N in sizes:
        X0, Y = decay_data(N)
        for dtype in (np.float64, np.float32):
            if dtype == np.float64:
                rows, failures = decay_rows(N, dtype, repeats)
            else:
                rows, failures = decay_rows_child(N, repeats)
            for name, msg in failures:
                lines.append(f"| {N} | {np.dtype(dtype).name} | {name} | failed: {msg} | | | |")
            k = min(N, 300)
            t_sp, X_sp = scipy_loop(X0, Y, k)
            costs = {name: decay_cost64(X, Y) for name, _, X in rows}
            best = np.min(np.stack(list(costs.values())), axis=0)
            best[:k] = np.minimum(best[:k], decay_cost64(X_sp, Y[:k]))
            rtol = 1e-6 if dtype == np.float64 else 1e-4

            def conv(c, b):
                return float(np.mean(c <= b * (1 + rtol) + 1e-12))

            ours_t = rows[0][1]
            for name, t, X in rows:
                c = conv(costs[name], best)
                records.append(dict(workload="decay", solver=name, dtype=np.dtype(dtype).name, batch=N, time_s=t,
                                    fits_per_s=N / t, converged=c))
                lines.append(f"| {N} | {np.dtype(dtype).name} | {name} | {t:.4f} | {N / t:,.0f} | {c:.4f} | "
                             f"{t / ours_t:.1f}x |")
            if dtype == np.float64:
                c = conv(decay_cost64(X_sp, Y[:k]), best[:k])
                t_full = t_sp * N / k
                records.append(dict(workload="decay", solver="SciPy trf loop", dtype="float64", batch=N,
                                    time_s=t_full, fits_per_s=N / t_full, converged=c))
                lines.append(f"| {N} | float64 | SciPy trf loop ({k} fits, extrapolated) | {t_full:.2f} | "
                             f"{N / t_full:,.0f} | {c:.4f} | {t_full / ours_t:.0f}x |")
            print("\n".join(lines[-(len(rows) + len(failures) + (dtype == np.float64)):]), flush=True)
    lines.append("")


def run_rounds(N, repeats, records, lines):
    X0, Y = decay_data(N, seed=1, far=0.01)
    plain, rounds = ours("lm-normal", "vmap"), ours("lm-normal", "rounds")
    t_v, (Xv, sv) = best_of(lambda: plain(X0, Y), repeats)
    t_r, (Xr, sr) = best_of(lambda: rounds(X0, Y), repeats)
    both = (np.asarray(sv) > 0) & (np.asarray(sr) > 0)
    same = bool(np.allclose(np.asarray(Xv)[both], np.asarray(Xr)[both], rtol=1e-10))
    nfev = least_squares_batch(decay, X0, args=(T, Y), in_axes=(None, 0), max_nfev=BUDGET).nfev
    lines += ["## A batch held back by its slowest fits: plain vmap vs rounds with compaction", "",
              f"N = {N} decay fits, 1% started far away (nfev: median {np.median(nfev):.0f}, max {nfev.max()}).", "",
              "| strategy | time (s) | fits/s | same x (converged fits) |", "|---|---|---|---|",
              f"| vmap (one loop until the slowest fit) | {t_v:.4f} | {N / t_v:,.0f} | - |",
              f"| rounds (1 evaluation, then compact; the default) | {t_r:.4f} | {N / t_r:,.0f} | {same} |", ""]
    for name, t in (("vmap", t_v), ("rounds", t_r)):
        records.append(dict(workload="rounds", solver=name, dtype="float64", batch=N, time_s=t, fits_per_s=N / t))


def run_grad(N, repeats, records, lines):
    X0, Y = decay_data(N, seed=2)
    X0j, Yj = jnp.asarray(X0), jnp.asarray(Y)

    def rates(Y):
        return least_squares_batch(decay, X0j, args=(T, Y), in_axes=(None, 0)).x[:, 2]

    solve = jax.jit(rates)
    grad = jax.jit(jax.grad(lambda Y: jnp.sum(rates(Y))))
    t_s, _ = best_of(lambda: solve(Yj), repeats)
    t_g, _ = best_of(lambda: grad(Yj), repeats)
    lines += ["## Gradient through the fits (implicit differentiation)", "",
              "The gradient runs the solve, then the implicit tangent: its extra cost is "
              "(grad - solve) / solve, in solves.", "",
              "| N | solve (s) | grad of solve (s) | grad / solve | extra cost of the gradient (solves) |",
              "|---|---|---|---|---|",
              f"| {N} | {t_s:.4f} | {t_g:.4f} | {t_g / t_s:.2f} | {t_g / t_s - 1:.2f} |", ""]
    records.append(dict(workload="grad", solver="solve", dtype="float64", batch=N, time_s=t_s))
    records.append(dict(workload="grad", solver="grad", dtype="float64", batch=N, time_s=t_g))


def gauss_data(N, seed=3):
    rng = np.random.default_rng(seed)
    true = np.stack([rng.uniform(200, 500, N), rng.uniform(1.5, 2.5, N), rng.uniform(1.5, 2.5, N),
                     rng.uniform(0.8, 1.2, N), rng.uniform(5, 15, N)], 1).astype(np.float32)
    yy, xx = np.mgrid[0:5, 0:5].astype(np.float32)
    clean = true[:, :1, None] * np.exp(-((xx - true[:, 1, None, None]) ** 2 + (yy - true[:, 2, None, None]) ** 2)
                                       / (2 * true[:, 3, None, None] ** 2)) + true[:, 4, None, None]
    data = rng.poisson(clean).astype(np.float32).reshape(N, 25)
    p0 = (true * rng.uniform(0.9, 1.1, true.shape)).astype(np.float32)
    return p0, data, true, xx.ravel(), yy.ravel()


def spot_residuals(p, xx, yy, d):
    return p[0] * jnp.exp(-((xx - p[1]) ** 2 + (yy - p[2]) ** 2) / (2 * p[3] ** 2)) + p[4] - d


def run_gauss(sizes, repeats, records, lines):
    lines += ["## 2-D Gaussian spots (Gpufit's workload): 5x5 pixels, 5 parameters, float32, tol 1e-4, "
              "<= 10 iterations", "", "| N | device | time (s) | fits/s | converged (status > 0) | "
              "median |x0 error| (px) |", "|---|---|---|---|---|---|"]

    @jax.jit
    def run(p0, xx, yy, data):
        r = least_squares_batch(spot_residuals, p0, args=(xx, yy, data), in_axes=(None, None, 0), ftol=1e-4,
                                xtol=None, gtol=None, max_nfev=11)
        return r.x, r.status

    for N in sizes:
        p0, data, true, xx, yy = gauss_data(N)
        t, (X, status) = best_of(lambda: run(p0, xx, yy, data), repeats)
        X, status = np.asarray(X), np.asarray(status)
        conv = float(np.mean(status > 0))
        err = float(np.median(np.abs(X[:, 1] - true[:, 1])))
        dev = jax.devices()[0].device_kind
        records.append(dict(workload="gauss2d", solver="jaxopt_lsq lm-normal", dtype="float32", batch=N,
                            time_s=t, fits_per_s=N / t, converged=conv, device=dev))
        lines.append(f"| {N} | {dev} | {t:.4f} | {N / t:,.0f} | {conv:.4f} | {err:.3f} |")
        print(lines[-1], flush=True)
    lines.append("")


def run_scaling(sizes, repeats, records, lines):
    lines += ["## Throughput against batch size (lm-normal, decay fits)", "", "| N | float64 fits/s | float32 fits/s |",
              "|---|---|---|"]
    run = ours("lm-normal")
    for N in sizes:
        X0, Y = decay_data(N, seed=4)
        rates = []
        for dtype in (np.float64, np.float32):
            t, _ = best_of(lambda: run(X0.astype(dtype), Y.astype(dtype)), repeats)
            rates.append(N / t)
            records.append(dict(workload="scaling", solver="jaxopt_lsq lm-normal", dtype=np.dtype(dtype).name,
                                batch=N, time_s=t, fits_per_s=N / t))
        lines.append(f"| {N} | {rates[0]:,.0f} | {rates[1]:,.0f} |")
    lines.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke test)")
    ap.add_argument("--only", default="", help="comma-separated workloads: decay,rounds,grad,gauss2d,scaling")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per solver (default 3, 1 with --quick)")
    ap.add_argument("--child-f32", type=int, default=0, help=argparse.SUPPRESS)  # internal: see decay_rows_child
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_f32:
        _child_f32(a.child_f32, a.repeats or 3, a.child_out)
        return 0
    only = set(filter(None, a.only.split(",")))
    repeats = a.repeats or (1 if a.quick else 3)
    records, lines = [], []
    header = [
        "# Batched fits", "",
        f"{datetime.date.today()}, {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}). "
        f"Reproduce: `python bench/bench_batched.py`.", "",
    ]

    def want(name):
        return not only or name in only

    if want("decay"):
        run_decay([1000] if a.quick else [10_000, 100_000], repeats, records, lines)
    if want("rounds"):
        run_rounds(1000 if a.quick else 10_000, repeats, records, lines)
    if want("grad"):
        run_grad(1000 if a.quick else 10_000, repeats, records, lines)
    if want("gauss2d"):
        run_gauss([10_000] if a.quick else [100_000, 1_000_000], repeats, records, lines)
    if want("scaling"):
        run_scaling([100, 1000] if a.quick else [100, 1000, 10_000, 100_000], repeats, records, lines)
    text = "\n".join(header + lines)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    suffix = "_quick" if a.quick else ""
    with open(os.path.join(RESULTS, f"batched{suffix}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(RESULTS, f"batched{suffix}.json"), "w") as f:
        json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
