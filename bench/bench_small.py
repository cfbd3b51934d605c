"""Small-problem benchmark: warm per-solve latency and first-call compile time.

Compares, side by side in one process and in float64, on small nonlinear
least-squares problems (n = 2 .. 20):

* SciPy ``least_squares(method="trf")`` and ``method="lm"`` -- NumPy residual
  function, SciPy's default Jacobian (``'2-point'`` finite differences), as a
  user would call it;
* jaxopt ``LevenbergMarquardt`` under ``jax.jit(solver.run)`` (optional), with its
  defaults (conjugate gradients on Jacobian products) and with its best setting for
  small dense problems ("dense": ``materialize_jac=True, solver="cholesky"``);
* optimistix ``optx.least_squares(..., optx.LevenbergMarquardt(...))`` under
  ``jax.jit`` (optional);
* ours, ``jaxopt_lsq.least_squares``, two ways:
  - "jaxopt_lsq (jit)":  ``jax.jit(lambda x0, *data: least_squares(fun, x0, args=data))``
  - "jaxopt_lsq (call)": the SciPy-style facade called from Python with a
    NumPy ``x0`` (validation, dispatch to the cached compiled solver, results
    converted back to NumPy).

The JAX solvers use autodiff Jacobians (their defaults).  Tolerances are
SciPy's defaults (1e-8) for everybody; the JAX peers get an iteration budget
of ``100 * n`` (SciPy trf's default ``max_nfev``).

Usage::

    python bench/bench_small.py                 # full run, ~2-3 min on 2 cores
    python bench/bench_small.py --quick         # smoke test (few repeats)
    python bench/bench_small.py --problems rosen,osborne

Warm latency = min over R repeats of the mean over N calls (N chosen so one
repeat takes about ``--target`` seconds; the repeats of the solvers are
interleaved), JAX results blocked with ``block_until_ready``.  Compile time = wall time of the first call of a freshly
built jitted function (a fresh residual closure, so no cache can hide it).
The markdown report goes to stdout and to ``bench/results/small.md``, the records
(one per problem and solver) to ``bench/results/small.json`` (``small_quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import least_squares as scipy_least_squares  # noqa: E402

from jaxopt_lsq import least_squares  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from helpers import PROBLEMS_BY_NAME  # noqa: E402
from _common import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)

try:  # optional peers
    import jaxopt
except Exception as e:  # noqa: BLE001
    jaxopt = None
    _JAXOPT_ERR = f"{type(e).__name__}: {e}"
try:
    import optimistix as optx
except Exception as e:  # noqa: BLE001
    optx = None
    _OPTX_ERR = f"{type(e).__name__}: {e}"

TOL = 1e-8
REL_BEST, ABS_BEST = 1e-6, 1e-12


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class BenchProblem:
    name: str
    make: object          # make(xp) -> fun(x, *args), shared by NumPy and jax.numpy
    x0: np.ndarray
    args: tuple = ()
    note: str = ""
    separate: bool = False  # reported in its own section

    @property
    def n(self):
        return self.x0.size

    @property
    def m(self):
        return int(np.size(self.make(np)(self.x0, *self.args)))

    def cost(self, x):
        r = self.make(np)(np.asarray(x, dtype=np.float64), *self.args)
        c = 0.5 * float(np.dot(r, r))
        return c if math.isfinite(c) else math.inf


def _exp_fit(xp):
    def fun(x, t, y):
        return x[0] + x[1] * xp.exp(x[2] * t) - y

    return fun


def _exp_fit_clean_data(seed=0, n_points=15, a=0.5, b=2.0, c=-1.0, noise=0.1):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, n_points)
    y = a + b * np.exp(c * t) + noise * rng.standard_normal(n_points)
    return t, y


def build_problems():
    P = PROBLEMS_BY_NAME
    t, y = _exp_fit_clean_data()
    out = [
        BenchProblem("rosenbrock_x0_2_2", P["rosenbrock"].make, np.array([2.0, 2.0]),
                     note="SciPy docs' example, unbounded, x0 = [2, 2]"),
        BenchProblem("rosenbrock", P["rosenbrock"].make, P["rosenbrock"].x0_array(),
                     note="MGH 1, x0 = [-1.2, 1]"),
        BenchProblem("exp_fit", _exp_fit, np.array([1.0, 1.0, -0.5]), args=(t, y),
                     note="a + b exp(c t), 15 points on [0, 10], true (0.5, 2, -1), noise 0.1, "
                          "default_rng(0), no outliers, x0 = [1, 1, -0.5]"),
        BenchProblem("kowalik_osborne", P["kowalik_osborne"].make, P["kowalik_osborne"].x0_array(),
                     note="MGH 15"),
        BenchProblem("osborne1", P["osborne1"].make, P["osborne1"].x0_array(), note="MGH 17"),
        BenchProblem("biggs_exp6", P["biggs_exp6"].make, P["biggs_exp6"].x0_array(),
                     note="MGH 18 (m = 13)"),
        BenchProblem("watson9", P["watson9"].make, P["watson9"].x0_array(), note="MGH 20"),
        BenchProblem("broyden_tridiagonal10", P["broyden_tridiagonal10"].make,
                     P["broyden_tridiagonal10"].x0_array(), note="MGH 30"),
        BenchProblem("osborne2", P["osborne2"].make, P["osborne2"].x0_array(), note="MGH 19"),
        BenchProblem("extended_rosenbrock20", P["extended_rosenbrock10"].make,
                     np.array([-1.2, 1.0] * 10), note="MGH 21, n = 20"),
        BenchProblem("exp_fit_c0", _exp_fit, np.array([1.0, 1.0, 0.0]), args=(t, y),
                     note="the `exp_fit` data (no outliers) from x0 = [1, 1, 0]: c = 0 makes the "
                          "a and b columns of the Jacobian equal, and trf (SciPy's and ours) "
                          "drifts along the degenerate valley a -> +inf, b -> -inf, c -> 0 until "
                          "max_nfev = 300 (status 0) for any seed, while LM methods converge",
                     separate=True),
        BenchProblem("exp_fit_outliers", P["exp_fit_outliers"].make,
                     P["exp_fit_outliers"].x0_array(), args=tuple(P["exp_fit_outliers"].args),
                     note="SciPy docs' robust-fitting data (3 outliers, default_rng(0)) with "
                          "loss='linear', x0 = [1, 1, 0]: same degenerate start, trf stalls at "
                          "max_nfev = 300",
                     separate=True),
    ]
    return out


# ---------------------------------------------------------------------------
# Solvers.  Each ``build(problem)`` makes a *fresh* closure (new function
# objects), so its first call pays tracing + compilation; it returns
# ``(call, extract)``: ``call()`` runs one solve and blocks, ``extract(r)``
# gives ``(x, nfev_text, ok_flag_text)``.
# ---------------------------------------------------------------------------


def _block(r):
    return jax.block_until_ready(r)


def build_scipy(method):
    def build(p):
        fun = p.make(np)
        x0, args = p.x0.copy(), p.args

        def call():
            with np.errstate(all="ignore"):
                return scipy_least_squares(fun, x0, args=args, method=method)

        def extract(r):
            if method == "lm":  # MINPACK lmdif: nfev includes the FD evaluations
                ev = f"{r.nfev}"
            else:
                ev = f"{r.nfev}+{r.njev}J"
            return r.x, ev, int(r.status)

        return call, extract

    return build


def build_ours_jit(p, method="trf"):
    fun = p.make(jnp)
    x0 = jnp.asarray(p.x0)
    data = tuple(jnp.asarray(a) for a in p.args)
    solve = jax.jit(lambda x0, *data: least_squares(fun, x0, args=data, method=method))

    def call():
        return _block(solve(x0, *data))

    def extract(r):
        njev = "" if r.njev is None else f"+{int(r.njev)}J"
        return np.asarray(r.x), f"{int(r.nfev)}{njev}", int(r.status)

    return call, extract


def build_ours_lm_jit(p):
    return build_ours_jit(p, method="lm")


def build_ours_call(p):
    # A new function object (``p.make`` is cached by tests/helpers.py, so that tests
    # share compilations): the first call then pays tracing and compilation.
    made = p.make(jnp)

    def fun(x, *args):
        return made(x, *args)

    x0, args = p.x0.copy(), p.args

    def call():
        return least_squares(fun, x0, args=args)  # eager: returns NumPy, already synced

    def extract(r):
        return np.asarray(r.x), f"{int(r.nfev)}+{int(r.njev)}J", int(r.status)

    return call, extract


def build_jaxopt(p, **options):
    fun = p.make(jnp)
    x0 = jnp.asarray(p.x0)
    data = tuple(jnp.asarray(a) for a in p.args)
    solver = jaxopt.LevenbergMarquardt(residual_fun=fun, tol=TOL, xtol=TOL, gtol=TOL,
                                       maxiter=100 * p.n, **options)
    run = jax.jit(solver.run)

    def call():
        return _block(run(x0, *data))

    def extract(r):
        params, state = r
        return np.asarray(params), f"{int(state.iter_num)} it", None

    return call, extract


def build_optx(p):
    fun = p.make(jnp)
    x0 = jnp.asarray(p.x0)
    data = tuple(jnp.asarray(a) for a in p.args)
    solver = optx.LevenbergMarquardt(rtol=TOL, atol=TOL)
    max_steps = 100 * p.n

    def fn(y, args):
        return fun(y, *args)

    @jax.jit
    def run(y0, data):
        sol = optx.least_squares(fn, solver, y0, args=data, max_steps=max_steps, throw=False)
        return sol.value, sol.stats["num_steps"], sol.result == optx.RESULTS.successful

    def call():
        return _block(run(x0, data))

    def extract(r):
        y, steps, ok = r
        return np.asarray(y), f"{int(steps)} st", (1 if bool(ok) else 0)

    return call, extract


@dataclasses.dataclass
class Solver:
    key: str
    label: str
    build: object
    jax: bool  # has a compile step


def make_solvers():
    solvers = [
        Solver("scipy_trf", "SciPy trf", build_scipy("trf"), False),
        Solver("scipy_lm", "SciPy lm", build_scipy("lm"), False),
    ]
    notes = []
    if jaxopt is not None:
        solvers.append(Solver("jaxopt", "jaxopt LM", build_jaxopt, True))
        # jaxopt's best setting for small dense problems: the Jacobian formed with
        # jacfwd and the damped normal equations solved by Cholesky (its default is
        # conjugate gradients on Jacobian products).
        solvers.append(Solver("jaxopt_dense", "jaxopt LM (dense)",
                              lambda p: build_jaxopt(p, materialize_jac=True, solver="cholesky"), True))
    else:
        notes.append(f"jaxopt LevenbergMarquardt skipped (import failed: {_JAXOPT_ERR})")
    if optx is not None:
        solvers.append(Solver("optx", "optimistix LM", build_optx, True))
    else:
        notes.append(f"optimistix LevenbergMarquardt skipped (import failed: {_OPTX_ERR})")
    solvers += [
        Solver("ours_jit", "jaxopt_lsq (jit)", build_ours_jit, True),
        Solver("ours_call", "jaxopt_lsq (call)", build_ours_call, True),
        Solver("ours_lm_jit", "jaxopt_lsq lm (jit)", build_ours_lm_jit, True),
    ]
    return solvers, notes


PEERS = ("jaxopt", "jaxopt_dense", "optx")


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def calibrate(call, target):
    """Number of calls N so that N calls take about ``target`` seconds (already compiled)."""
    n_cal = 0
    t0 = time.perf_counter()
    while True:
        call()
        n_cal += 1
        t_cal = time.perf_counter() - t0
        if t_cal > target / 10 or n_cal >= 1000:
            break
    per = t_cal / n_cal
    return max(1, int(round(target / max(per, 1e-9)))), per


def time_n(call, n):
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n


@dataclasses.dataclass
class Outcome:
    warm_s: float = math.nan
    compile_s: float = math.nan
    cost: float = math.nan
    evals: str = ""
    status: object = None
    error: str = ""


def _fail(out, e):
    out.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    out.warm_s = math.nan
    traceback.print_exc(file=sys.stderr)


def run_problem(p, solvers, repeats, target):
    """First call (compile) of every solver, then warm timing with the repeats
    interleaved across solvers (repeat 1 of every solver, then repeat 2, ...), so a
    burst of load on the shared machine does not land on one solver's samples only."""
    outs = {s.key: Outcome() for s in solvers}
    calls = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in solvers:
            out = outs[s.key]
            try:
                call, extract = s.build(p)
                t0 = time.perf_counter()
                r = call()
                out.compile_s = time.perf_counter() - t0
                x, out.evals, out.status = extract(r)
                out.cost = p.cost(x)
                n, per = calibrate(call, target)
                out.warm_s = per
                calls[s.key] = (call, n)
            except Exception as e:  # noqa: BLE001
                _fail(out, e)
        for _ in range(repeats):
            for key, (call, n) in list(calls.items()):
                try:
                    outs[key].warm_s = min(outs[key].warm_s, time_n(call, n))
                except Exception as e:  # noqa: BLE001
                    _fail(outs[key], e)
                    del calls[key]
    return outs


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _us(s):
    if not math.isfinite(s):
        return "—"
    us = s * 1e6
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _ratio(a, b):
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def _fmt_ratio(r):
    return "—" if not math.isfinite(r) else f"{r:.2f}"


