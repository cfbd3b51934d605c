"""``least_squares``: SciPy's interface over the compiled solvers."""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._host import host_call, is_tracer, output_struct, reraise_host_errors
from ._host import split_data as _split_data
from ._implicit import implicit_solution, implicit_tangent
from ._iterate import iterate
from ._jacobian import (
    HostOperatorJac,
    JacobianLinearOperator,
    ResidualFunction,
    SparseJacobian,
    Sparsity,
    host_operator,
)
from ._sparsity import colour_columns, dia_layout, ell_layout, structure_coo
from ._kernels.bounds import make_strictly_feasible
from ._result import OptimizeResult
from ._solvers.dogbox import Dogbox
from ._solvers.lm import LM
from ._solvers.normal_lm import NormalLM
from ._solvers.trf import TRF, LsqData

# The solver class for each `method`; all take the same settings (see `solver_cfg`).
# "lm-normal" is offered by `least_squares_batch` only (not a SciPy method).
_SOLVERS = {"trf": TRF, "dogbox": Dogbox, "lm": LM, "lm-normal": NormalLM}


class _HostLoss:
    """A NumPy ``loss(z)`` callable made callable inside a trace."""

    def __init__(self, loss, m, dtype):
        self.loss, self.m, self.dtype = loss, m, dtype

    def __call__(self, z):
        return host_call(lambda z_: self.loss(z_), z, (), {}, (3, self.m), self.dtype)

    def __hash__(self):
        return hash((self.loss, self.m, str(self.dtype)))

    def __eq__(self, other):
        return isinstance(other, _HostLoss) and (self.loss, self.m, self.dtype) == (other.loss, other.m, other.dtype)


@functools.lru_cache(maxsize=256)
def build_solver(config):
    """The solver of one static configuration, with ``data_of(theta)`` (the solver's
    data from the traced arguments), ``run(x0, theta)`` (the solve), ``solution(x0,
    theta)`` (the solve, differentiable by implicit differentiation; not yet jitted) and
    ``tangent(out, theta, dtheta, batched=False)`` (the tangent of a solve's result
    ``out``, for drivers that run the solve themselves; ``batched`` when they vmap it)."""
    method, residual_cfg, solver_cfg, static = config
    residuals = ResidualFunction(*residual_cfg)
    solver = _SOLVERS[method](residuals, *solver_cfg)

    def data_of(theta):
        dyn, lb, ub, x_scale, f_scale, diff_step, f0, sparsity, lsmr_x0 = theta
        args, kwargs = eqx.combine(dyn, static.tree())
        return LsqData(
            lb=lb, ub=ub, x_scale=x_scale, f_scale=f_scale, diff_step=diff_step, args=args, kwargs=kwargs, f0=f0,
            sparsity=sparsity, lsmr_x0=lsmr_x0,
        )

    def run(x0, theta):
        return iterate(solver, x0, data_of(theta))

    def cost(x, theta):
        if residuals.fun_on_host:
            raise TypeError(
                "Differentiating a least_squares solution needs a JAX-traceable `fun`; "
                "this one runs on the host through jax.pure_callback."
            )
        return solver.cost(x, data_of(theta))

    def fields(x, theta):
        return solver.result_fields(x, data_of(theta))

    def bounds_of(theta):
        return theta[1], theta[2]

    solution = implicit_solution(run, cost, fields, bounds_of)

    def tangent(out, theta, dtheta, batched=False):
        return implicit_tangent(out, theta, dtheta, cost, fields, bounds_of, batched=batched)

    return solver, data_of, run, solution, tangent


@functools.lru_cache(maxsize=256)
def _compiled_solve(config):
    """The jitted solve for one static configuration (a plain tuple: cheap to hash).

    Data (``x0``, bounds, scales, array leaves of ``args``/``kwargs``) are arguments of
    the returned function, so new values reuse its compilation.
    """
    _, _, run, solution, _ = build_solver(config)

    def run_packed(x0, theta):
        # Eager calls: two buffers to bring to the host instead of ten small ones.
        fields = run(x0, theta)
        floats = jnp.concatenate([jnp.ravel(fields[k]) for k in _FLOAT_FIELDS])
        ints = jnp.concatenate([jnp.ravel(fields[k]).astype(jnp.int32) for k in _INT_FIELDS])
        return floats, ints

    return jax.jit(solution), jax.jit(run_packed)


