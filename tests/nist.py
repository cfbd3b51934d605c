"""NIST StRD nonlinear regression datasets: parser and models.

The 27 datasets of the NIST Statistical Reference Datasets (StRD) for
nonlinear least-squares regression,

    https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml

are stored unmodified in ``tests/data/nist_strd/*.dat``.  Each file has a
free-text header that states the model, the two NIST starting points
("Start 1", far from the solution, and "Start 2", closer to it), the
certified parameter values with their standard deviations, the certified
residual sum of squares, and the line ranges of those blocks and of the
data block.  :func:`load` parses all of that from the file itself.

The models are written by hand from the formula in each file's header, in
"array namespace" style (``model(b, x, xp)`` with ``xp`` either ``numpy``
or ``jax.numpy``), so they can be evaluated by SciPy (the oracle) and
traced by JAX.  The residual is ``response - model``; the response is
``y`` except for ``Nelson``, whose model is stated for ``log(y)``.

Public names
------------
``DATASETS``            the 27 dataset names (sorted).
``Dataset``             frozen dataclass returned by :func:`load`.
``load(name)``          parse ``tests/data/nist_strd/<name>.dat`` (cached).
``MODELS``              ``{name: model(b, x, xp)}``.
``MODEL_FORMULAS``      ``{name: formula text as printed in the file}``.
``model_fun(name, xp)`` ``f(b, x) -> model values``.
``residual_fun(name, xp)``  ``f(b, x, y) -> response(y) - model(b, x)``.
``residual_args(name)`` ``(x, y)`` as NumPy arrays, for ``args=``.
``DATA_DIR``            path of the ``.dat`` files.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import re
from typing import Callable

import numpy as np

__all__ = [
    "DATA_DIR",
    "DATASETS",
    "Dataset",
    "load",
    "MODELS",
    "MODEL_FORMULAS",
    "model_fun",
    "residual_fun",
    "residual_args",
]

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data" / "nist_strd"


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A parsed NIST StRD nonlinear regression dataset.

    ``x`` has shape ``(n_obs,)`` for one predictor and ``(n_obs, k)`` for
    ``k`` predictors (only ``Nelson`` has two).  ``y`` is the response as
    stored in the file (for ``Nelson`` the model is for ``log(y)``, see
    :func:`residual_fun`).  Parameter arrays have shape ``(n_params,)``.
    ``degrees_of_freedom`` is as printed in the file; note that the NIST
    ``Rat43`` file prints 9 although ``n_observations - n_params`` is 11
    (its certified residual standard deviation uses 11).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified_params: np.ndarray
    certified_std: np.ndarray
    certified_rss: float
    certified_residual_sd: float = math.nan
    degrees_of_freedom: int = -1
    n_observations: int = -1
    n_params: int = -1
    difficulty: str = ""
    model_text: str = ""
    predictor_names: tuple = ()

    @property
    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(start1, start2)``."""
        return self.start1, self.start2

    def start(self, k: int) -> np.ndarray:
        """NIST starting point ``k`` (1 or 2)."""
        return {1: self.start1, 2: self.start2}[k]


_LINES_RE = r"\(\s*lines\s+(\d+)\s+to\s+(\d+)\s*\)"
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"


def _float(s: str) -> float:
    return float(s.replace("D", "E").replace("d", "e"))


def _line_range(text: str, label: str) -> tuple[int, int]:
    m = re.search(label + r"\s+" + _LINES_RE, text)
    if m is None:
        raise ValueError(f"no '{label} (lines a to b)' entry in header")
    return int(m.group(1)), int(m.group(2))


def _labelled_value(lines, label):
    pat = re.compile(r"^\s*" + label + r":\s*(" + _FLOAT + r")\s*$")
    for line in lines:
        m = pat.match(line)
        if m:
            return m.group(1)
    raise ValueError(f"no '{label}:' line in certified block")


