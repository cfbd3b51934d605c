"""Run every benchmark and assemble ``bench/results/README.md`` with plots.

Each ``bench/bench_<name>.py`` runs in its own subprocess (fresh JAX, its own thread
settings, see ``ENV``), with ``--quick`` passed through. By the bench protocol each
script writes ``bench/results/<name>.md`` (markdown tables) and
``bench/results/<name>.json`` (a list of flat records); with ``--quick`` the scripts
of this repository write ``<name>_quick.md``/``.json`` instead, so that a smoke run
never overwrites the published numbers.

From the JSON records this script draws (when matplotlib is installed):

* ``time_vs_size.png``: time per solve against problem size, log-log, for records
  with ``n`` and ``time_s`` (one curve per workload, problem family and solver; only
  curves with at least two sizes are drawn);
* ``throughput_vs_batch.png``: fits per second against batch size, log-log, for
  records with ``batch`` and ``fits_per_s``.

and writes the summary ``README.md`` (``README_quick.md`` with ``--quick``): the
machine, versions and command, a status table (a workload whose script is missing,
fails, or writes no results is listed as such, and the exit status is then 1), each
workload's markdown report, and the plots.

Usage::

    python bench/run.py                    # everything (tens of minutes)
    python bench/run.py --quick            # smoke run, about a minute per workload
    python bench/run.py --only small,lbfgsb
    python bench/run.py --report-only      # rebuild README.md and plots from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from _common import cpu_model  # bench/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

#: Workloads the summary expects; a missing script is reported (the others are found
#: by globbing ``bench_*.py``).
EXPECTED = ("small", "lbfgsb", "batched")

#: Environment per workload, on top of the caller's. SciPy's L-BFGS-B spends most of
#: its time waiting for BLAS threads on a loaded 2-core machine unless BLAS is
#: single-threaded.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
ENV = {"lbfgsb": _ONE_THREAD}

#: Fields that name a curve in the plots (whichever a record has, in this order);
#: ``family`` (e.g. "rosenbrock" for n = 2, 10, 100) replaces ``problem`` when given.
SERIES_FIELDS = ("family", "problem", "solver", "method", "dtype")


def discover(bench_dir):
    names = []
    for f in sorted(os.listdir(bench_dir)):
        if f.startswith("bench_") and f.endswith(".py"):
            names.append(f[len("bench_") : -len(".py")])
    return names


def run_workload(name, bench_dir, quick, timeout):
    """Run one script; returns (returncode or None if missing, seconds, tail of output)."""
    script = os.path.join(bench_dir, f"bench_{name}.py")
    if not os.path.exists(script):
        return None, 0.0, f"script bench/bench_{name}.py not found"
    env = dict(os.environ)
    env.update(ENV.get(name, {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    cmd = [sys.executable, script] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(os.path.relpath(c, REPO) if c == script else c for c in cmd)}",
          flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n(killed after {timeout} s)"
    seconds = time.perf_counter() - start
    print(f"   {'ok' if rc == 0 else 'FAILED (' + str(rc) + ')'} in {seconds:.0f} s", flush=True)
    return rc, seconds, out[-3000:]


def result_paths(name, results_dir, quick):
    """The (md, json) a workload wrote: ``<name>_quick.*`` first in quick mode."""
    stems = [f"{name}_quick", name] if quick else [name]
    for stem in stems:
        md, js = (os.path.join(results_dir, stem + ext) for ext in (".md", ".json"))
        if os.path.exists(md) or os.path.exists(js):
            return md, js
    return os.path.join(results_dir, stems[0] + ".md"), os.path.join(results_dir, stems[0] + ".json")


def load_records(path):
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _label(r):
    """(what is solved, who solves it): the curve's name, split for colours/markers."""
    keys = [k for k in SERIES_FIELDS if k != "solver" and r.get(k) not in (None, "")]
    if "family" in keys and "problem" in keys:
        keys.remove("problem")
    what = " / ".join([str(r.get("workload", "?"))] + [str(r[k]) for k in keys])
    return what, str(r.get("solver", ""))


def _curves(records, xkey, ykey):
    curves = {}
    for r in records:
        x, y = r.get(xkey), r.get(ykey)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and y > 0:
            curves.setdefault(_label(r), []).append((x, y))
    return {k: sorted(v) for k, v in curves.items() if len({x for x, _ in v}) >= 2}