def _host_eval(fun, x0, args, kwargs, raw=False):
    """Evaluate a NumPy ``fun`` once on the host (at ``x0``, or at zeros inside a trace,
    where only the output shape is needed). ``raw``: return the output unconverted (a
    sparse matrix or a LinearOperator is inspected before anything densifies it)."""
    convert = (lambda out: out) if raw else _as_array
    if is_tracer(x0, args, kwargs):
        def placeholder(v):
            return np.zeros(np.shape(v), dtype=jnp.result_type(v)) if isinstance(v, jax.core.Tracer) else v

        x, a, k = jax.tree_util.tree_map(placeholder, (x0, args, kwargs))
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return convert(fun(np.asarray(x), *a, **k)), False
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                "`fun` cannot be traced by JAX, and inside jax.jit/jax.vmap its output shape "
                "could not be determined by calling it with placeholder values. Make `fun` "
                "JAX-traceable (use jax.numpy) or call least_squares outside the transformation."
            ) from e
    return convert(fun(np.asarray(x0), *args, **kwargs)), True


def _is_linear_operator(J):
    return hasattr(J, "matvec") and hasattr(J, "rmatvec") and not hasattr(J, "tocoo")


class _SparseHostJac:
    """A NumPy ``jac`` returning a ``scipy.sparse`` matrix, read as its values on the
    structure ``(rows, cols)`` it had at ``x0``. An entry outside that structure raises
    (the structure of a sparse Jacobian is fixed for the whole solve)."""

    def __init__(self, jac, rows, cols):
        self.jac, self.rows, self.cols = jac, rows, cols
        self._key = (rows.size, hash(rows.tobytes()), hash(cols.tobytes()))

    def __call__(self, x, *args, **kwargs):
        J = self.jac(x, *args, **kwargs)
        if not hasattr(J, "tocsr"):
            J = np.atleast_2d(np.asarray(J))
            return J[self.rows, self.cols]
        J = J.tocsr(copy=True)
        J.sum_duplicates()
        J.eliminate_zeros()
        n = J.shape[1]
        J_rows = np.repeat(np.arange(J.shape[0], dtype=np.int64), np.diff(J.indptr))
        J_key = J_rows * n + J.indices
        key = self.rows.astype(np.int64) * n + self.cols  # both sorted row-major
        pos = np.searchsorted(key, J_key)
        inside = (pos < key.size) & (key[np.minimum(pos, key.size - 1)] == J_key)
        if not np.all(inside):
            raise ValueError("`jac` returned a sparse matrix with non-zeros outside the structure it had at x0.")
        vals = np.zeros(key.size, dtype=J.dtype)
        vals[pos] = J.data
        return vals

    def __hash__(self):
        return hash((self.jac, self._key))

    def __eq__(self, other):
        return (
            isinstance(other, _SparseHostJac)
            and self.jac is other.jac
            and self._key == other._key
            and np.array_equal(self.rows, other.rows)
            and np.array_equal(self.cols, other.cols)
        )


def _host_operator_result(stored, m):
    """``res.jac`` for a ``jac`` returning a LinearOperator: the user's own operator at
    the solution, as SciPy returns it (left-multiplied by the robust loss's scaling)."""
    op = host_operator(stored[m:])
    row_scale = np.asarray(stored[:m])
    if np.all(row_scale == 1):
        return op
    from scipy.sparse.linalg import LinearOperator  # the user's jac already uses SciPy

    return LinearOperator(
        op.shape, matvec=lambda v: row_scale * op.matvec(np.ravel(v)), rmatvec=lambda u: op.rmatvec(row_scale * np.ravel(u))
    )


_COLOURING_CACHE: dict = {}


def _colouring(rows, cols, m, n):
    """The column colouring and the slot tables of a structure, cached on its content
    (the same structure passed again, e.g. a new ``lil_array`` each call, is not
    coloured again)."""
    key = (m, n, rows.size, hash(rows.tobytes()), hash(cols.tobytes()))
    hit = _COLOURING_CACHE.get(key)
    if hit is None:
        dia = dia_layout(rows, cols, m, n)
        ell = ell_layout(rows, cols, m, n) if dia is None else None
        hit = (*colour_columns(rows, cols, m, n), dia, ell)
        if len(_COLOURING_CACHE) > 16:
            _COLOURING_CACHE.clear()
        _COLOURING_CACHE[key] = hit
    return hit


# LSMR's keyword arguments in SciPy (scipy.sparse.linalg.lsmr), and their defaults.
_LSMR_DEFAULTS = {"damp": 0.0, "atol": 1e-6, "btol": 1e-6, "conlim": 1e8, "maxiter": None, "show": False}