def parse(text: str, name: str = "") -> Dataset:
    """Parse the text of a NIST StRD nonlinear ``.dat`` file."""
    lines = text.splitlines()

    # Block locations, from the "File Format" section of the header.
    s_lo, s_hi = _line_range(text, "Starting Values")
    c_lo, c_hi = _line_range(text, "Certified Values")
    d_lo, d_hi = _line_range(text, "Data")

    # Parameter lines "  b1 =  start1  start2  certified  std".
    param_re = re.compile(
        r"^\s*b(\d+)\s*=\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+("
        + _FLOAT + r")\s+(" + _FLOAT + r")\s*$"
    )
    rows = []
    for line in lines[s_lo - 1:s_hi]:
        m = param_re.match(line)
        if m is None:
            raise ValueError(f"{name}: bad parameter line {line!r}")
        rows.append(m.groups())
    idx = [int(r[0]) for r in rows]
    if idx != list(range(1, len(rows) + 1)):
        raise ValueError(f"{name}: parameters not numbered b1..bp: {idx}")
    table = np.array([[_float(v) for v in r[1:]] for r in rows])

    cert = lines[c_lo - 1:c_hi]
    rss = _float(_labelled_value(cert, "Residual Sum of Squares"))
    rsd = _float(_labelled_value(cert, "Residual Standard Deviation"))
    dof = int(_labelled_value(cert, "Degrees of Freedom"))
    nobs = int(_labelled_value(cert, "Number of Observations"))

    # Model text: from the "Model:" line up to the starting-values table.
    model_start = next(i for i, l in enumerate(lines) if l.startswith("Model:"))
    model_lines = []
    for line in lines[model_start:s_lo - 1]:
        if re.match(r"^\s*Starting values", line, re.IGNORECASE):
            break
        model_lines.append(line[len("Model:"):] if line.startswith("Model:") else line)
    model_text = "\n".join(l.strip() for l in model_lines if l.strip())
    m = re.search(r"(\d+)\s+Parameters", model_text)
    n_params = int(m.group(1)) if m else -1

    m = re.search(r"(Lower|Average|Higher)\s+Level of Difficulty", text)
    difficulty = m.group(1) if m else ""

    # Column names from the "Data:  y  x ..." line just above the data.
    header = lines[d_lo - 2]
    if not header.startswith("Data:"):
        raise ValueError(f"{name}: expected column header before line {d_lo}")
    columns = header[len("Data:"):].split()
    if columns[0] != "y":
        raise ValueError(f"{name}: first data column is {columns[0]!r}, not y")

    data = np.array(
        [[_float(v) for v in line.split()] for line in lines[d_lo - 1:d_hi]
         if line.strip()]
    )
    if data.shape != (nobs, len(columns)):
        raise ValueError(
            f"{name}: data block has shape {data.shape}, expected "
            f"({nobs}, {len(columns)})"
        )
    y = data[:, 0].copy()
    x = data[:, 1].copy() if data.shape[1] == 2 else data[:, 1:].copy()

    return Dataset(
        name=name,
        x=x,
        y=y,
        start1=table[:, 0].copy(),
        start2=table[:, 1].copy(),
        certified_params=table[:, 2].copy(),
        certified_std=table[:, 3].copy(),
        certified_rss=rss,
        certified_residual_sd=rsd,
        degrees_of_freedom=dof,
        n_observations=nobs,
        n_params=n_params,
        difficulty=difficulty,
        model_text=model_text,
        predictor_names=tuple(columns[1:]),
    )


@functools.lru_cache(maxsize=None)
def load(name: str) -> Dataset:
    """Load and parse ``tests/data/nist_strd/<name>.dat``."""
    path = DATA_DIR / f"{name}.dat"
    return parse(path.read_text(encoding="ascii"), name=name)


# ---------------------------------------------------------------------------
# Models, written from the formulas in the file headers
# ---------------------------------------------------------------------------

_PI = math.pi


