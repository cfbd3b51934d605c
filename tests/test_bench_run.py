"""bench/run.py: runs each workload in a subprocess, reports failures, assembles the
summary and the plots from the JSON records (fake workloads, so it takes seconds)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

RUN = pathlib.Path(__file__).parent.parent / "bench" / "run.py"

GOOD = '''
import json, os, sys
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
stem = "good_quick" if "--quick" in sys.argv else "good"
recs = [dict(workload="good", solver=s, n=n, time_s=1e-6 * n * k) for s, k in (("A", 1), ("B", 2))
        for n in (10, 100, 1000)]
recs += [dict(workload="good", solver="A", batch=b, fits_per_s=1e3 * b ** 0.5) for b in (1, 10, 100)]
open(os.path.join(out, stem + ".md"), "w").write("## Good workload\\n\\n| a |\\n|---|\\n| 1 |\\n")
json.dump(recs, open(os.path.join(out, stem + ".json"), "w"))
print("quick" if "--quick" in sys.argv else "full")
'''


def test_run_reports_failures_and_plots(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "bench_bad.py").write_text("raise SystemExit('boom')\n")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "good,bad,absent", "--bench-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # bad and absent fail the run
    summary = (tmp_path / "results" / "README_quick.md").read_text()
    assert "| good | ok (9 records) |" in summary
    assert "| bad | FAILED (exit 1) |" in summary and "boom" in summary
    assert "| absent | missing: no script |" in summary
    assert "## Good workload" in summary and "--quick run" in summary
    assert len(json.loads((tmp_path / "results" / "good_quick.json").read_text())) == 9
    if importlib.util.find_spec("matplotlib"):
        for png in ("time_vs_size_quick.png", "throughput_vs_batch_quick.png"):
            assert (tmp_path / "results" / png).stat().st_size > 5000
            assert f"]({png})" in summary