def _lsmr_options(tr_options, method, m, n, dtype):
    """``tr_options`` of ``tr_solver='lsmr'`` checked as SciPy checks them: a sorted tuple
    of (key, value) pairs (part of the compiled solver's static settings) and LSMR's
    initial guess ``x0`` (an array of shape (n,), traced data, or None)."""
    opts = dict(tr_options or {})
    regularize = opts.pop("regularize", True)
    if method == "dogbox" and "regularize" in (tr_options or {}):
        warnings.warn("The keyword 'regularize' in `tr_options` is not relevant for 'dogbox' method.", stacklevel=3)
    guess = opts.pop("x0", None)
    if guess is not None:
        concrete = _validate.concrete(guess)
        guess = np.atleast_1d(np.asarray(guess)) if concrete else jnp.atleast_1d(jnp.asarray(guess))
        if guess.shape != (n,):
            # SciPy's lsmr fails in the first product A @ x0 with this error.
            raise ValueError("dimension mismatch")
        if np.iscomplexobj(guess):
            raise TypeError("tr_options['x0'] must be real.")
        guess = guess.astype(dtype)  # a copy: the user's array is never written to
    for key in opts:
        if key not in _LSMR_DEFAULTS:
            raise TypeError(f"lsmr() got an unexpected keyword argument '{key}'")
    full = dict(_LSMR_DEFAULTS, **opts)
    full.pop("show")
    full["regularize"] = bool(regularize) if method == "trf" else False
    full["maxiter"] = None if full["maxiter"] is None else int(full["maxiter"])
    for key in ("damp", "atol", "btol", "conlim"):
        # SciPy's lsmr reads None as its default value.
        full[key] = float(_LSMR_DEFAULTS[key] if full[key] is None else full[key])
    return tuple(sorted(full.items())), guess


def _as_array(out):
    """A host function's output as an array (a scipy.sparse matrix is densified)."""
    return np.atleast_1d(np.asarray(out.toarray() if hasattr(out, "toarray") else out))