def _gmean(v):
    v = [x for x in v if math.isfinite(x) and x > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else math.nan


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def best_cost(outs):
    costs = [o.cost for o in outs.values() if math.isfinite(o.cost)]
    return min(costs) if costs else math.nan


def reached(cost, best):
    return math.isfinite(cost) and cost <= best + max(REL_BEST * abs(best), ABS_BEST)


def render(problems, results, solvers, title):
    S = solvers
    peers = [s for s in S if s.key in PEERS]
    jax_solvers = [s for s in S if s.jax]
    parts = [f"### {title}", ""]

    # 1. warm latency
    hdr = ["problem", "n", "m"] + [s.label + " µs" for s in S]
    hdr += ["ours(jit) / SciPy trf", "ours(call) / SciPy trf"]
    if peers:
        hdr += ["ours(jit) / best JAX peer"]
    hdr += ["ours lm(jit) / SciPy lm"]
    if peers:
        hdr += ["ours lm(jit) / best JAX peer"]
    rows, r_trf, r_call, r_peer, r_lm, r_lm_peer = [], [], [], [], [], []
    for p in problems:
        o = results[p.name]
        row = [p.name, p.n, p.m] + [_us(o[s.key].warm_s) if not o[s.key].error else "FAIL" for s in S]
        a = _ratio(o["ours_jit"].warm_s, o["scipy_trf"].warm_s)
        c = _ratio(o["ours_call"].warm_s, o["scipy_trf"].warm_s)
        r_trf.append(a)
        r_call.append(c)
        row += [_fmt_ratio(a), _fmt_ratio(c)]
        if peers:
            best_peer = min((o[s.key].warm_s for s in peers if math.isfinite(o[s.key].warm_s)),
                            default=math.nan)
            b = _ratio(o["ours_jit"].warm_s, best_peer)
            r_peer.append(b)
            row.append(_fmt_ratio(b))
        lm = _ratio(o["ours_lm_jit"].warm_s, o["scipy_lm"].warm_s)
        r_lm.append(lm)
        row.append(_fmt_ratio(lm))
        if peers:
            lp = _ratio(o["ours_lm_jit"].warm_s, best_peer)
            r_lm_peer.append(lp)
            row.append(_fmt_ratio(lp))
        rows.append(row)
    if len(problems) > 1:
        gm = ["geometric mean", "", ""] + [""] * len(S) + [_fmt_ratio(_gmean(r_trf)),
                                                  _fmt_ratio(_gmean(r_call))]
        if peers:
            gm.append(_fmt_ratio(_gmean(r_peer)))
        gm.append(_fmt_ratio(_gmean(r_lm)))
        if peers:
            gm.append(_fmt_ratio(_gmean(r_lm_peer)))
        rows.append(gm)
    parts += ["**Warm time per solve (µs, lower is better)**", "", _table(hdr, rows), ""]

    # 2. compile time
    hdr = ["problem"] + [s.label + " s" for s in jax_solvers]
    rows = [[p.name] + [("—" if not math.isfinite(results[p.name][s.key].compile_s)
                         else f"{results[p.name][s.key].compile_s:.2f}") for s in jax_solvers]
            for p in problems]
    parts += ["**First-call time (trace + compile + one solve, s)**", "", _table(hdr, rows), ""]

    # 3. final cost
    hdr = ["problem", "best cost"] + [s.label for s in S]
    rows = []
    for p in problems:
        o = results[p.name]
        b = best_cost(o)
        row = [p.name, f"{b:.6e}"]
        for s in S:
            c = o[s.key]
            if c.error:
                row.append("FAIL")
            else:
                row.append(f"{c.cost:.6e} {'✓' if reached(c.cost, b) else '✗'}")
        rows.append(row)
    parts += ["**Final cost 0.5·‖f(x)‖² (recomputed with NumPy at each solver's x; "
              "✓ = within rel 1e-6 / abs 1e-12 of the best)**", "", _table(hdr, rows), ""]

    # 4. evaluations
    hdr = ["problem"] + [s.label for s in S]
    rows = []
    for p in problems:
        o = results[p.name]
        row = [p.name]
        for s in S:
            c = o[s.key]
            st = "" if c.status is None else f" (s={c.status})"
            row.append("FAIL" if c.error else f"{c.evals}{st}")
        rows.append(row)
    parts += ["**Evaluations** (`a+bJ`: a residual evaluations, b Jacobians; SciPy trf's "
              "2-point Jacobians cost n residual evaluations each, not counted in a; "
              "SciPy lm: MINPACK nfev, FD evaluations included; `it`: jaxopt iterations; "
              "`st`: optimistix steps; s = status, for optimistix 1 = successful)",
              "", _table(hdr, rows), ""]

    errs = [(p.name, s.label, results[p.name][s.key].error) for p in problems for s in S
            if results[p.name][s.key].error]
    if errs:
        parts += ["**Failures**", ""] + [f"- {a} / {b}: `{e}`" for a, b, e in errs] + [""]
    return "\n".join(parts)


def git_state():
    """``commit`` of the repo, plus a digest of uncommitted changes under jaxopt_lsq/."""
    import hashlib
    import subprocess

    try:
        def git(*a):
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "jaxopt_lsq")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "jaxopt_lsq")
        if diff or untracked:
            digest = hashlib.sha1((diff + untracked).encode()).hexdigest()[:10]
            return f"{head} + uncommitted changes in jaxopt_lsq/ (diff sha1 {digest})"
        return f"{head} (jaxopt_lsq/ clean)"
    except Exception:  # noqa: BLE001
        return "unknown (not a git checkout?)"


