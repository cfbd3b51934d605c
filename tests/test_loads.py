"""Loads (opt-in: ``JAXOPT_LSQ_LOADS=1 python -m pytest tests/test_loads.py``).

A batch of 1e6 tiny fits under ``jax.vmap`` and an L-BFGS-B problem with n = 1e7 run to
completion, converge, and stay well within the project machine's memory (24 GiB). Each
runs in its own process (``bench/bench_loads.py``'s workers), which reports its peak
resident memory. Several minutes on a 2-core machine, so not part of the default run.
"""

import os
import pathlib
import sys

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("JAXOPT_LSQ_LOADS") != "1",
                                reason="opt-in: set JAXOPT_LSQ_LOADS=1")

LIMIT_GIB = 20.0  # leaves room for the OS and other processes on a 24 GiB machine


def run_worker(kind, size):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))
    from bench_loads import run_worker

    return run_worker(kind, size)


def test_million_tiny_fits():
    rec = run_worker("fits", 1_000_000)
    assert rec["converged"] == rec["n"] == 1_000_000
    assert rec["peak_rss_gib"] < LIMIT_GIB


def test_lbfgsb_ten_million_variables():
    rec = run_worker("lbfgsb", 10_000_000)
    assert rec["status"] == 0
    assert 0.1 < rec["active_fraction"] < 0.9
    assert rec["peak_rss_gib"] < LIMIT_GIB