def least_squares(
    fun,
    x0,
    jac=None,
    bounds=(-np.inf, np.inf),
    method="trf",
    ftol=1e-8,
    xtol=1e-8,
    gtol=1e-8,
    x_scale=None,
    loss="linear",
    f_scale=1.0,
    diff_step=None,
    tr_solver=None,
    tr_options=None,
    jac_sparsity=None,
    max_nfev=None,
    verbose=0,
    args=(),
    kwargs=None,
    callback=None,
    workers=None,
):
    """Solve a nonlinear least-squares problem with bounds on the variables.

    Given the residuals ``f(x)`` (an m-D real function of n real variables) and the
    loss function ``rho(s)``, find a local minimum of the cost function::

        minimize F(x) = 0.5 * sum(rho(f_i(x)**2), i = 0, ..., m - 1)
        subject to lb <= x <= ub

    The interface, defaults, result fields, status codes and error messages are those of
    :func:`scipy.optimize.least_squares` (SciPy 1.17), so existing code switches by
    changing the import. The solver is a compiled ``jax.lax.while_loop``: the same call
    works inside ``jax.jit``, under ``jax.vmap`` (over ``x0``, ``bounds`` or data in
    ``args``/``kwargs``), in float32 and float64 (``x0``'s dtype decides).

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs)`` returning the residuals, an array of shape (m,)
        (a scalar is treated as shape (1,)). A JAX-traceable function is compiled into
        the solver and differentiated by autodiff; a plain NumPy function is detected
        and called on the host through :func:`jax.pure_callback` (then the Jacobian comes
        from finite differences, as in SciPy).
    x0 : array_like with shape (n,) or float
        Initial guess. Its float dtype (float32 or float64) is the working precision.
        It is never modified.
    jac : {None, '2-point', '3-point', 'cs', callable}, optional
        How to compute the Jacobian (an m-by-n matrix). ``None`` (the default) uses
        autodiff when ``fun`` is traceable -- forward mode when ``m >= n``, reverse
        mode otherwise -- and ``'2-point'`` (SciPy's default) when it is not.
        ``'2-point'``, ``'3-point'`` and ``'cs'`` select finite differences with
        SciPy's step rules, respecting the bounds; ``'cs'`` needs ``fun`` to accept
        complex input. A callable ``jac(x, *args, **kwargs)`` returns the Jacobian:
        a dense array, or (NumPy ``jac``) a ``scipy.sparse`` matrix, whose structure at
        ``x0`` is kept and whose values are read on it at every evaluation (then
        ``tr_solver`` defaults to ``'lsmr'``, as in SciPy), or a ``LinearOperator``
        (anything with ``matvec``, ``rmatvec`` and ``shape``), applied on the host
        through callbacks (eager calls only; ``tr_solver='lsmr'``, not
        ``x_scale='jac'``, as in SciPy).
    bounds : 2-tuple of array_like or `Bounds`, optional
        Lower and upper bounds on the variables (default: none). Each is an array of
        shape (n,) or a scalar; use ``np.inf`` with an appropriate sign to disable
        bounds on some variables. Any object with ``lb`` and ``ub`` attributes (such as
        :class:`scipy.optimize.Bounds`) is accepted.
    method : {'trf', 'dogbox', 'lm'}, optional
        Algorithm. ``'trf'`` (default): Trust Region Reflective, a robust choice in
        general. ``'dogbox'``: dogleg with rectangular trust regions, for small problems
        with bounds. ``'lm'``: Levenberg-Marquardt as in MINPACK's ``lmder``; no bounds,
        only the linear loss, and ``m >= n`` (SciPy's errors otherwise).
    ftol, xtol, gtol : float or None, optional
        Tolerances for termination by the change of the cost function, the change of
        the independent variables and the norm of the (scaled) gradient, with SciPy's
        definitions and default 1e-8. ``None`` disables a test. Values below machine
        epsilon warn as in SciPy; in float32, tolerances below float32's epsilon are
        raised to it (the tests cannot resolve finer changes), and the ftol test also
        passes when the Gauss-Newton model's largest possible decrease and the trial's
        actual decrease are both at most ``max(ftol, sqrt(m) eps)`` times the cost (the
        cost's rounding noise, which SciPy's test would otherwise wait out by shrinking
        the trust region until xtol fires).
    x_scale : None, array_like or 'jac', optional
        Characteristic scale of each variable. ``None`` (default) means 1 for
        ``'trf'`` and ``'dogbox'`` and ``'jac'`` for ``'lm'``; ``'jac'`` uses the inverse norms of the Jacobian's columns,
        updated as in SciPy (Moré 1977).
    loss : str or callable, optional
        ``'linear'`` (default), ``'soft_l1'``, ``'huber'``, ``'cauchy'``, ``'arctan'``,
        or a callable ``loss(z)`` returning an array of shape (3, m) with the loss and
        its first and second derivatives, as in SciPy.
    f_scale : float, optional
        Soft margin between inlier and outlier residuals (default 1.0).
    diff_step : None or array_like, optional
        Relative step for finite differences (SciPy's meaning).
    tr_solver : {None, 'exact', 'lsmr'}, optional
        ``'exact'``: the subproblem is solved exactly from an SVD of the dense
        Jacobian. ``'lsmr'``: for large and sparse problems; the Jacobian is only
        applied to vectors. ``'trf'`` takes LSMR's (regularised) Gauss-Newton
        direction and solves the trust-region problem in the 2-D subspace it spans with
        the scaled gradient; ``'dogbox'`` takes LSMR's Gauss-Newton step on the free
        variables. ``None``: ``'lsmr'`` for a sparse Jacobian (``jac_sparsity``, or a
        ``jac`` returning a sparse matrix), ``'exact'`` otherwise. With
        ``tr_solver='lsmr'`` and autodiff (``jac=None``, traceable ``fun``, no
        ``jac_sparsity``) the Jacobian is never formed: products go through
        ``jax.linearize`` and its transpose, memory is O(m + n), and ``x_scale='jac'``
        is not available (SciPy's rule for a ``LinearOperator`` Jacobian).
    tr_options : dict, optional
        Ignored for ``'exact'``, as in SciPy. For ``'lsmr'``: LSMR's ``atol``,
        ``btol`` (default 1e-6), ``conlim`` (1e8), ``maxiter`` (``min(m, n)``),
        ``damp`` (0), ``x0`` (LSMR's initial guess, shape (n,), in the scaled
        variables as in SciPy; traced, so a new guess does not recompile) and
        ``show`` (accepted, ignored); ``'trf'`` also takes ``regularize`` (default
        True). Unknown keys raise SciPy's ``TypeError``;
        ``regularize`` with ``'dogbox'`` warns and is ignored, as in SciPy.
    jac_sparsity : {None, array_like, sparse matrix}, optional
        Sparsity structure of the Jacobian, shape (m, n): zeros where an entry is
        known to be zero. Columns with no common row are grouped (a greedy colouring,
        computed once on the host), and the Jacobian is estimated with one evaluation
        of ``fun`` per group (finite differences) or one ``jvp`` per group (autodiff,
        ``jac=None`` with a traceable ``fun``), and stored as its non-zero values:
        memory O(nnz + m + n). Forces ``tr_solver='lsmr'``. Ignored with a callable
        ``jac``, as in SciPy.
    max_nfev : None or int, optional
        Maximum number of function evaluations (default ``100 * n``, every method).
        Evaluations made for finite-difference Jacobians are not counted, as in SciPy.
        For ``'lm'`` the test comes after a trial, as in MINPACK (``max_nfev=1`` still
        makes one trial).
    verbose : {0, 1, 2}, optional
        0: silent; 1: final report; 2: SciPy's iteration table (not for ``'lm'``,
        as in SciPy). Printed through
        :func:`jax.debug.callback`, so it also works inside ``jax.jit``.
    args, kwargs : tuple and dict, optional
        Extra arguments passed to ``fun`` and ``jac``. Arrays (and Python floats) are
        traced: new values reuse the compiled solver. Other values (ints, strings,
        objects) are static: a new value compiles a new solver.
    callback : callable, optional
        Called after each iteration as ``callback(intermediate_result)`` (keyword
        argument of that name, an `OptimizeResult` with ``x``, ``fun``, ``nit``,
        ``nfev``, ``cost``) or ``callback(x)``. Raising ``StopIteration`` stops the
        solve with status -2. Runs on the host via :func:`jax.experimental.io_callback`.
        Not supported by ``'lm'`` (a warning, and the callback is ignored, as in SciPy).
    workers : map-like callable, optional
        Accepted for compatibility with SciPy and ignored: finite differences of a
        traceable ``fun`` are evaluated in one vectorised call, those of a NumPy
        ``fun`` one after another on the host.

    Returns
    -------
    result : OptimizeResult
        With SciPy's fields ``x, cost, fun, jac, grad, optimality, active_mask, nfev,
        njev, status, message, success``. Called eagerly, array fields are NumPy arrays
        and counters are Python ints, as in SciPy. Inside a JAX transformation they are
        JAX arrays; ``message`` is filled in once ``status`` is concrete. For
        ``'lm'``, ``njev`` is ``None`` unless ``jac`` is a callable (SciPy's rule).

        ``jac`` is a dense array for a dense Jacobian. For a sparse one it is a
        ``scipy.sparse.csr_array`` when ``jac_sparsity`` (or ``jac``'s output) was a
        ``scipy.sparse`` object, else a :class:`~jaxopt_lsq.SparseJacobian` (values
        over index arrays; ``toarray()``, ``matvec``, ``rmatvec``). For the
        matrix-free Jacobian of ``tr_solver='lsmr'`` with autodiff it is a
        :class:`~jaxopt_lsq.JacobianLinearOperator` (``matvec``, ``rmatvec``,
        ``shape``; ``toarray()`` forms the matrix on request), as SciPy returns a
        ``LinearOperator``. Both are JAX pytrees.

        ``status``: -2 stopped by ``callback``; 0 ``max_nfev`` exceeded; 1 ``gtol``;
        2 ``ftol``; 3 ``xtol``; 4 ``ftol`` and ``xtol``. Codes only seen inside a JAX
        transformation (where SciPy would raise): -3 Jacobian not finite at an
        accepted point (also reported eagerly), -4 residuals not finite at ``x0``,
        -5 ``x0`` outside the bounds.

    See Also
    --------
    curve_fit : least squares applied to fitting a model to data.
    minimize : L-BFGS-B, for general smooth objectives with bounds.

    Notes
    -----
    ``'trf'`` is the Trust Region Reflective method of [STIR]_: trust-region steps in
    variables scaled by the distance to the bounds (Coleman--Li scaling), reflected at
    the bounds, iterates kept strictly feasible; the subproblem is solved exactly from
    one SVD of the Jacobian per accepted point, as in [JJMore]_. ``'dogbox'`` is the
    rectangular-trust-region dogleg method of [Voglis]_ (dogleg: [NumOpt]_). ``'lm'`` is
    Moré's Levenberg--Marquardt [JJMore]_ as in MINPACK (column-pivoted QR, ``lmpar``).
    Robust losses rescale the residuals and the Jacobian so that the Gauss--Newton model
    matches the loss's gradient and Hessian [BA]_. Finite-difference steps follow
    [NR]_ and SciPy's rules.

    Under ``jax.grad``/``jax.jvp`` the solution is differentiated implicitly [Blondel]_:
    the optimality conditions ``J^T rho'(f) f = 0`` (with ``rho''`` terms for robust
    losses, and variables on an active bound held fixed) are differentiated at the
    solution, so the cost is one linear solve, independent of the number of iterations.

    References
    ----------
    .. [STIR] M. A. Branch, T. F. Coleman and Y. Li, "A subspace, interior, and
       conjugate gradient method for large-scale bound-constrained minimization
       problems", SIAM J. Sci. Comput. 21(1):1-23, 1999.
    .. [JJMore] J. J. Moré, "The Levenberg-Marquardt algorithm: implementation and
       theory", in Numerical Analysis, ed. G. A. Watson, Lecture Notes in Mathematics
       630, Springer, pp. 105-116, 1977.
    .. [Voglis] C. Voglis and I. E. Lagaris, "A rectangular trust region dogleg
       approach for unconstrained and bound constrained nonlinear optimization", WSEAS
       International Conference on Applied Mathematics, 2004.
    .. [NumOpt] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd edition,
       Springer, 2006, chapter 4.
    .. [BA] B. Triggs, P. F. McLauchlan, R. I. Hartley and A. W. Fitzgibbon, "Bundle
       adjustment -- a modern synthesis", Vision Algorithms: Theory and Practice,
       Springer LNCS 1883, pp. 298-372, 2000.
    .. [NR] W. H. Press et al., "Numerical Recipes: The Art of Scientific Computing",
       3rd edition, Cambridge University Press, 2007, section 5.7.
    .. [Blondel] M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer,
       F. Llinares-López, F. Pedregosa and J.-P. Vert, "Efficient and modular implicit
       differentiation", NeurIPS 2022.

    Examples
    --------
    SciPy's first example: the Rosenbrock function as a sum of squares, then with the
    bound ``x[1] >= 1.5``.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import least_squares
    >>> def fun_rosenbrock(x):
    ...     return jnp.array([10 * (x[1] - x[0]**2), (1 - x[0])])
    >>> res = least_squares(fun_rosenbrock, np.array([2.0, 2.0]))
    >>> bool(res.status > 0), np.asarray(res.x, float).round(6).tolist()
    (True, [1.0, 1.0])
    >>> res = least_squares(fun_rosenbrock, np.array([2.0, 2.0]), bounds=([-np.inf, 1.5], np.inf))
    >>> np.asarray(res.x, float).round(4).tolist(), res.active_mask.tolist()
    ([1.2244, 1.5], [0, -1])

    A robust fit of ``a + b exp(c t)``, then many fits at once with ``jax.vmap`` and the
    derivative of the fitted rate with respect to the data:

    >>> t = np.linspace(0, 10, 15)
    >>> y = 0.5 + 2.0 * np.exp(-t)
    >>> def fun(x, t, y):
    ...     return x[0] + x[1] * jnp.exp(x[2] * t) - y
    >>> x0 = jnp.array([1.0, 1.0, -0.5])
    >>> res = least_squares(fun, x0, loss="soft_l1", f_scale=0.1, args=(t, y))
    >>> np.asarray(res.x, float).round(3).tolist()
    [0.5, 2.0, -1.0]
    >>> ys = jnp.stack([y, y + 1.0, 2.0 * y])
    >>> xs = jax.vmap(lambda y: least_squares(fun, x0, args=(t, y)).x)(ys)
    >>> xs.shape
    (3, 3)
    >>> dc_dy = jax.grad(lambda y: least_squares(fun, x0, args=(t, y)).x[2])(jnp.asarray(y))
    >>> dc_dy.shape
    (15,)
    """
    prob = _setup(
        fun, x0, jac, bounds, method, ftol, xtol, gtol, x_scale, loss, f_scale, diff_step,
        tr_solver, tr_options, jac_sparsity, max_nfev, verbose, args, kwargs, callback,
    )
    solve, solve_packed = _compiled_solve(prob.config)
    if prob.traced:
        fields = solve(prob.x0, prob.theta)
    else:
        with reraise_host_errors():
            fields = _unpack(*jax.device_get(solve_packed(prob.x0, prob.theta)), prob.m, prob.n, _jac_shape(prob))
        if fields["status"] == -4:
            raise ValueError("Residuals are not finite in the initial point.")
    fields = _finish_jac(prob, fields)
    if method == "lm" and not callable(jac):
        # SciPy: no Jacobian evaluations to count when they are not the user's.
        fields["njev"] = None
    return OptimizeResult({k: fields[k] for k in _FIELDS})