def plot(records, xkey, ykey, xlabel, ylabel, title, path):
    """A log-log plot of one curve per series; returns the path or None."""
    curves = _curves(records, xkey, ykey)
    if not curves:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    # One colour per solver, one marker and line style per problem.
    solvers = sorted({who for _, who in curves})
    whats = sorted({what for what, _ in curves})
    styles = [(m, ls) for ls in ("-", "--", ":", "-.") for m in "osd^v<>pPX*"]
    for (what, who), pts in sorted(curves.items()):
        xs, ys = zip(*pts)
        marker, ls = styles[whats.index(what) % len(styles)]
        ax.loglog(xs, ys, marker=marker, linestyle=ls, color=f"C{solvers.index(who) % 10}",
                  label=f"{what}: {who}" if who else what)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for pkg in ("jax", "jaxlib", "numpy", "scipy", "jaxopt", "optimistix"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def write_summary(rows, results_dir, quick, plots, argv):
    suffix = "_quick" if quick else ""
    lines = [
        "# Benchmark results",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {cpu_model()} ({os.cpu_count()} logical CPUs), {platform.system()}",
        f"- versions: {_versions()}",
        f"- command: `python bench/run.py{' ' + ' '.join(argv) if argv else ''}`",
        "- each workload runs in its own process; its own report below says how it measures",
    ]
    if quick:
        lines.append("- **--quick run: reduced sizes and repeats, numbers are rough**")
    lines += ["", "| workload | status | wall time | report |", "|---|---|---|---|"]
    for r in rows:
        report = f"[{os.path.basename(r['md'])}]({os.path.basename(r['md'])})" if r["md_ok"] else "—"
        wall = f"{r['seconds']:.0f} s" if r["seconds"] else "—"
        lines.append(f"| {r['name']} | {r['status']} | {wall} | {report} |")
    lines.append("")
    for title, path in plots:
        lines += [f"![{title}]({os.path.basename(path)})", ""]
    for r in rows:
        if r["md_ok"]:
            with open(r["md"]) as f:
                text = f.read().strip()
            if not text.startswith("#"):
                lines.append(f"## {r['name']}")
                lines.append("")
            lines += [text, ""]
        if r["log"]:
            lines += [f"<details><summary>{r['name']}: output of the failed run</summary>",
                      "", "```", r["log"].strip(), "```", "", "</details>", ""]
    path = os.path.join(results_dir, f"README{suffix}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every workload")
    ap.add_argument("--only", default="", help="comma-separated workload names (e.g. small,lbfgsb)")
    ap.add_argument("--report-only", action="store_true",
                    help="do not run anything: rebuild the summary and plots from the JSON")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per workload")
    ap.add_argument("--bench-dir", default=HERE, help=argparse.SUPPRESS)
    ap.add_argument("--results-dir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    bench_dir = a.bench_dir
    results_dir = a.results_dir or os.path.join(bench_dir, "results")
    os.makedirs(results_dir, exist_ok=True)

    found = discover(bench_dir)
    if a.only:
        # "small", "bench_small" and "bench/bench_small.py" all name the same workload
        names = [os.path.basename(n.strip()).removesuffix(".py").removeprefix("bench_")
                 for n in a.only.split(",") if n.strip()]
    else:
        names = found + [n for n in EXPECTED if n not in found and bench_dir == HERE]

    rows, all_records, failed = [], [], False
    for name in names:
        md, js = result_paths(name, results_dir, a.quick)
        started = time.time()
        if a.report_only:
            rc, seconds, log = (0 if name in found else None), 0.0, ""
        else:
            rc, seconds, log = run_workload(name, bench_dir, a.quick, a.timeout)
            md, js = result_paths(name, results_dir, a.quick)
        fresh = a.report_only or (os.path.exists(js) and os.path.getmtime(js) >= started - 1)
        records = load_records(js) if fresh else []
        for r in records:
            r.setdefault("workload", name)
        if rc is None:
            status = "missing: no script"
        elif rc != 0:
            status = f"FAILED (exit {rc})"
        elif not records:
            status = f"no results: {os.path.relpath(js, REPO)} missing, stale or empty"
        else:
            status = f"ok ({len(records)} records)"
        bad = rc != 0 or not records
        failed |= bad
        rows.append(dict(name=name, status=status, seconds=seconds, md=md,
                         md_ok=os.path.exists(md) and (a.report_only or os.path.getmtime(md) >= started - 1),
                         log=log if (bad and rc is not None and not a.report_only) else ""))
        all_records += records

    suffix = "_quick" if a.quick else ""
    plots = []
    for title, args in (
        ("Time per solve vs problem size", ("n", "time_s", "problem size n", "time per solve (s)")),
        ("Throughput vs batch size", ("batch", "fits_per_s", "batch size (fits per call)",
                                      "fits per second")),
    ):
        fname = ("time_vs_size" if args[0] == "n" else "throughput_vs_batch") + suffix + ".png"
        p = plot(all_records, *args, title, os.path.join(results_dir, fname))
        if p:
            plots.append((title, p))
    summary = write_summary(rows, results_dir, a.quick, plots, argv)
    print(f"summary: {os.path.relpath(summary, REPO)}" + "".join(
        f"\nplot: {os.path.relpath(p, REPO)}" for _, p in plots))
    for r in rows:
        if not r["status"].startswith("ok"):
            print(f"{r['name']}: {r['status']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