def _version(mod_name):
    try:
        from importlib.metadata import version
        return version(mod_name)
    except Exception:  # noqa: BLE001
        return "n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 repeats of ~0.02 s (numbers are rough)")
    ap.add_argument("--problems", default="",
                    help="comma-separated substrings of problem names to run (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats (default 5, quick 2)")
    ap.add_argument("--target", type=float, default=None,
                    help="seconds per repeat (default 0.2, quick 0.02)")
    ap.add_argument("--out", default=None,
                    help="markdown output (default bench/results/small.md; "
                         "with --quick bench/results/small_quick.md)")
    a = ap.parse_args(argv)
    repeats = a.repeats or (2 if a.quick else 5)
    target = a.target or (0.02 if a.quick else 0.2)
    out_path = a.out or os.path.join(HERE, "results", "small_quick.md" if a.quick else "small.md")

    problems = build_problems()
    if a.problems:
        keys = [k.strip() for k in a.problems.split(",") if k.strip()]
        problems = [p for p in problems if any(k in p.name for k in keys)]
        if not problems:
            ap.error(f"no problem matches {a.problems!r}")
    solvers, skip_notes = make_solvers()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    git = git_state()  # at start: the package was imported from this working tree

    t_start = time.perf_counter()
    results = {}
    for p in problems:
        results[p.name] = run_problem(p, solvers, repeats, target)
        o = results[p.name]
        print(f"[{time.perf_counter() - t_start:6.1f} s] {p.name:24s} "
              + "  ".join(f"{s.key}={_us(o[s.key].warm_s)}µs" for s in solvers),
              file=sys.stderr, flush=True)
    total = time.perf_counter() - t_start

    cmd = "python " + " ".join([os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:])
    head = [
        "## Small problems: warm latency and compile time",
        "",
        f"- date: {started}",
        f"- jaxopt_lsq source: {git}",
        f"- command: `{cmd}`",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); backend: {jax.default_backend()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {_version('jaxlib')}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"jaxopt {_version('jaxopt')}, optimistix {_version('optimistix')}, "
        f"jaxopt_lsq {_version('jaxopt_lsq')}",
        "- float64; tolerances 1e-8 (SciPy defaults: ftol = xtol = gtol = 1e-8; jaxopt tol = 1e-8; "
        "optimistix rtol = atol = 1e-8); JAX peers get 100·n iterations (SciPy trf's max_nfev)",
        "- SciPy: NumPy residuals, default `jac='2-point'` finite differences. "
        "JAX solvers: autodiff Jacobians (their defaults). jaxopt LM: its default (CG on Jacobian products); jaxopt LM (dense): `materialize_jac=True, solver=\"cholesky\"`.",
        f"- warm time: min over {repeats} repeats of the mean of N calls (N so that a repeat takes "
        f"~{target} s; repeats interleaved across solvers), JAX results `block_until_ready`; first-call time: wall time of the first "
        "call of a freshly built jitted function / of `least_squares` with a new function object",
        "- `jaxopt_lsq (jit)`: `jax.jit(lambda x0, *data: least_squares(fun, x0, args=data))`; "
        "`jaxopt_lsq (call)`: `least_squares(fun_jnp, x0_numpy, args=...)` from Python",
        f"- total wall time of the run: {total:.0f} s",
    ]
    head += [f"- {n}" for n in skip_notes]
    if a.quick:
        head.append("- **--quick run: few short repeats, numbers are rough**")
    head.append("")

    main_p = [p for p in problems if not p.separate]
    sep_p = [p for p in problems if p.separate]
    body = []
    if main_p:
        body.append(render(main_p, results, solvers, "Problems"))
        body.append("Problems: " + "; ".join(f"`{p.name}` {p.note}" for p in main_p) + ".\n")
    if sep_p:
        body.append(render(sep_p, results, solvers,
                           "Reported separately: degenerate start x0 = [1, 1, 0] (trf stalls)"))
        body.append("Problems: " + "; ".join(f"`{p.name}` {p.note}" for p in sep_p) + ".\n")
    text = "\n".join(head) + "\n" + "\n".join(body)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)
    json_path = os.path.splitext(out_path)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(records(problems, results, solvers), f, indent=1)
    print(f"(written to {os.path.relpath(out_path, REPO)} and "
          f"{os.path.relpath(json_path, REPO)})", file=sys.stderr)
    return 0


def records(problems, results, solvers):
    """Flat records for bench/run.py: one per problem and solver."""
    def num(v):
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    out = []
    for p in problems:
        best = best_cost(results[p.name])
        for s in solvers:
            o = results[p.name][s.key]
            out.append(dict(
                workload="small", problem=p.name, solver=s.label, n=int(p.n), m=int(p.m),
                time_s=num(o.warm_s), compile_s=num(o.compile_s), cost=num(o.cost),
                reached_best=bool(reached(o.cost, best)), evals=o.evals,
                status=None if o.status is None else str(o.status), error=o.error or None,
            ))
    return out


if __name__ == "__main__":
    sys.exit(main())
