"""Every script in examples/ runs to completion (the README's first command)."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


# Arguments that keep an example small enough for CI.
SMALL_ARGS = {"broyden_sparse.py": ["1000"]}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script):
    cmd = [sys.executable, str(script), *SMALL_ARGS.get(script.name, [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()