def _misra1a(b, x, xp):
    return b[0] * (1.0 - xp.exp(-b[1] * x))


def _misra1b(b, x, xp):
    return b[0] * (1.0 - (1.0 + b[1] * x / 2.0) ** (-2.0))


def _misra1c(b, x, xp):
    return b[0] * (1.0 - (1.0 + 2.0 * b[1] * x) ** (-0.5))


def _misra1d(b, x, xp):
    return b[0] * b[1] * x * (1.0 + b[1] * x) ** (-1.0)


def _chwirut(b, x, xp):
    return xp.exp(-b[0] * x) / (b[1] + b[2] * x)


def _lanczos(b, x, xp):
    return (
        b[0] * xp.exp(-b[1] * x)
        + b[2] * xp.exp(-b[3] * x)
        + b[4] * xp.exp(-b[5] * x)
    )


def _gauss(b, x, xp):
    return (
        b[0] * xp.exp(-b[1] * x)
        + b[2] * xp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * xp.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _danwood(b, x, xp):
    return b[0] * x ** b[1]


def _kirby2(b, x, xp):
    return (b[0] + b[1] * x + b[2] * x**2) / (1.0 + b[3] * x + b[4] * x**2)


def _cubic_over_cubic(b, x, xp):  # Hahn1 and Thurber
    num = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    den = 1.0 + b[4] * x + b[5] * x**2 + b[6] * x**3
    return num / den


def _nelson(b, x, xp):
    x1, x2 = x[:, 0], x[:, 1]
    return b[0] - b[1] * x1 * xp.exp(-b[2] * x2)  # model for log(y)


def _mgh17(b, x, xp):
    return b[0] + b[1] * xp.exp(-x * b[3]) + b[2] * xp.exp(-x * b[4])


def _roszman1(b, x, xp):
    return b[0] - b[1] * x - xp.arctan(b[2] / (x - b[3])) / _PI


def _enso(b, x, xp):
    w = 2.0 * _PI * x
    return (
        b[0]
        + b[1] * xp.cos(w / 12.0)
        + b[2] * xp.sin(w / 12.0)
        + b[4] * xp.cos(w / b[3])
        + b[5] * xp.sin(w / b[3])
        + b[7] * xp.cos(w / b[6])
        + b[8] * xp.sin(w / b[6])
    )


def _mgh09(b, x, xp):
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _mgh10(b, x, xp):
    return b[0] * xp.exp(b[1] / (x + b[2]))


def _rat42(b, x, xp):
    return b[0] / (1.0 + xp.exp(b[1] - b[2] * x))


def _rat43(b, x, xp):
    return b[0] / (1.0 + xp.exp(b[1] - b[2] * x)) ** (1.0 / b[3])


def _eckerle4(b, x, xp):
    return (b[0] / b[1]) * xp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _bennett5(b, x, xp):
    return b[0] * (b[1] + x) ** (-1.0 / b[2])


def _boxbod(b, x, xp):
    return b[0] * (1.0 - xp.exp(-b[1] * x))


MODELS: dict[str, Callable] = {
    "Misra1a": _misra1a,
    "Chwirut2": _chwirut,
    "Chwirut1": _chwirut,
    "Lanczos3": _lanczos,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "DanWood": _danwood,
    "Misra1b": _misra1b,
    "Kirby2": _kirby2,
    "Hahn1": _cubic_over_cubic,
    "Nelson": _nelson,
    "MGH17": _mgh17,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Gauss3": _gauss,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Roszman1": _roszman1,
    "ENSO": _enso,
    "MGH09": _mgh09,
    "Thurber": _cubic_over_cubic,
    "BoxBOD": _boxbod,
    "Rat42": _rat42,
    "MGH10": _mgh10,
    "Eckerle4": _eckerle4,
    "Rat43": _rat43,
    "Bennett5": _bennett5,
}

# The model formula exactly as printed in each file (whitespace-normalised
# by the tests); kept next to the code so the two can be compared by eye.
MODEL_FORMULAS: dict[str, str] = {
    "Misra1a": "y = b1*(1-exp[-b2*x]) + e",
    "Chwirut2": "y = exp(-b1*x)/(b2+b3*x) + e",
    "Chwirut1": "y = exp[-b1*x]/(b2+b3*x) + e",
    "Lanczos3": "y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x) + e",
    "Gauss1": "y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) "
              "+ b6*exp( -(x-b7)**2 / b8**2 ) + e",
    "Gauss2": "y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) "
              "+ b6*exp( -(x-b7)**2 / b8**2 ) + e",
    "DanWood": "y = b1*x**b2 + e",
    "Misra1b": "y = b1 * (1-(1+b2*x/2)**(-2)) + e",
    "Kirby2": "y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2) + e",
    "Hahn1": "y = (b1+b2*x+b3*x**2+b4*x**3) / (1+b5*x+b6*x**2+b7*x**3) + e",
    "Nelson": "log[y] = b1 - b2*x1 * exp[-b3*x2] + e",
    "MGH17": "y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5] + e",
    "Lanczos1": "y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x) + e",
    "Lanczos2": "y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x) + e",
    "Gauss3": "y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) "
              "+ b6*exp( -(x-b7)**2 / b8**2 ) + e",
    "Misra1c": "y = b1 * (1-(1+2*b2*x)**(-.5)) + e",
    "Misra1d": "y = b1*b2*x*((1+b2*x)**(-1)) + e",
    "Roszman1": "y = b1 - b2*x - arctan[b3/(x-b4)]/pi + e",
    "ENSO": "y = b1 + b2*cos( 2*pi*x/12 ) + b3*sin( 2*pi*x/12 ) "
            "+ b5*cos( 2*pi*x/b4 ) + b6*sin( 2*pi*x/b4 ) "
            "+ b8*cos( 2*pi*x/b7 ) + b9*sin( 2*pi*x/b7 ) + e",
    "MGH09": "y = b1*(x**2+x*b2) / (x**2+x*b3+b4) + e",
    "Thurber": "y = (b1 + b2*x + b3*x**2 + b4*x**3) / "
               "(1 + b5*x + b6*x**2 + b7*x**3) + e",
    "BoxBOD": "y = b1*(1-exp[-b2*x]) + e",
    "Rat42": "y = b1 / (1+exp[b2-b3*x]) + e",
    "MGH10": "y = b1 * exp[b2/(x+b3)] + e",
    "Eckerle4": "y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2] + e",
    "Rat43": "y = b1 / ((1+exp[b2-b3*x])**(1/b4)) + e",
    "Bennett5": "y = b1 * (b2+x)**(-1/b3) + e",
}

# Datasets whose model is stated for a transformed response.
_LOG_RESPONSE = frozenset({"Nelson"})

DATASETS: tuple[str, ...] = tuple(sorted(MODELS))


def model_fun(name: str, xp) -> Callable:
    """``f(b, x)`` evaluating the NIST model of ``name`` with namespace ``xp``."""
    model = MODELS[name]

    def f(b, x):
        return model(b, x, xp)

    return f


def residual_fun(name: str, xp) -> Callable:
    """``f(b, x, y) -> response - model(b, x)`` for dataset ``name``.

    The response is ``y``, or ``log(y)`` for ``Nelson``.  The certified
    residual sum of squares is ``sum(f(b_cert, x, y)**2)``.  Use as
    ``least_squares(residual_fun(name, np), start, args=residual_args(name))``.
    """
    model = MODELS[name]
    log_response = name in _LOG_RESPONSE

    def f(b, x, y):
        response = xp.log(y) if log_response else y
        return response - model(b, x, xp)

    f.__name__ = f"residual_{name}"
    return f


def residual_args(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of dataset ``name``, to pass as ``args`` to the residual."""
    ds = load(name)
    return ds.x, ds.y