class _Problem(NamedTuple):
    """A validated least-squares problem: the static configuration of its compiled
    solve, and the arrays to call it with."""

    config: tuple
    x0: Any
    theta: tuple
    traced: bool
    m: int
    n: int
    kind: str  # of the Jacobian: "dense", "sparse", "operator" or "host_operator"
    structure: Any  # (rows, cols) of a sparse Jacobian, else None
    sparsity: Any
    scipy_sparse_out: bool  # return res.jac as a scipy.sparse matrix


def _setup(
    fun, x0, jac, bounds, method, ftol, xtol, gtol, x_scale, loss, f_scale, diff_step,
    tr_solver, tr_options, jac_sparsity, max_nfev, verbose, args, kwargs, callback,
):
    """Validate ``least_squares``' arguments on the host (SciPy's errors, before any
    work) and build the static configuration and data of the solve."""
    kwargs = {} if kwargs is None else dict(kwargs)
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    _validate.check_least_squares_options(method, jac, tr_solver, loss, verbose, max_nfev)

    x0 = _validate.as_x0(x0)
    dtype = x0.dtype
    n = x0.shape[0]
    lb, ub, bounded = _validate.prepare_bounds(bounds, x0, method)
    x_scale_arr, jac_scale = _validate.check_x_scale(x_scale, x0, method)
    ftol, xtol, gtol = _validate.check_tolerance(ftol, xtol, gtol, method, dtype)
    if max_nfev is None:
        max_nfev = 100 * n
    traced = is_tracer(x0, lb, ub, args, kwargs, x_scale, f_scale, diff_step)

    # --- the residual function: traced or on the host --------------------------------
    x_struct = jax.ShapeDtypeStruct((n,), dtype)
    out = output_struct(fun, x_struct, args, kwargs)
    if out is not None:
        if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) > 1:
            shape = getattr(out, "shape", None)
            raise ValueError(f"`fun` must return at most 1-d array_like. f0.shape: {shape}")
        m = int(np.prod(out.shape)) if out.shape else 1
        fun_on_host = False
    else:
        # SciPy evaluates at the strictly feasible x0 (trf; dogbox starts at x0 itself); so
        # do we, once, and hand the residuals to the solver.
        x0_eval = x0
        if bounded and not traced and method == "trf":
            x0_eval = np.asarray(make_strictly_feasible(jnp.asarray(x0), jnp.asarray(lb), jnp.asarray(ub)))
        f0, eager = _host_eval(fun, x0_eval, args, kwargs)
        if f0.ndim != 1:
            raise ValueError(f"`fun` must return at most 1-d array_like. f0.shape: {f0.shape}")
        if eager and not np.all(np.isfinite(f0)):
            raise ValueError("Residuals are not finite in the initial point.")
        m = f0.size
        fun_on_host = True
    if method == "lm" and m < n:
        raise ValueError(
            "Method 'lm' doesn't work when the number of residuals is less than the number of variables."
        )
    if method == "lm" and jac_sparsity is not None and not callable(jac):
        raise ValueError("method='lm' does not support `jac_sparsity`.")

    # --- the Jacobian --------------------------------------------------------------------
    jac_on_host = False
    host_linear_operator = False  # a NumPy jac returning a LinearOperator
    structure = None  # (rows, cols) of a sparse Jacobian
    scipy_sparse_out = False  # return res.jac as a scipy.sparse matrix
    if callable(jac):
        jout = output_struct(jac, x_struct, args, kwargs)
        if jout is None:
            jac_on_host = True
            J0, _ = _host_eval(jac, x0, args, kwargs, raw=True)
            if _is_linear_operator(J0):
                if method == "lm":
                    raise ValueError("method='lm' works only with dense Jacobian matrices.")
                if tr_solver == "exact":
                    raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
                if isinstance(x_scale, str) and x_scale == "jac":
                    raise ValueError("x_scale='jac' can't be used when `jac` returns LinearOperator.")
                if traced:
                    raise NotImplementedError(
                        "A `jac` returning a LinearOperator works in eager calls only, not inside "
                        "jax.jit/jax.vmap/jax.grad; return a dense array or a scipy.sparse matrix, or "
                        "leave jac=None with tr_solver='lsmr' for a matrix-free autodiff Jacobian."
                    )
                host_linear_operator = True
                jshape = tuple(J0.shape)
            elif hasattr(J0, "tocoo"):
                jshape = tuple(J0.shape)
            else:
                J0 = _as_array(J0)
                jshape = J0.shape
        else:
            jshape = getattr(jout, "shape", None)
        if jshape is not None and len(jshape) < 2:
            jshape = (1,) * (2 - len(jshape)) + tuple(jshape)  # SciPy applies atleast_2d
        if jshape != (m, n):
            raise ValueError(f"The return value of `jac` has wrong shape: expected {(m, n)}, actual {jshape}.")
        if jac_on_host and hasattr(J0, "tocoo"):
            if method == "lm":
                raise ValueError("method='lm' works only with dense Jacobian matrices.")
            if tr_solver == "exact":
                raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
            structure = structure_coo(J0, m, n)
            scipy_sparse_out = True
        jac_opt = jac if structure is None else _SparseHostJac(jac, *structure)
        if host_linear_operator:
            jac_opt = HostOperatorJac(jac)
    else:
        jac_opt = ("2-point" if fun_on_host else None) if jac is None else jac
        if method != "lm" and jac_sparsity is not None:
            structure = structure_coo(jac_sparsity, m, n)
            if tr_solver == "exact":
                raise ValueError("tr_solver='exact' is incompatible with `jac_sparsity`.")
            scipy_sparse_out = hasattr(jac_sparsity, "tocoo")
    if tr_solver is None:
        tr_solver = "exact" if structure is None and not host_linear_operator else "lsmr"
    if host_linear_operator:
        kind = "host_operator"
    elif structure is not None:
        kind = "sparse"
    elif tr_solver == "lsmr" and jac_opt is None and method != "lm":
        kind = "operator"
        if isinstance(x_scale, str) and x_scale == "jac":
            raise ValueError(
                "x_scale='jac' can't be used with the matrix-free autodiff Jacobian of tr_solver='lsmr' "
                "(SciPy's rule for a LinearOperator Jacobian); pass `jac_sparsity`, or jac='2-point'."
            )
    else:
        kind = "dense"
    lsmr_options, lsmr_x0 = (
        _lsmr_options(tr_options, method, m, n, dtype) if tr_solver == "lsmr" and method != "lm" else ((), None)
    )

    # --- the loss ----------------------------------------------------------------------------
    loss_opt = loss
    if callable(loss):
        zs = jax.ShapeDtypeStruct((m,), dtype)
        lout = output_struct(loss, zs)
        if lout is None:
            if not traced:
                rho = np.asarray(loss(np.zeros(m, dtype=dtype)))
                lshape = rho.shape
            else:
                lshape = (3, m)
            loss_opt = _HostLoss(loss, m, dtype)
        else:
            lshape = getattr(lout, "shape", None)
        if lshape != (3, m):
            raise ValueError("The return value of `loss` callable has wrong shape.")

    if method == "lm" and callback is not None:
        warnings.warn("Callback function specified, but not supported with `lm` method.", stacklevel=3)
        callback = None
    # Field order of ResidualFunction and of the solvers (TRF, Dogbox, LM).
    residual_cfg = (fun, jac_opt, fun_on_host, jac_on_host, m, dtype, bounded, kind)
    solver_cfg = (loss_opt, ftol, xtol, gtol, int(max_nfev), jac_scale, bounded, int(verbose), callback)
    if method != "lm":
        solver_cfg = solver_cfg + (tr_solver, lsmr_options)
    sparsity = None
    if structure is not None:
        colour, n_colours, dia, ell = _colouring(*structure, m, n)
        sparsity = Sparsity(rows=structure[0], cols=structure[1], colour=colour, n_colours=n_colours, ell=ell,
                            dia=None if dia is None else dia[1], dia_offsets=() if dia is None else dia[0])
    dyn, static = _split_data(args, kwargs)
    f_scale_arr = np.asarray(f_scale, dtype) if _validate.concrete(f_scale) else jnp.asarray(f_scale, dtype)
    if diff_step is None:
        diff_step_arr = None
    elif _validate.concrete(diff_step):
        diff_step_arr = np.broadcast_to(np.asarray(diff_step, dtype), (n,))
    else:
        diff_step_arr = jnp.broadcast_to(jnp.asarray(diff_step, dtype), (n,))
    f0_arr = f0.astype(dtype) if fun_on_host and not traced else None
    theta = (dyn, lb, ub, x_scale_arr, f_scale_arr, diff_step_arr, f0_arr, sparsity, lsmr_x0)
    config = (method, residual_cfg, solver_cfg, static)
    return _Problem(config, x0, theta, traced, m, n, kind, structure, sparsity, scipy_sparse_out)


