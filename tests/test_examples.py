"""Every script in examples/ runs to completion (the README's first command).

Each runs in a fresh interpreter with JAXOPT_LSQ_EXAMPLE_QUICK=1 (large examples
shrink) and its working directory and JAXOPT_LSQ_EXAMPLE_OUTDIR in a temporary
directory, where plots are written. The examples compare themselves with SciPy and
assert agreement, so a wrong answer fails here too.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run_script(script, tmp_path, args=()):
    env = dict(os.environ, JAXOPT_LSQ_EXAMPLE_QUICK="1", JAXOPT_LSQ_EXAMPLE_OUTDIR=str(tmp_path),
               MPLBACKEND="Agg")
    # The package under test, also when it is not installed (a plain checkout).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)


# Arguments that keep an example small enough for CI.
SMALL_ARGS = {"broyden_sparse.py": ["1000"]}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    proc = run_script(script, tmp_path, SMALL_ARGS.get(script.name, []))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip()
    if script.name == "robust_fitting.py" and importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "robust_fitting.png").stat().st_size > 10_000
