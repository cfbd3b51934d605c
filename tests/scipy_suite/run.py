"""Run SciPy's test suite for ``least_squares`` against jaxopt_lsq and report.

    python tests/scipy_suite/run.py [-n 2]

Imports ``scipy/optimize/tests/test_least_squares.py`` from the installed SciPy, points
its ``least_squares`` at ours, runs its test classes (TestTRF, TestDogbox, TestLM) with
pytest, and prints the pass count and every test that does not pass, with the reason:
a documented, deliberate difference (or a feature not available yet), or "bug to fix".
"""

import argparse
import collections
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).parent

# Tests that pin a deliberate difference. Keys are "Class::test" (every method) or
# "test" (every class).
KNOWN = {
    "test_nfev": "deliberate: a NumPy fun is called once more on its first use, to detect whether "
                 "JAX can trace it; later calls match SciPy's counts exactly",
}


class Report:
    def __init__(self):
        self.outcomes = collections.OrderedDict()

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = report


def reason_for(nodeid):
    cls_test = nodeid.split("::", 1)[1]
    test = cls_test.split("::")[-1]
    return KNOWN.get(cls_test) or KNOWN.get(test)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", default="0", help="pytest-xdist workers (default: none)")
    args = ap.parse_args()
    report = Report()
    pytest_args = [str(HERE / "scipy_least_squares.py"), "-q", "-p", "no:cacheprovider", "-W", "ignore",
                   "--tb=line", "-o", "addopts=", "-o", "filterwarnings="]
    if args.n != "0":
        pytest_args += ["-n", args.n]
    pytest.main(pytest_args, plugins=[report])
    passed = [k for k, r in report.outcomes.items() if r.passed]
    failed = [k for k, r in report.outcomes.items() if not r.passed and not r.skipped]
    skipped = [k for k, r in report.outcomes.items() if r.skipped]
    print(f"\nSciPy's test_least_squares.py against jaxopt_lsq: {len(passed)} passed, "
          f"{len(failed)} not passing, {len(skipped)} skipped")
    documented = [(k, reason_for(k)) for k in failed if reason_for(k)]
    bugs = [k for k in failed if not reason_for(k)]
    for k, why in documented:
        print(f"  documented  {k.split('::', 1)[1]}: {why}")
    for k in bugs:
        msg = str(report.outcomes[k].longrepr).strip().splitlines()[-1][:200]
        print(f"  BUG TO FIX  {k.split('::', 1)[1]}: {msg}")
    fixed = [k for k in passed if reason_for(k)]
    for k in fixed:
        print(f"  now passes (update KNOWN): {k.split('::', 1)[1]}")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