def _finish_jac(prob, fields):
    """The result's ``jac`` in the form the problem's Jacobian has (see ``least_squares``)."""
    m, n = prob.m, prob.n
    if prob.kind == "sparse":
        fields["jac"] = SparseJacobian(fields["jac"], prob.sparsity.rows, prob.sparsity.cols, (m, n))
        if prob.scipy_sparse_out and not prob.traced:
            fields["jac"] = fields["jac"].to_scipy()
    elif prob.kind == "host_operator":
        fields["jac"] = _host_operator_result(fields["jac"], m)
    elif prob.kind == "operator":
        _, residual_cfg, _, static = prob.config
        fields["jac"] = JacobianLinearOperator(
            fields["x"], fields["jac"], prob.theta[0], residuals=ResidualFunction(*residual_cfg), static=static
        )
    return fields


def _jac_shape(prob):
    """Shape of the ``jac`` field as the compiled solve returns it."""
    return {
        "dense": (prob.m, prob.n),
        "sparse": (0 if prob.structure is None else prob.structure[0].size,),
        "operator": (prob.m,),
        "host_operator": (prob.m + 1,),
    }[prob.kind]


# SciPy's order of the result's fields, and how eager results travel to the host.
_FIELDS = ("x", "cost", "fun", "jac", "grad", "optimality", "active_mask", "nfev", "njev", "status")
_FLOAT_FIELDS = ("x", "cost", "fun", "jac", "grad", "optimality")
_INT_FIELDS = ("active_mask", "nfev", "njev", "status")


def _unpack(floats, ints, m, n, jac_shape):
    """Eager results as SciPy gives them: NumPy arrays, NumPy float scalars, Python ints."""
    shapes = {"x": (n,), "cost": (), "fun": (m,), "jac": jac_shape, "grad": (n,), "optimality": ()}
    out, i = {}, 0
    for k in _FLOAT_FIELDS:
        size = int(np.prod(shapes[k]))
        v = floats[i : i + size].reshape(shapes[k])
        out[k] = v[()] if v.ndim == 0 else v.copy()
        i += size
    out["active_mask"] = ints[:n].astype(int)
    out["nfev"], out["njev"], out["status"] = (int(v) for v in ints[n : n + 3])
    return out
