"""Run SciPy's own tests for ``least_squares`` and L-BFGS-B against jaxopt_lsq, and report.

    python tests/scipy_suite/run.py [-n 2] [--suite least_squares|lbfgsb|all]

``least_squares``: ``scipy/optimize/tests/test_least_squares.py`` from the installed
SciPy with its ``least_squares`` pointed at ours (classes TestTRF, TestDogbox, TestLM).
``lbfgsb``: ``test_lbfgsb_hessinv.py``, ``test_lbfgsb_setulb.py`` and the L-BFGS-B
tests of ``test_optimize.py`` with ``minimize(method='L-BFGS-B')`` and
``fmin_l_bfgs_b`` pointed at ours (see ``scipy_lbfgsb.py``).

Prints the pass count per suite and every test that does not pass, with the reason: a
documented, deliberate difference (or a feature not available yet), or "bug to fix".
Exits with status 1 if a test fails for an undocumented reason, or if a documented one
now passes (so the lists below stay true).
"""

import argparse
import collections
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

# Tests that pin a deliberate difference. Keys are "Class::test" (every parameter),
# "test" (every class) or a whole pytest id "Class::test[param]".
KNOWN_LEAST_SQUARES = {
    "test_nfev": "deliberate: a NumPy fun is called once more on its first use, to detect whether "
                 "JAX can trace it; later calls match SciPy's counts exactly",
}

PROBE = ("deliberate: a NumPy fun is called once more on its first use (with JAX tracers, "
         "to detect whether JAX can trace it), so counts of calls made by the test's own "
         "function are one higher than SciPy's")
KNOWN_LBFGSB = {
    "TestOptimizeSimple::test_l_bfgs_b": PROBE,
    "TestOptimizeSimple::test_minimize_l_bfgs_b": PROBE,
}

SUITES = {
    "least_squares": ("scipy_least_squares.py", "SciPy's test_least_squares.py", KNOWN_LEAST_SQUARES),
    "lbfgsb": ("scipy_lbfgsb.py", "SciPy's L-BFGS-B tests (test_lbfgsb_*.py, test_optimize.py)",
               KNOWN_LBFGSB),
}


class Report:
    """pytest plugin: keeps each test's outcome; for the L-BFGS-B suite it deselects
    the tests of test_optimize.py that do not concern L-BFGS-B."""

    def __init__(self, select=None):
        self.outcomes = collections.OrderedDict()
        self.select = select

    def pytest_collection_modifyitems(self, config, items):
        if self.select is None:
            return
        keep = [it for it in items if self.select(it)]
        dropped = [it for it in items if not self.select(it)]
        items[:] = keep
        config.hook.pytest_deselected(items=dropped)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = report


def reason_for(nodeid, known):
    cls_test = nodeid.split("::", 1)[1]
    test = cls_test.split("::")[-1]
    return (known.get(cls_test) or known.get(cls_test.split("[")[0]) or known.get(test)
            or known.get(test.split("[")[0]))


def run_suite(name, workers):
    filename, title, known = SUITES[name]
    select, not_applicable = None, {}
    if name == "lbfgsb":
        import scipy_lbfgsb

        select, not_applicable = scipy_lbfgsb.selected, scipy_lbfgsb.NOT_APPLICABLE
    report = Report(select)
    pytest_args = [str(HERE / filename), "-q", "-p", "no:cacheprovider", "-W", "ignore",
                   "--tb=line", "-o", "addopts=", "-o", "filterwarnings="]
    if workers != "0":
        pytest_args += ["-n", workers]
        if select is not None:
            raise SystemExit("the L-BFGS-B suite selects tests in this process: run it with -n 0")
    pytest.main(pytest_args, plugins=[report])
    outcomes = report.outcomes
    passed = [k for k, r in outcomes.items() if r.passed]
    failed = [k for k, r in outcomes.items() if not r.passed and not r.skipped]
    skipped = [k for k, r in outcomes.items() if r.skipped]
    lines = [f"{title} against jaxopt_lsq: {len(passed)} passed, {len(failed)} not passing, "
             f"{len(skipped)} skipped"]
    documented = [(k, reason_for(k, known)) for k in failed if reason_for(k, known)]
    bugs = [k for k in failed if not reason_for(k, known)]
    for k, why in documented:
        lines.append(f"  documented  {k.split('::', 1)[1]}: {why}")
    for k in bugs:
        msg = str(outcomes[k].longrepr).strip().splitlines()[-1][:200]
        lines.append(f"  BUG TO FIX  {k.split('::', 1)[1]}: {msg}")
    for k, why in not_applicable.items():
        lines.append(f"  not run     {k}: not applicable: {why}")
    fixed = [k for k in passed if reason_for(k, known)]
    for k in fixed:
        lines.append(f"  now passes (update the KNOWN list): {k.split('::', 1)[1]}")
    reasons = collections.Counter(
        r.longrepr[-1] if isinstance(r.longrepr, tuple) else "" for k, r in outcomes.items()
        if r.skipped)
    for why, count in reasons.items():
        lines.append(f"  skipped by SciPy's own test code ({count}): {why}")
    return lines, bool(bugs or fixed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", default="0", help="pytest-xdist workers (default: none; "
                    "the L-BFGS-B suite always runs in this process)")
    ap.add_argument("--suite", default="all", choices=["all", *SUITES])
    args = ap.parse_args()
    names = list(SUITES) if args.suite == "all" else [args.suite]
    summary, bad = [], False
    for name in names:
        lines, b = run_suite(name, args.n if name == "least_squares" else "0")
        summary += lines
        bad |= b
    print("\n" + "\n".join(summary))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
