"""Shared library of nonlinear least-squares test problems.

Every problem is written *once* in "array namespace" style: ``make(xp)``
receives a module providing the NumPy API (``numpy`` itself, used with
:func:`scipy.optimize.least_squares` as the oracle, or ``jax.numpy``, used
with our solver) and returns ``fun(x, *args)`` computing the 1-D residual
vector.  The residual functions are traceable by JAX: outputs are built
with ``xp.stack`` / ``xp.concatenate`` / vectorised expressions, never by
in-place assignment, and there is no Python control flow on array values
(``xp.where`` is used instead).

Most problems are the nonlinear least-squares problems of

    J. J. Moré, B. S. Garbow and K. E. Hillstrom,
    "Testing Unconstrained Optimization Software",
    ACM Transactions on Mathematical Software 7(1), 17-41, 1981
    (referred to as MGH below, with the problem number in the paper),

written from the formulas published there, with the standard starting
points.  ``f_star`` records the optimal value of ``f = ||F(x)||^2`` quoted
in MGH (note: SciPy's ``cost`` is ``0.5 * f``).  Two further problems are
the examples used in the documentation of ``scipy.optimize.least_squares``
(an exponential fit with outliers and a complex-valued residual wrapped
into two real residuals), and a handful of bounded variants of MGH problems
have bounds that are active at the solution, to exercise bound handling.

Public names
------------
``Problem``             the frozen dataclass describing one problem.
``PROBLEMS``            every problem (unbounded then bounded).
``UNBOUNDED_PROBLEMS``  problems without bounds (usable with ``method='lm'``).
``BOUNDED_PROBLEMS``    problems with at least one finite bound.
``MGH_PROBLEMS``        the unbounded MGH problems only.
``JAC_PROBLEMS``        problems carrying an analytic Jacobian.
``PROBLEMS_BY_NAME``    ``{name: Problem}``.
``get_problem(name)``   lookup by name.
``problem_ids(problems)``  names, for ``pytest.mark.parametrize(ids=...)``.
``scipy_solve(problem, **kw)``  run SciPy's ``least_squares`` on the NumPy
                        version of the problem.
``jax_jacobian_numpy(problem)``  exact Jacobian (via ``jax.jacfwd`` in
                        float64) as a NumPy callable, for SciPy oracles.
``enable_x64()``        context manager enabling JAX 64-bit mode locally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Callable

import numpy as np

inf = np.inf

__all__ = [
    "Problem",
    "PROBLEMS",
    "UNBOUNDED_PROBLEMS",
    "BOUNDED_PROBLEMS",
    "MGH_PROBLEMS",
    "JAC_PROBLEMS",
    "PROBLEMS_BY_NAME",
    "get_problem",
    "problem_ids",
    "scipy_solve",
    "jax_jacobian_numpy",
    "reference_is_a_fluke",
    "enable_x64",
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A nonlinear least-squares problem ``min 0.5 * ||fun(x, *args)||^2``.

    Attributes
    ----------
    name:
        Unique identifier (used as pytest id).
    make:
        ``make(xp) -> fun(x, *args)`` returning the 1-D residual vector,
        where ``xp`` is ``numpy`` or ``jax.numpy``.
    x0:
        Starting point (tuple of floats).
    bounds:
        SciPy-style ``(lb, ub)``; scalars or sequences of length ``n``.
    args:
        Extra positional arguments (NumPy arrays of data) passed to ``fun``.
    make_jac:
        Optional ``make(xp) -> jac(x, *args)`` returning the ``(m, n)``
        analytic Jacobian.
    f_star:
        Reference value of ``f = ||F||^2`` (twice SciPy's ``cost``) at the
        minimum that a trust-region Gauss-Newton method (SciPy ``trf`` and
        ``lm``) reaches from ``x0``; for the MGH problems it agrees with
        the value published in MGH to the digits given there.  For the
        bounded variants it is the value found by SciPy 1.17 ``trf`` with
        tight tolerances.  Several problems have other local minima; see
        ``notes``.  ``None`` if there is no reliable reference.
    x_star:
        Reference solution if it is known in closed form, else ``None``.
    source:
        Citation, e.g. ``"MGH 1"``.
    tags:
        Free-form labels: ``"mgh"``, ``"bounded"``, ``"hard"`` (solvers
        routinely stop at a different local minimum or need many
        evaluations), ``"zero-residual"``, ``"data"`` (has ``args``),
        ``"complex"``.
    notes:
        Human-readable remarks.
    """

    name: str
    make: Callable
    x0: tuple
    bounds: tuple = (-inf, inf)
    args: tuple = ()
    make_jac: Callable | None = None
    f_star: float | None = None
    x_star: tuple | None = None
    source: str = ""
    tags: tuple = ()
    notes: str = ""

    def __post_init__(self):
        # ``make(xp)`` returns one function object per namespace: the solver's compiled
        # solves are cached on the function, so tests of one problem with the same
        # settings share a compilation instead of compiling equal programs again.
        object.__setattr__(self, "make", functools.lru_cache(maxsize=None)(self.make))
        if self.make_jac is not None:
            object.__setattr__(self, "make_jac", functools.lru_cache(maxsize=None)(self.make_jac))

    def fun(self, xp):
        """Residual function ``fun(x, *args)`` for the namespace ``xp``."""
        return self.make(xp)

    def jac(self, xp):
        """Analytic Jacobian ``jac(x, *args)`` for ``xp``, or ``None``."""
        return None if self.make_jac is None else self.make_jac(xp)

    @property
    def n(self) -> int:
        """Number of variables."""
        return len(self.x0)

    @property
    def m(self) -> int:
        """Number of residuals (evaluated with NumPy at ``x0``)."""
        return int(np.shape(self.make(np)(self.x0_array(), *self.args))[0])

    @property
    def has_bounds(self) -> bool:
        lb, ub = self.bounds_arrays()
        return bool(np.any(np.isfinite(lb)) or np.any(np.isfinite(ub)))

    @property
    def has_jac(self) -> bool:
        return self.make_jac is not None

    def x0_array(self) -> np.ndarray:
        """Starting point as a float64 NumPy array."""
        return np.asarray(self.x0, dtype=np.float64)

    def bounds_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds broadcast to two float64 arrays of shape ``(n,)``."""
        lb, ub = self.bounds
        lb = np.broadcast_to(np.asarray(lb, dtype=np.float64), (self.n,)).copy()
        ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), (self.n,)).copy()
        return lb, ub

    def cost(self, x) -> float:
        """``0.5 * ||F(x)||^2`` evaluated with NumPy (SciPy's ``cost``)."""
        r = self.make(np)(np.asarray(x, dtype=np.float64), *self.args)
        return 0.5 * float(np.dot(r, r))

    def __repr__(self) -> str:  # short repr for pytest output
        return f"Problem({self.name!r}, n={self.n})"


# ---------------------------------------------------------------------------
# Small helpers (namespace agnostic)
# ---------------------------------------------------------------------------


def _shift_right(xp, v):
    """``(0, v[0], ..., v[-2])`` -- ``v`` shifted with a zero boundary value."""
    return xp.concatenate([xp.zeros_like(v[:1]), v[:-1]])


def _shift_left(xp, v):
    """``(v[1], ..., v[-1], 0)``."""
    return xp.concatenate([v[1:], xp.zeros_like(v[:1])])


# ---------------------------------------------------------------------------
# MGH 1: Rosenbrock (n = 2, m = 2)
# ---------------------------------------------------------------------------


def _rosenbrock(xp):
    def fun(x):
        return xp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    return fun


def _rosenbrock_jac(xp):
    def jac(x):
        return xp.stack(
            [
                xp.stack([-20.0 * x[0], xp.ones_like(x[0]) * 10.0]),
                xp.stack([-xp.ones_like(x[0]), xp.zeros_like(x[0])]),
            ]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 2: Freudenstein and Roth (n = 2, m = 2)
# ---------------------------------------------------------------------------


def _freudenstein_roth(xp):
    def fun(x):
        x1, x2 = x[0], x[1]
        return xp.stack(
            [
                -13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2,
                -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2,
            ]
        )

    return fun


def _freudenstein_roth_jac(xp):
    def jac(x):
        x2 = x[1]
        one = xp.ones_like(x2)
        return xp.stack(
            [
                xp.stack([one, 10.0 * x2 - 3.0 * x2**2 - 2.0]),
                xp.stack([one, 3.0 * x2**2 + 2.0 * x2 - 14.0]),
            ]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 3: Powell badly scaled (n = 2, m = 2)
# ---------------------------------------------------------------------------


def _powell_badly_scaled(xp):
    def fun(x):
        x1, x2 = x[0], x[1]
        return xp.stack(
            [1.0e4 * x1 * x2 - 1.0, xp.exp(-x1) + xp.exp(-x2) - 1.0001]
        )

    return fun


def _powell_badly_scaled_jac(xp):
    def jac(x):
        x1, x2 = x[0], x[1]
        return xp.stack(
            [
                xp.stack([1.0e4 * x2, 1.0e4 * x1]),
                xp.stack([-xp.exp(-x1), -xp.exp(-x2)]),
            ]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 4: Brown badly scaled (n = 2, m = 3)
# ---------------------------------------------------------------------------


def _brown_badly_scaled(xp):
    def fun(x):
        x1, x2 = x[0], x[1]
        return xp.stack([x1 - 1.0e6, x2 - 2.0e-6, x1 * x2 - 2.0])

    return fun


def _brown_badly_scaled_jac(xp):
    def jac(x):
        x1, x2 = x[0], x[1]
        one, zero = xp.ones_like(x1), xp.zeros_like(x1)
        return xp.stack(
            [xp.stack([one, zero]), xp.stack([zero, one]), xp.stack([x2, x1])]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 5: Beale (n = 2, m = 3)
# ---------------------------------------------------------------------------

_BEALE_Y = np.array([1.5, 2.25, 2.625])
_BEALE_I = np.array([1.0, 2.0, 3.0])


def _beale(xp):
    def fun(x):
        return _BEALE_Y - x[0] * (1.0 - x[1] ** _BEALE_I)

    return fun


def _beale_jac(xp):
    def jac(x):
        d1 = -(1.0 - x[1] ** _BEALE_I)
        d2 = x[0] * _BEALE_I * x[1] ** (_BEALE_I - 1.0)
        return xp.stack([d1, d2], axis=1)

    return jac


# ---------------------------------------------------------------------------
# MGH 6: Jennrich and Sampson (n = 2, m = 10)
# ---------------------------------------------------------------------------

_JS_I = np.arange(1.0, 11.0)


def _jennrich_sampson(xp):
    def fun(x):
        return 2.0 + 2.0 * _JS_I - (xp.exp(_JS_I * x[0]) + xp.exp(_JS_I * x[1]))

    return fun


def _jennrich_sampson_jac(xp):
    def jac(x):
        return xp.stack(
            [-_JS_I * xp.exp(_JS_I * x[0]), -_JS_I * xp.exp(_JS_I * x[1])], axis=1
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 7: Helical valley (n = 3, m = 3)
# ---------------------------------------------------------------------------


def _helical_valley(xp):
    def fun(x):
        x1, x2, x3 = x[0], x[1], x[2]
        # MGH: theta = atan(x2/x1)/(2 pi) for x1 > 0, + 1/2 for x1 < 0.
        # atan2 agrees with that branch choice up to a shift of one full
        # turn in the third quadrant, which is added back here; this form
        # is finite (and differentiable) at x1 == 0 as well.
        theta = xp.arctan2(x2, x1) / (2.0 * math.pi)
        theta = theta + xp.where((x1 < 0) & (x2 < 0), 1.0, 0.0)
        return xp.stack(
            [
                10.0 * (x3 - 10.0 * theta),
                10.0 * (xp.sqrt(x1**2 + x2**2) - 1.0),
                x3,
            ]
        )

    return fun


# ---------------------------------------------------------------------------
# MGH 8: Bard (n = 3, m = 15)
# ---------------------------------------------------------------------------

_BARD_Y = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39,
     0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)
_BARD_U = np.arange(1.0, 16.0)
_BARD_V = 16.0 - _BARD_U
_BARD_W = np.minimum(_BARD_U, _BARD_V)


def _bard(xp):
    def fun(x):
        return _BARD_Y - (x[0] + _BARD_U / (_BARD_V * x[1] + _BARD_W * x[2]))

    return fun


def _bard_jac(xp):
    def jac(x):
        den2 = (_BARD_V * x[1] + _BARD_W * x[2]) ** 2
        return xp.stack(
            [
                -xp.ones_like(den2),
                _BARD_U * _BARD_V / den2,
                _BARD_U * _BARD_W / den2,
            ],
            axis=1,
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 9: Gaussian (n = 3, m = 15)
# ---------------------------------------------------------------------------

_GAUSSIAN_Y = np.array(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
     0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)
_GAUSSIAN_T = (8.0 - np.arange(1.0, 16.0)) / 2.0


def _gaussian(xp):
    def fun(x):
        return x[0] * xp.exp(-x[1] * (_GAUSSIAN_T - x[2]) ** 2 / 2.0) - _GAUSSIAN_Y

    return fun


# ---------------------------------------------------------------------------
# MGH 10: Meyer (n = 3, m = 16)
# ---------------------------------------------------------------------------

_MEYER_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
     8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)
_MEYER_T = 45.0 + 5.0 * np.arange(1.0, 17.0)


def _meyer(xp):
    def fun(x):
        return x[0] * xp.exp(x[1] / (_MEYER_T + x[2])) - _MEYER_Y

    return fun


def _meyer_jac(xp):
    def jac(x):
        d = _MEYER_T + x[2]
        e = xp.exp(x[1] / d)
        return xp.stack([e, x[0] * e / d, -x[0] * x[1] * e / d**2], axis=1)

    return jac


# ---------------------------------------------------------------------------
# MGH 11: Gulf research and development (n = 3, m = 99)
# ---------------------------------------------------------------------------

_GULF_M = 99
_GULF_T = np.arange(1.0, _GULF_M + 1.0) / 100.0
_GULF_Y = 25.0 + (-50.0 * np.log(_GULF_T)) ** (2.0 / 3.0)


def _gulf(xp):
    def fun(x):
        return xp.exp(-(xp.abs(_GULF_Y - x[1]) ** x[2]) / x[0]) - _GULF_T

    return fun


# ---------------------------------------------------------------------------
# MGH 12: Box three-dimensional (n = 3, m = 10)
# ---------------------------------------------------------------------------

_BOX_T = 0.1 * np.arange(1.0, 11.0)
_BOX_C = np.exp(-_BOX_T) - np.exp(-10.0 * _BOX_T)


def _box3d(xp):
    def fun(x):
        return xp.exp(-_BOX_T * x[0]) - xp.exp(-_BOX_T * x[1]) - x[2] * _BOX_C

    return fun


def _box3d_jac(xp):
    def jac(x):
        return xp.stack(
            [
                -_BOX_T * xp.exp(-_BOX_T * x[0]),
                _BOX_T * xp.exp(-_BOX_T * x[1]),
                -_BOX_C * xp.ones_like(x[2]),
            ],
            axis=1,
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 13: Powell singular (n = 4, m = 4)
# ---------------------------------------------------------------------------

_SQRT5 = math.sqrt(5.0)
_SQRT10 = math.sqrt(10.0)


def _powell_singular(xp):
    def fun(x):
        x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
        return xp.stack(
            [
                x1 + 10.0 * x2,
                _SQRT5 * (x3 - x4),
                (x2 - 2.0 * x3) ** 2,
                _SQRT10 * (x1 - x4) ** 2,
            ]
        )

    return fun


def _powell_singular_jac(xp):
    def jac(x):
        x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
        one, zero = xp.ones_like(x1), xp.zeros_like(x1)
        a = 2.0 * (x2 - 2.0 * x3)
        b = 2.0 * _SQRT10 * (x1 - x4)
        return xp.stack(
            [
                xp.stack([one, 10.0 * one, zero, zero]),
                xp.stack([zero, zero, _SQRT5 * one, -_SQRT5 * one]),
                xp.stack([zero, a, -2.0 * a, zero]),
                xp.stack([b, zero, zero, -b]),
            ]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 14: Wood (n = 4, m = 6)
# ---------------------------------------------------------------------------

_SQRT90 = math.sqrt(90.0)


def _wood(xp):
    def fun(x):
        x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
        return xp.stack(
            [
                10.0 * (x2 - x1**2),
                1.0 - x1,
                _SQRT90 * (x4 - x3**2),
                1.0 - x3,
                _SQRT10 * (x2 + x4 - 2.0),
                (x2 - x4) / _SQRT10,
            ]
        )

    return fun


def _wood_jac(xp):
    def jac(x):
        x1, x3 = x[0], x[2]
        one, zero = xp.ones_like(x1), xp.zeros_like(x1)
        return xp.stack(
            [
                xp.stack([-20.0 * x1, 10.0 * one, zero, zero]),
                xp.stack([-one, zero, zero, zero]),
                xp.stack([zero, zero, -2.0 * _SQRT90 * x3, _SQRT90 * one]),
                xp.stack([zero, zero, -one, zero]),
                xp.stack([zero, _SQRT10 * one, zero, _SQRT10 * one]),
                xp.stack([zero, one / _SQRT10, zero, -one / _SQRT10]),
            ]
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 15: Kowalik and Osborne (n = 4, m = 11)
# ---------------------------------------------------------------------------

_KO_Y = np.array(
    [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627,
     0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
_KO_U = np.array(
    [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]
)


def _kowalik_osborne(xp):
    def fun(x):
        num = _KO_U**2 + _KO_U * x[1]
        den = _KO_U**2 + _KO_U * x[2] + x[3]
        return _KO_Y - x[0] * num / den

    return fun


def _kowalik_osborne_jac(xp):
    def jac(x):
        num = _KO_U**2 + _KO_U * x[1]
        den = _KO_U**2 + _KO_U * x[2] + x[3]
        return xp.stack(
            [
                -num / den,
                -x[0] * _KO_U / den,
                x[0] * num * _KO_U / den**2,
                x[0] * num / den**2,
            ],
            axis=1,
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 16: Brown and Dennis (n = 4, m = 20)
# ---------------------------------------------------------------------------

_BD_T = np.arange(1.0, 21.0) / 5.0


def _brown_dennis(xp):
    def fun(x):
        a = x[0] + _BD_T * x[1] - np.exp(_BD_T)
        b = x[2] + x[3] * np.sin(_BD_T) - np.cos(_BD_T)
        return a**2 + b**2

    return fun


# ---------------------------------------------------------------------------
# MGH 17: Osborne 1 (n = 5, m = 33)
# ---------------------------------------------------------------------------

_OS1_Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784,
     0.751, 0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522,
     0.506, 0.490, 0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420,
     0.414, 0.411, 0.406]
)
_OS1_T = 10.0 * np.arange(0.0, 33.0)


def _osborne1(xp):
    def fun(x):
        model = (
            x[0]
            + x[1] * xp.exp(-_OS1_T * x[3])
            + x[2] * xp.exp(-_OS1_T * x[4])
        )
        return _OS1_Y - model

    return fun


def _osborne1_jac(xp):
    def jac(x):
        e4 = xp.exp(-_OS1_T * x[3])
        e5 = xp.exp(-_OS1_T * x[4])
        return xp.stack(
            [
                -xp.ones_like(e4),
                -e4,
                -e5,
                x[1] * _OS1_T * e4,
                x[2] * _OS1_T * e5,
            ],
            axis=1,
        )

    return jac


# ---------------------------------------------------------------------------
# MGH 18: Biggs EXP6 (n = 6, m = 13)
# ---------------------------------------------------------------------------

_BIGGS_T = 0.1 * np.arange(1.0, 14.0)
_BIGGS_Y = np.exp(-_BIGGS_T) - 5.0 * np.exp(-10.0 * _BIGGS_T) + 3.0 * np.exp(
    -4.0 * _BIGGS_T
)


def _biggs_exp6(xp):
    def fun(x):
        return (
            x[2] * xp.exp(-_BIGGS_T * x[0])
            - x[3] * xp.exp(-_BIGGS_T * x[1])
            + x[5] * xp.exp(-_BIGGS_T * x[4])
            - _BIGGS_Y
        )

    return fun


# ---------------------------------------------------------------------------
# MGH 19: Osborne 2 (n = 11, m = 65)
# ---------------------------------------------------------------------------

_OS2_Y = np.array(
    [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725,
     0.746, 0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724,
     0.649, 0.649, 0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495,
     0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429,
     0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632,
     0.591, 0.559, 0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581,
     0.428, 0.292, 0.162, 0.098, 0.054]
)
_OS2_T = np.arange(0.0, 65.0) / 10.0


def _osborne2(xp):
    def fun(x):
        t = _OS2_T
        model = (
            x[0] * xp.exp(-t * x[4])
            + x[1] * xp.exp(-((t - x[8]) ** 2) * x[5])
            + x[2] * xp.exp(-((t - x[9]) ** 2) * x[6])
            + x[3] * xp.exp(-((t - x[10]) ** 2) * x[7])
        )
        return _OS2_Y - model

    return fun


# ---------------------------------------------------------------------------
# MGH 20: Watson (2 <= n <= 31, m = 31)
# ---------------------------------------------------------------------------

_WATSON_T = np.arange(1.0, 30.0) / 29.0


def _make_watson(n):
    j = np.arange(1.0, n + 1.0)
    # P[i, j-1] = t_i^(j-1) and dP[i, j-1] = (j-1) t_i^(j-2) (zero for j=1).
    powers = _WATSON_T[:, None] ** (j - 1.0)
    dpowers = np.hstack(
        [np.zeros((29, 1)), (j[1:] - 1.0) * _WATSON_T[:, None] ** (j[1:] - 2.0)]
    )

    def make(xp):
        def fun(x):
            s1 = dpowers @ x
            s2 = powers @ x
            head = s1 - s2**2 - 1.0
            return xp.concatenate(
                [head, xp.stack([x[0], x[1] - x[0] ** 2 - 1.0])]
            )

        return fun

    return make


# ---------------------------------------------------------------------------
# MGH 21: Extended Rosenbrock (n even, m = n)
# ---------------------------------------------------------------------------


def _extended_rosenbrock(xp):
    def fun(x):
        xo, xe = x[0::2], x[1::2]
        return xp.reshape(
            xp.stack([10.0 * (xe - xo**2), 1.0 - xo], axis=1), (-1,)
        )

    return fun


def _extended_rosenbrock_jac(xp):
    def jac(x):
        xo = x[0::2]
        zero = xp.zeros_like(xo)
        one = xp.ones_like(xo)
        main = xp.reshape(xp.stack([-20.0 * xo, zero], axis=1), (-1,))
        sup = xp.reshape(xp.stack([10.0 * one, zero], axis=1), (-1,))[:-1]
        sub = xp.reshape(xp.stack([-one, zero], axis=1), (-1,))[:-1]
        return xp.diag(main) + xp.diag(sup, 1) + xp.diag(sub, -1)

    return jac


# ---------------------------------------------------------------------------
# MGH 23: Penalty function I (n variable, m = n + 1)
# ---------------------------------------------------------------------------

_SQRT_PEN_A = math.sqrt(1.0e-5)


def _penalty1(xp):
    def fun(x):
        return xp.concatenate(
            [_SQRT_PEN_A * (x - 1.0), xp.reshape(xp.sum(x**2) - 0.25, (1,))]
        )

    return fun


# ---------------------------------------------------------------------------
# MGH 24: Penalty function II (n variable, m = 2n)
# ---------------------------------------------------------------------------


def _make_penalty2(n):
    i = np.arange(2.0, n + 1.0)
    y = np.exp(i / 10.0) + np.exp((i - 1.0) / 10.0)
    weights = np.arange(n, 0, -1, dtype=np.float64)  # n - j + 1, j = 1..n

    def make(xp):
        def fun(x):
            e = xp.exp(x / 10.0)
            first = xp.reshape(x[0] - 0.2, (1,))
            mid = _SQRT_PEN_A * (e[1:] + e[:-1] - y)
            tail = _SQRT_PEN_A * (e[1:] - math.exp(-0.1))
            last = xp.reshape(xp.sum(weights * x**2) - 1.0, (1,))
            return xp.concatenate([first, mid, tail, last])

        return fun

    return make


# ---------------------------------------------------------------------------
# MGH 25: Variably dimensioned (n variable, m = n + 2)
# ---------------------------------------------------------------------------


def _variably_dimensioned(xp):
    def fun(x):
        j = xp.arange(1, x.shape[0] + 1)
        s = xp.sum(j * (x - 1.0))
        return xp.concatenate([x - 1.0, xp.stack([s, s**2])])

    return fun


# ---------------------------------------------------------------------------
# MGH 26: Trigonometric (n variable, m = n)
# ---------------------------------------------------------------------------


def _trigonometric(xp):
    def fun(x):
        n = x.shape[0]
        i = xp.arange(1, n + 1)
        return n - xp.sum(xp.cos(x)) + i * (1.0 - xp.cos(x)) - xp.sin(x)

    return fun


# ---------------------------------------------------------------------------
# MGH 27: Brown almost-linear (n variable, m = n)
# ---------------------------------------------------------------------------


def _brown_almost_linear(xp):
    def fun(x):
        n = x.shape[0]
        lin = x[:-1] + xp.sum(x) - (n + 1.0)
        return xp.concatenate([lin, xp.reshape(xp.prod(x) - 1.0, (1,))])

    return fun


def _brown_almost_linear_jac(xp):
    def jac(x):
        n = x.shape[0]
        lin = xp.ones((n - 1, n), dtype=x.dtype) + xp.eye(n - 1, n, dtype=x.dtype)
        # d/dx_j prod(x) = prod_{k != j} x_k, computed without division.
        left = xp.cumprod(xp.concatenate([xp.ones_like(x[:1]), x[:-1]]))
        right = xp.flip(
            xp.cumprod(xp.concatenate([xp.ones_like(x[:1]), xp.flip(x[1:])]))
        )
        return xp.concatenate([lin, xp.reshape(left * right, (1, n))])

    return jac


# ---------------------------------------------------------------------------
# MGH 28: Discrete boundary value (n variable, m = n)
# ---------------------------------------------------------------------------


def _discrete_boundary_value(xp):
    def fun(x):
        n = x.shape[0]
        h = 1.0 / (n + 1.0)
        t = xp.arange(1, n + 1) * h
        return (
            2.0 * x
            - _shift_right(xp, x)
            - _shift_left(xp, x)
            + h**2 * (x + t + 1.0) ** 3 / 2.0
        )

    return fun


# ---------------------------------------------------------------------------
# MGH 30: Broyden tridiagonal (n variable, m = n)
# ---------------------------------------------------------------------------


def _broyden_tridiagonal(xp):
    def fun(x):
        return (3.0 - 2.0 * x) * x - _shift_right(xp, x) - 2.0 * _shift_left(xp, x) + 1.0

    return fun


def _broyden_tridiagonal_jac(xp):
    def jac(x):
        n = x.shape[0]
        off = xp.ones((n - 1,), dtype=x.dtype)
        return xp.diag(3.0 - 4.0 * x) - xp.diag(off, -1) - 2.0 * xp.diag(off, 1)

    return jac


# ---------------------------------------------------------------------------
# MGH 32: Linear function -- full rank (n variable, m >= n)
# ---------------------------------------------------------------------------


def _make_linear_full_rank(m):
    def make(xp):
        def fun(x):
            n = x.shape[0]
            s = 2.0 / m * xp.sum(x)
            pad = xp.zeros((m - n,), dtype=x.dtype)
            return xp.concatenate([x, pad]) - s - 1.0

        return fun

    return make


def _make_linear_full_rank_jac(m, n):
    a = np.vstack([np.eye(n), np.zeros((m - n, n))]) - 2.0 / m

    def make(xp):
        def jac(x):
            return xp.asarray(a, dtype=x.dtype)

        return jac

    return make


# ---------------------------------------------------------------------------
# MGH 35: Chebyquad (n variable, m >= n)
# ---------------------------------------------------------------------------


def _make_chebyquad(m):
    i = np.arange(1.0, m + 1.0)
    # integral over [0, 1] of the shifted Chebyshev polynomial T_i(2x - 1)
    integrals = np.array([-1.0 / (k * k - 1.0) if k % 2 == 0 else 0.0 for k in i])

    def make(xp):
        def fun(x):
            y = 2.0 * x - 1.0
            t_prev, t_cur = xp.ones_like(y), y
            rows = [t_cur]
            for _ in range(m - 1):  # three-term recurrence, unrolled
                t_prev, t_cur = t_cur, 2.0 * y * t_cur - t_prev
                rows.append(t_cur)
            return xp.mean(xp.stack(rows), axis=1) - integrals

        return fun

    return make


# ---------------------------------------------------------------------------
# SciPy documentation examples
# ---------------------------------------------------------------------------


def _exp_fit_data(seed=0, n_points=15, a=0.5, b=2.0, c=-1.0, noise=0.1,
                  n_outliers=3):
    """Noisy samples of ``a + b * exp(c * t)`` on ``[0, 10]`` with outliers.

    Mirrors the data generator of the robust-fitting example in the
    ``scipy.optimize.least_squares`` documentation, with a fixed seed so the
    data are reproducible.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, n_points)
    y = a + b * np.exp(c * t)
    error = noise * rng.standard_normal(t.size)
    outliers = rng.integers(0, t.size, n_outliers)
    error[outliers] *= 10.0
    return t, y + error


_EXPFIT_T, _EXPFIT_Y = _exp_fit_data()


def _exp_fit(xp):
    def fun(x, t, y):
        return x[0] + x[1] * xp.exp(x[2] * t) - y

    return fun


def _exp_fit_jac(xp):
    def jac(x, t, y):
        e = xp.exp(x[2] * t)
        return xp.stack([xp.ones_like(e), e, x[1] * t * e], axis=1)

    return jac


def _complex_wrapped(xp):
    def fun(x):
        z = x[0] + 1j * x[1]
        fz = z - (0.5 + 0.5j)
        return xp.stack([xp.real(fz), xp.imag(fz)])

    return fun


# ---------------------------------------------------------------------------
# Problem lists
# ---------------------------------------------------------------------------

_M = ("mgh",)

MGH_PROBLEMS = [
    Problem("rosenbrock", _rosenbrock, (-1.2, 1.0), make_jac=_rosenbrock_jac,
            f_star=0.0, x_star=(1.0, 1.0), source="MGH 1",
            tags=_M + ("zero-residual",)),
    Problem("freudenstein_roth", _freudenstein_roth, (0.5, -2.0),
            make_jac=_freudenstein_roth_jac, f_star=48.9842,
            source="MGH 2", tags=_M + ("hard",),
            notes="f = 0 at (5, 4); local minimum f = 48.9842 at "
                  "(11.41..., -0.8968...), which is what most solvers find."),
    Problem("powell_badly_scaled", _powell_badly_scaled, (0.0, 1.0),
            make_jac=_powell_badly_scaled_jac, f_star=0.0, source="MGH 3",
            tags=_M + ("zero-residual",),
            notes="solution (1.098...e-5, 9.106...)"),
    Problem("brown_badly_scaled", _brown_badly_scaled, (1.0, 1.0),
            make_jac=_brown_badly_scaled_jac, f_star=0.0,
            x_star=(1.0e6, 2.0e-6), source="MGH 4",
            tags=_M + ("zero-residual",)),
    Problem("beale", _beale, (1.0, 1.0), make_jac=_beale_jac, f_star=0.0,
            x_star=(3.0, 0.5), source="MGH 5", tags=_M + ("zero-residual",)),
    Problem("jennrich_sampson", _jennrich_sampson, (0.3, 0.4),
            make_jac=_jennrich_sampson_jac, f_star=124.362,
            source="MGH 6 (m = 10)", tags=_M,
            notes="minimum at x1 = x2 = 0.2578"),
    Problem("helical_valley", _helical_valley, (-1.0, 0.0, 0.0), f_star=0.0,
            x_star=(1.0, 0.0, 0.0), source="MGH 7",
            tags=_M + ("zero-residual",)),
    Problem("bard", _bard, (1.0, 1.0, 1.0), make_jac=_bard_jac,
            f_star=8.21487e-3, source="MGH 8", tags=_M,
            notes="another local minimum f = 17.4286 at (0.8406, -inf, -inf)"),
    Problem("gaussian", _gaussian, (0.4, 1.0, 0.0), f_star=1.12793e-8,
            source="MGH 9", tags=_M),
    Problem("meyer", _meyer, (0.02, 4000.0, 250.0), make_jac=_meyer_jac,
            f_star=87.9458, source="MGH 10", tags=_M + ("hard",),
            notes="badly scaled; solution about (0.0056, 6181.3, 345.22)"),
    Problem("gulf", _gulf, (5.0, 2.5, 0.15), f_star=0.0,
            x_star=(50.0, 25.0, 1.5), source="MGH 11 (m = 99)",
            tags=_M + ("zero-residual", "hard")),
    Problem("box3d", _box3d, (0.0, 10.0, 20.0), make_jac=_box3d_jac,
            f_star=0.0, source="MGH 12 (m = 10)",
            tags=_M + ("zero-residual",),
            notes="zeros at (1, 10, 1), (10, 1, -1) and x1 = x2, x3 = 0"),
    Problem("powell_singular", _powell_singular, (3.0, -1.0, 0.0, 1.0),
            make_jac=_powell_singular_jac, f_star=0.0,
            x_star=(0.0, 0.0, 0.0, 0.0), source="MGH 13",
            tags=_M + ("zero-residual",),
            notes="Jacobian singular at the solution"),
    Problem("wood", _wood, (-3.0, -1.0, -3.0, -1.0), make_jac=_wood_jac,
            f_star=0.0, x_star=(1.0, 1.0, 1.0, 1.0), source="MGH 14",
            tags=_M + ("zero-residual",)),
    Problem("kowalik_osborne", _kowalik_osborne, (0.25, 0.39, 0.415, 0.39),
            make_jac=_kowalik_osborne_jac, f_star=3.07505e-4,
            source="MGH 15", tags=_M,
            notes="another minimum f = 1.02734e-3 at infinity"),
    Problem("brown_dennis", _brown_dennis, (25.0, 5.0, -5.0, -1.0),
            f_star=85822.2, source="MGH 16 (m = 20)", tags=_M),
    Problem("osborne1", _osborne1, (0.5, 1.5, -1.0, 0.01, 0.02),
            make_jac=_osborne1_jac, f_star=5.46489e-5, source="MGH 17",
            tags=_M),
    Problem("biggs_exp6", _biggs_exp6, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0),
            f_star=0.0, x_star=(1.0, 10.0, 1.0, 5.0, 4.0, 3.0),
            source="MGH 18 (m = 13)", tags=_M + ("hard", "zero-residual"),
            notes="f = 0 at (1, 10, 1, 5, 4, 3) (found by SciPy trf and lm); "
                  "MGH also quote a local minimum f = 5.65565e-3"),
    Problem("osborne2", _osborne2,
            (1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5),
            f_star=4.01377e-2, source="MGH 19", tags=_M),
    Problem("watson6", _make_watson(6), (0.0,) * 6, f_star=2.28767e-3,
            source="MGH 20 (n = 6)", tags=_M),
    Problem("watson9", _make_watson(9), (0.0,) * 9, f_star=1.39976e-6,
            source="MGH 20 (n = 9)", tags=_M),
    Problem("extended_rosenbrock10", _extended_rosenbrock, (-1.2, 1.0) * 5,
            make_jac=_extended_rosenbrock_jac, f_star=0.0,
            x_star=(1.0,) * 10, source="MGH 21 (n = 10)",
            tags=_M + ("zero-residual",)),
    Problem("penalty1_10", _penalty1, tuple(float(j) for j in range(1, 11)),
            f_star=7.08765e-5, source="MGH 23 (n = 10)", tags=_M),
    Problem("penalty2_10", _make_penalty2(10), (0.5,) * 10,
            f_star=2.93660e-4, source="MGH 24 (n = 10)", tags=_M),
    Problem("variably_dimensioned10", _variably_dimensioned,
            tuple(1.0 - j / 10.0 for j in range(1, 11)), f_star=0.0,
            x_star=(1.0,) * 10, source="MGH 25 (n = 10)",
            tags=_M + ("zero-residual",)),
    Problem("trigonometric10", _trigonometric, (0.1,) * 10,
            f_star=2.79506e-5, source="MGH 26 (n = 10)", tags=_M,
            notes="global minimum f = 0; from x0 SciPy trf and lm reach the "
                  "local minimum f = 2.79506e-5 quoted in MGH"),
    Problem("brown_almost_linear10", _brown_almost_linear, (0.5,) * 10,
            make_jac=_brown_almost_linear_jac, f_star=0.0,
            x_star=(1.0,) * 10, source="MGH 27 (n = 10)",
            tags=_M + ("zero-residual",),
            notes="zeros at (a, ..., a, a^(1-n)); local minimum f = 1 at "
                  "(0, ..., 0, n + 1)"),
    Problem("discrete_boundary_value10", _discrete_boundary_value,
            tuple((j / 11.0) * (j / 11.0 - 1.0) for j in range(1, 11)),
            f_star=0.0, source="MGH 28 (n = 10)",
            tags=_M + ("zero-residual",)),
    Problem("broyden_tridiagonal10", _broyden_tridiagonal, (-1.0,) * 10,
            make_jac=_broyden_tridiagonal_jac, f_star=0.0,
            source="MGH 30 (n = 10)", tags=_M + ("zero-residual",)),
    Problem("linear_full_rank", _make_linear_full_rank(10), (1.0,) * 5,
            make_jac=_make_linear_full_rank_jac(10, 5), f_star=5.0,
            x_star=(-1.0,) * 5, source="MGH 32 (n = 5, m = 10)", tags=_M,
            notes="f = m - n at x = -1"),
    Problem("chebyquad8", _make_chebyquad(8),
            tuple(j / 9.0 for j in range(1, 9)), f_star=3.51687e-3,
            source="MGH 35 (n = m = 8)", tags=_M),
]

SCIPY_DOC_PROBLEMS = [
    Problem("exp_fit_outliers", _exp_fit, (1.0, 1.0, 0.0),
            args=(_EXPFIT_T, _EXPFIT_Y), make_jac=_exp_fit_jac,
            source="scipy.optimize.least_squares docs (robust fitting)",
            f_star=4.75239, tags=("data", "robust", "hard"),
            notes="true parameters (0.5, 2.0, -1.0); noise 0.1, 3 outliers, "
                  "numpy default_rng(0); intended for the robust losses. "
                  "Caution with loss='linear': the Jacobian is singular at "
                  "x0 (c = 0 makes the a and b columns equal) and SciPy trf "
                  "drifts along the degenerate valley a -> +inf, b -> -inf, "
                  "c -> 0 until max_nfev (status 0, f ~ 5.79), whereas lm "
                  "and dogbox converge to f = 4.75239 at "
                  "(-0.01738, 2.29727, -0.37061).  With loss='soft_l1', "
                  "f_scale=0.1 trf converges to about (0.439, 2.046, -0.829)."),
]

UNBOUNDED_PROBLEMS = MGH_PROBLEMS + SCIPY_DOC_PROBLEMS

BOUNDED_PROBLEMS = [
    Problem("rosenbrock_bounded_doc", _rosenbrock, (2.0, 2.0),
            bounds=([-inf, 1.5], inf), make_jac=_rosenbrock_jac,
            source="scipy.optimize.least_squares docs",
            f_star=0.0504262, x_star=(1.2243707487, 1.5),
            tags=("mgh", "bounded"),
            notes="x2 >= 1.5 is active at the solution "
                  "(1.2243707..., 1.5)"),
    Problem("complex_wrapped", _complex_wrapped, (0.1, 0.1),
            bounds=([0.0, 0.0], [1.0, 1.0]), f_star=0.0,
            x_star=(0.5, 0.5),
            source="scipy.optimize.least_squares docs (complex variables)",
            tags=("bounded", "complex", "zero-residual"),
            notes="f(z) = z - (0.5 + 0.5j) split into real and imaginary "
                  "parts; bounds inactive at the solution"),
    Problem("rosenbrock_ub", _rosenbrock, (-1.2, 1.0),
            bounds=(-inf, [0.5, inf]), make_jac=_rosenbrock_jac,
            f_star=0.25, x_star=(0.5, 0.25), source="MGH 1, bounded",
            tags=("mgh", "bounded"), notes="x1 <= 0.5 active"),
    Problem("powell_singular_lb", _powell_singular, (3.0, -1.0, 0.0, 1.0),
            bounds=([0.1, -inf, -inf, 0.1], inf),
            make_jac=_powell_singular_jac, f_star=1.71439e-3,
            source="MGH 13, bounded", tags=("mgh", "bounded"),
            notes="x1 >= 0.1 and x4 >= 0.1 both active; solution about "
                  "(0.1, -0.0098459, 0.0938354, 0.1)"),
    Problem("box3d_bounded", _box3d, (0.0, 10.0, 20.0),
            bounds=([0.0, 0.0, 1.5], [10.0, 20.0, 30.0]),
            make_jac=_box3d_jac, f_star=8.61296e-2,
            source="MGH 12, bounded", tags=("mgh", "bounded"),
            notes="x3 >= 1.5 excludes all zeros of the unbounded problem; "
                  "x0 lies on the bound x1 = 0; solution about "
                  "(0.408973, 20, 1.5) with x2 <= 20 and x3 >= 1.5 active"),
    Problem("wood_bounded", _wood, (-3.0, -1.0, -3.0, -1.0),
            bounds=([-100.0, -100.0, -100.0, -100.0], [0.0, 10.0, 100.0, 100.0]),
            make_jac=_wood_jac, f_star=1.55670,
            source="MGH 14, bounded", tags=("mgh", "bounded"),
            notes="x1 <= 0 active; solution about "
                  "(0, 0.0053389, 1.3997289, 1.9608275)"),
    Problem("beale_bounded", _beale, (1.0, 1.0),
            bounds=([0.0, 0.0], [2.5, 1.5]), make_jac=_beale_jac,
            f_star=7.27001e-2, source="MGH 5, bounded",
            tags=("mgh", "bounded"),
            notes="x1 <= 2.5 active; solution about (2.5, 0.3500635)"),
    Problem("osborne1_bounded", _osborne1, (0.5, 1.5, -1.0, 0.01, 0.02),
            bounds=([0.0, 0.0, -2.0, 0.0, 0.0], [1.0, 1.5, 0.0, 0.1, 0.1]),
            make_jac=_osborne1_jac, f_star=7.51829e-5,
            source="MGH 17, bounded", tags=("mgh", "bounded"),
            notes="x2 <= 1.5 (its value at x0) is active; solution about "
                  "(0.369177, 1.5, -1.024061, 0.0117, 0.0247763)"),
    Problem("exp_fit_bounded", _exp_fit, (1.0, 1.0, 0.0),
            args=(_EXPFIT_T, _EXPFIT_Y), bounds=([0.6, 0.0, -5.0], [5.0, 5.0, 0.0]),
            make_jac=_exp_fit_jac, f_star=6.43394,
            source="exp_fit_outliers with bounds", tags=("data", "bounded"),
            notes="a >= 0.6 active; solution about (0.6, 1.888327, -0.909258)"),
]

PROBLEMS = UNBOUNDED_PROBLEMS + BOUNDED_PROBLEMS
JAC_PROBLEMS = [p for p in PROBLEMS if p.make_jac is not None]
PROBLEMS_BY_NAME = {p.name: p for p in PROBLEMS}
assert len(PROBLEMS_BY_NAME) == len(PROBLEMS), "duplicate problem names"


def get_problem(name: str) -> Problem:
    """Return the problem called ``name``."""
    return PROBLEMS_BY_NAME[name]


def problem_ids(problems=None) -> list[str]:
    """Problem names, for ``pytest.mark.parametrize(..., ids=...)``.

    Works both as ``problem_ids(PROBLEMS)`` and as an ``ids=`` callable
    (``ids=problem_ids``), in which case it receives a single Problem.
    """
    if problems is None:
        problems = PROBLEMS
    if isinstance(problems, Problem):
        return problems.name
    return [p.name for p in problems]


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def enable_x64():
    """Context manager turning on JAX float64 locally (no conftest needed)."""
    import jax

    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # older JAX
        from jax.experimental import enable_x64 as ctx
    with ctx(True):
        yield


def jax_jacobian_numpy(problem: Problem) -> Callable:
    """Exact Jacobian of ``problem`` as a NumPy-in / NumPy-out callable.

    Uses the analytic Jacobian when the problem has one, otherwise
    ``jax.jacfwd`` of the ``jax.numpy`` residual evaluated in float64.
    Handy for running SciPy with an exact Jacobian as an oracle.
    """
    if problem.make_jac is not None:
        return problem.make_jac(np)
    if problem.name not in _JACOBIANS:  # one compiled Jacobian per problem
        _JACOBIANS[problem.name] = _jax_jacobian_numpy(problem)
    return _JACOBIANS[problem.name]


_JACOBIANS = {}


def _jax_jacobian_numpy(problem):
    import jax
    import jax.numpy as jnp

    with enable_x64():
        jac_fn = jax.jit(jax.jacfwd(problem.make(jnp)))

    def jac(x, *args):
        with enable_x64():
            return np.asarray(jac_fn(jnp.asarray(x, dtype=jnp.float64), *args))

    return jac


def scipy_solve(problem: Problem, *, jac=None, **kw):
    """Solve ``problem`` with :func:`scipy.optimize.least_squares` (NumPy).

    Parameters
    ----------
    problem:
        The problem.
    jac:
        ``None`` (default): the analytic Jacobian if the problem has one,
        otherwise SciPy's ``'2-point'``.  ``"exact"``: analytic or JAX
        (float64) Jacobian, see :func:`jax_jacobian_numpy`.  Anything else
        is passed through to SciPy (``'2-point'``, ``'3-point'``, ``'cs'``,
        a callable).
    **kw:
        Forwarded to ``least_squares`` (``method``, ``loss``, ``x_scale``,
        ``xtol``, ...).  ``bounds`` are taken from the problem unless given.
        ``method='lm'`` is only valid for unbounded problems.

    Returns
    -------
    scipy.optimize.OptimizeResult
    """
    from scipy.optimize import least_squares

    if jac is None:
        jac = problem.make_jac(np) if problem.make_jac is not None else "2-point"
    elif isinstance(jac, str) and jac == "exact":
        jac = jax_jacobian_numpy(problem)
    kw.setdefault("bounds", problem.bounds)
    return least_squares(
        problem.make(np), problem.x0_array(), jac=jac, args=problem.args, **kw
    )


def reference_is_a_fluke(solve, x0, succeeded, trials=3, rel=1e-13, seed=0):
    """Whether a reference solver's outcome from ``x0`` hangs on rounding.

    On chaotic problems (a Jacobian with condition number near 1/eps, a path through
    many near-rejections) the iterates depend on the last bits of every operation, and
    so on the CPU's instruction set: SciPy's ``dogbox`` reaches Biggs EXP6's zero
    residual from the MGH start but fails from 7 of 7 starts moved by 1e-13 relative.
    A comparison with such an outcome says nothing about the solver under test. This
    reruns ``solve(x)`` from ``trials`` starts ``x0 * (1 + rel * N(0, 1))`` and returns
    True when any of them fails ``succeeded(result)``. Tests call it only after their
    comparison has failed, so a robust reference still binds.
    """
    rng = np.random.default_rng(seed)
    x0 = np.asarray(x0, np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for _ in range(trials):
            if not succeeded(solve(x0 * (1 + rel * rng.standard_normal(x0.shape)))):
                return True
    return False
