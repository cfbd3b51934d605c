"""Public functions carry complete numpydoc docstrings: every parameter documented,
the sections users look for present (a cheap check; the examples run in the docs)."""

import inspect
import re

import pytest

import jaxopt_lsq as jl

PUBLIC = [jl.least_squares, jl.least_squares_batch, jl.curve_fit, jl.fmin_l_bfgs_b, jl.minimize,
          jl.LbfgsInvHessProduct, jl.OptimizeResult]


def sections(doc):
    lines = inspect.cleandoc(doc).splitlines()
    return {lines[i] for i in range(len(lines) - 1) if set(lines[i + 1]) == {"-"}
            and len(lines[i + 1]) == len(lines[i])}


def documented_parameters(doc):
    text = inspect.cleandoc(doc)
    block = re.split(r"\n(?:Parameters|Attributes)\n-+\n", text)[1]
    block = re.split(r"\n\n\w[\w ]*\n-+\n", block)[0]
    names = set()
    for line in block.splitlines():
        m = re.match(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: :|$)", line)
        if m:
            names |= {n.strip("*") for n in m.group(1).split(", ")}
    return names


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_numpydoc_sections(obj):
    doc = obj.__doc__
    assert doc, f"{obj.__name__} has no docstring"
    found = sections(doc)
    # OptimizeResult is a container: its fields, no algorithm to cite.
    needed = ({"Attributes", "Examples"} if obj is jl.OptimizeResult
              else {"Parameters", "References", "Examples"})
    if inspect.isfunction(obj):
        needed.add("Returns")
    assert needed <= found, f"{obj.__name__}: missing {needed - found}"


@pytest.mark.parametrize("obj", [f for f in PUBLIC if inspect.isfunction(f)],
                         ids=lambda o: o.__name__)
def test_every_parameter_documented(obj):
    params = set(inspect.signature(obj).parameters)
    assert params <= documented_parameters(obj.__doc__), params - documented_parameters(obj.__doc__)
