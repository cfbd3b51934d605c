"""Where the warm time of a small ``least_squares`` solve goes (a diagnostic, not a workload).

For each problem of ``bench_small.py`` (default ``method='trf'``, called as
``jax.jit(lambda x0, *data: least_squares(fun, x0, args=data))``) this prints, in
**process CPU time** (steadier than wall time on a shared machine; it also counts the
XLA worker threads):

* ``warm``: one solve, result blocked, as ``bench_small.py`` times it;
* ``floor``: a jitted function that only returns arrays shaped like the result (the
  cost of dispatch, of one output buffer per result field and of rebuilding the
  ``OptimizeResult``);
* ``nfev=1``: the same solve stopped after the first evaluation (``max_nfev=1``), i.e.
  the fixed part: setup at ``x0`` (Jacobian, SVD), the empty loop, the result;
* ``per trial``: ``(warm - nfev=1) / (nfev - 1)``, and ``svd``: one ``jnp.linalg.svd``
  of the final Jacobian (an accepted trial computes one);
* ``flops`` (XLA's cost analysis of the compiled solve) and ``exec``: XLA:CPU runs a
  program on the calling thread only when its estimate is below 1000 flops, otherwise on
  a worker thread (``async``), which costs a thread hand-off per call;
* ``thunks`` (XLA:CPU kernels run per solve) and how many ran ``offloaded`` to the
  intra-op pool: XLA's executor runs a computation's kernels in order on one thread
  only when every buffer they touch is at most 512 bytes (or the graph is a chain, or
  it has at most 8 kernels); otherwise ready kernels are handed to other threads.

Usage::

    python bench/profile_small.py [--problems exp_fit,osborne2] [--method trf] [--no-trace]
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import os
import shutil
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_small  # noqa: E402

from jaxopt_lsq import least_squares  # noqa: E402

CLOCK = time.process_time


def cpu_time(call, target=0.2, repeats=5):
    """Min over ``repeats`` of the mean CPU time per call (calls per repeat: ~``target`` s)."""
    call()
    n, t0 = 0, CLOCK()
    while CLOCK() - t0 < target / 4:
        call()
        n += 1
    n = max(3, 4 * n)
    best = math.inf
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(n):
            call()
        best = min(best, (CLOCK() - t0) / n)
    return best


def svd_time(J, k=20):
    """CPU time of one SVD of ``J`` (``k`` of them in a loop, minus the empty loop)."""

    def loop(op):
        def run(A):
            def body(i, c):
                A, acc = c
                out = op(A * (1 + i * 1e-12))
                return A, acc + sum(jnp.sum(o) for o in jax.tree.leaves(out))

            return lax.fori_loop(0, k, body, (A, jnp.zeros((), A.dtype)))[1]

        f = jax.jit(run)
        return lambda: jax.block_until_ready(f(J))

    with_svd = cpu_time(loop(lambda A: jnp.linalg.svd(A, full_matrices=False)))
    empty = cpu_time(loop(lambda A: A))
    return max(0.0, with_svd - empty) / k


def thunk_counts(call, n=20):
    """Kernels run per call on XLA's client thread and on the intra-op pool (profiler)."""
    from jax.profiler import ProfileData

    tmp = tempfile.mkdtemp()
    try:
        with jax.profiler.trace(tmp):
            for _ in range(n):
                call()
        (path,) = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        counts = collections.Counter()
        for plane in ProfileData.from_file(path).planes:
            for line in plane.lines:
                kind = "pool" if "Eigen" in line.name else "other"
                for ev in line.events:
                    if ev.name.startswith(("end:", "ThunkExecutor", "ThreadpoolListener", "$", "Pjit")):
                        continue
                    if line.name.startswith("tf_XLA") or ev.name.split(".")[0].endswith(
                        ("fusion", "copy", "dot", "svd", "cond", "while", "call")
                    ):
                        counts[kind] += 1
        return counts["other"] / n + counts["pool"] / n, counts["pool"] / n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="", help="comma-separated names (default: all)")
    ap.add_argument("--method", default="trf")
    ap.add_argument("--no-trace", action="store_true", help="skip the profiler (thunk counts)")
    args = ap.parse_args(argv)
    wanted = [s for s in args.problems.split(",") if s]
    print(f"method={args.method}; CPU time per call in microseconds; jax {jax.__version__}")
    hdr = ("problem", "n", "m", "nfev", "njev", "warm", "floor", "nfev=1", "per trial", "svd", "flops", "exec",
           "thunks", "offloaded")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for p in bench_small.build_problems():
        if p.separate and not wanted or (wanted and p.name not in wanted):
            continue
        fun = p.make(jnp)
        x0 = jnp.asarray(p.x0)
        data = tuple(jnp.asarray(a) for a in p.args)
        solve = jax.jit(lambda x0, *d: least_squares(fun, x0, args=d, method=args.method))
        first = jax.jit(lambda x0, *d: least_squares(fun, x0, args=d, method=args.method, max_nfev=1))
        res = jax.block_until_ready(solve(x0, *data))
        shaped = jax.jit(lambda x0, *d: jax.tree.map(lambda a: a + 0, res))
        warm = cpu_time(lambda: jax.block_until_ready(solve(x0, *data)))
        floor = cpu_time(lambda: jax.block_until_ready(shaped(x0, *data)))
        one = cpu_time(lambda: jax.block_until_ready(first(x0, *data)))
        nfev = int(res.nfev)
        njev = "" if res.get("njev") is None else int(res.njev)
        per = (warm - one) / (nfev - 1) if nfev > 1 else float("nan")
        flops = solve.lower(x0, *data).compile().cost_analysis().get("flops", float("nan"))
        if args.no_trace:
            thunks = offl = float("nan")
        else:
            thunks, offl = thunk_counts(lambda: jax.block_until_ready(solve(x0, *data)))
        us = 1e6
        row = (p.name, p.n, p.m, nfev, njev, f"{warm * us:.1f}", f"{floor * us:.1f}", f"{one * us:.1f}",
               f"{per * us:.2f}", f"{svd_time(res.jac) * us:.2f}", f"{flops:.0f}",
               "inline" if flops < 1000 else "async", f"{thunks:.0f}", f"{offl:.0f}")
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
