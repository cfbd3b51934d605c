"""SciPy's ``fmin_l_bfgs_b`` and ``minimize(method="L-BFGS-B")`` on top of the solver.

Host side: argument checks with SciPy's exception types and messages, the choice of
gradient (autodiff, user gradient, finite differences; in JAX when the function can be
traced, else through :func:`jax.pure_callback`) and a cache of compiled solves keyed on
everything static (function identity, gradient mode, options, shapes). Data that
changes between calls goes through ``args`` as arrays and never causes a recompile.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._implicit import implicit_solution
from ._host import (host_call, intermediate_result, is_tracer, output_struct, reraise_host_errors,
                    run_user_callback, split_data)
from ._iterate import iterate
from ._jacobian import FD_METHODS, fd_evaluations, fd_jacobian, value_and_fd_grad_on_host
from ._result import OptimizeResult, OptimizeWarning, register_result_kind
from ._solvers import lbfgsb as _solver
from ._solvers._report import LbfgsbLog
from ._validate import float_dtype

# Codes that only the ``minimize`` facade reports (SciPy's ``minimize`` rewrites the
# result in these two cases): status 99 after a callback stop, status 0 when every
# variable is fixed by its bounds.
_TASK_CALLBACK_MINIMIZE = 599
_TASK_ALL_FIXED = 900

LBFGSB_MESSAGES = {
    _solver.TASK_PGTOL: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
    _solver.TASK_FTOL: "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH",
    _solver.TASK_MAXFUN: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    _solver.TASK_MAXITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    _solver.TASK_CALLBACK: "STOP: CALLBACK REQUESTED HALT",
    _TASK_CALLBACK_MINIMIZE: "`callback` raised `StopIteration`.",
    _TASK_ALL_FIXED: "All independent variables were fixed by bounds.",
    _solver.TASK_ABNORMAL: "ABNORMAL: ",
    _solver.TASK_NONFINITE_X0: (
        "ABNORMAL: the objective or its gradient is not finite at the initial point"
    ),
    _solver.TASK_NONFINITE_LS: (
        "ABNORMAL: line search failed; the objective or its gradient was not finite "
        "at a trial point"
    ),
}

register_result_kind(
    "lbfgsb", LBFGSB_MESSAGES, lambda status: status == 0, message_key="task_code"
)

_DEPRECATED = (
    "scipy.optimize: The `disp` and `iprint` options of the L-BFGS-B solver are "
    "deprecated and will be removed in SciPy 1.18.0."
)


class _NoValueType:
    def __repr__(self):
        return "<no value>"


_NoValue = _NoValueType()

#: Problems with more variables use the sort-free Cauchy point and the incremental
#: free-set Gram matrix.
LARGE_N = 4096
_GCP_CHUNK = 256
_GRAM_UPDATE = 512


class LbfgsInvHessProduct(eqx.Module):
    """The L-BFGS approximate inverse Hessian from the final correction pairs.

    Like SciPy's ``LbfgsInvHessProduct``: ``H_0 = I`` and the two-loop recursion of
    Nocedal [1]_ over the pairs, oldest first; ``rho`` holds ``1 / (s_i^T y_i)``. Unlike SciPy it is a pytree (so it can
    leave ``jax.jit`` and be batched by ``jax.vmap``) rather than a
    ``scipy.sparse.linalg.LinearOperator``; empty slots are zero rows and do nothing.
    ``minimize`` returns one as ``res.hess_inv``.

    Parameters
    ----------
    sk : array_like, shape (n_corrs, n)
        The steps ``s_k = x_{k+1} - x_k``, oldest first (zero rows for empty slots).
    yk : array_like, shape (n_corrs, n)
        The gradient changes ``y_k = g_{k+1} - g_k``, in the same order.

    Attributes
    ----------
    shape : tuple
        ``(n, n)``.
    dtype : dtype
        The dtype of ``sk``.
    n_corrs : jax.Array
        The number of non-empty pairs.

    Methods
    -------
    matvec(x)
        ``H x`` for ``x`` of shape (n,) or (n, 1).
    matmat(X)
        ``H X`` for ``X`` of shape (n, k).
    dot(x), x @ ..., calling it
        ``matvec`` or ``matmat`` by the shape of ``x``.
    todense()
        The dense (n, n) matrix.

    References
    ----------
    .. [1] J. Nocedal, "Updating quasi-Newton matrices with limited storage", Math.
       Comp. 35(151):773-782, 1980.

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import minimize
    >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    >>> res = minimize(lambda x: 0.5 * x @ A @ x - x.sum(), np.ones(2))
    >>> H = res.hess_inv.todense()  # close to inv(A) after enough steps
    >>> H.shape
    (2, 2)
    """

    sk: jax.Array
    yk: jax.Array

    @property
    def shape(self):
        n = self.sk.shape[-1]
        return (n, n)

    @property
    def dtype(self):
        return self.sk.dtype

    @property
    def n_corrs(self):
        return jnp.sum(jnp.any(self.sk != 0, axis=-1))

    @property
    def rho(self):
        """``1 / (s_i^T y_i)`` per pair (0 for empty slots), as SciPy's attribute."""
        sy = jnp.einsum("ij,ij->i", self.sk, self.yk)
        return jnp.where(sy != 0, 1.0 / jnp.where(sy != 0, sy, 1.0), 0.0)

    def matmat(self, X):
        s, y, rho = self.sk, self.yk, self.rho
        Q = jnp.asarray(X, s.dtype)
        k = s.shape[0]
        alpha = [None] * k
        for i in range(k - 1, -1, -1):
            alpha[i] = rho[i] * (s[i] @ Q)
            Q = Q - jnp.multiply.outer(y[i], alpha[i]) if Q.ndim == 2 else Q - alpha[i] * y[i]
        R = Q
        for i in range(k):
            beta = rho[i] * (y[i] @ R)
            d = alpha[i] - beta
            R = R + (jnp.multiply.outer(s[i], d) if R.ndim == 2 else s[i] * d)
        return R

    def matvec(self, x):
        x = jnp.asarray(x)
        col = x.ndim == 2
        out = self.matmat(x.reshape(-1))
        return out.reshape(-1, 1) if col else out

    def dot(self, x):
        x = jnp.asarray(x)
        return self.matmat(x) if x.ndim == 2 and x.shape[1] != 1 else self.matvec(x)

    def __matmul__(self, x):
        return self.dot(x)

    def __call__(self, x):
        # SciPy's LinearOperator: ``H(x)`` is ``H.dot(x)``.
        return self.dot(x)

    def todense(self):
        return self.matmat(jnp.eye(self.shape[0], dtype=self.dtype))


# ----------------------------------------------------------------------------------
# Host-side validation
# ----------------------------------------------------------------------------------


def _bounds_pairs_to_arrays(bounds):
    """``(min, max)`` pairs (None = unbounded) or an object with ``lb``/``ub``."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return np.asarray(bounds.lb, float), np.asarray(bounds.ub, float)
    try:  # the common case, numbers only (None would read as NaN)
        arr = np.asarray(bounds, float)
        if arr.ndim == 2 and arr.shape[1] == 2 and not np.isnan(arr).any():
            return arr[:, 0].copy(), arr[:, 1].copy()
    except (TypeError, ValueError):
        pass
    lb, ub = zip(*bounds)
    lb = np.array([-np.inf if v is None else float(np.asarray(v).item()) for v in lb])
    ub = np.array([np.inf if v is None else float(np.asarray(v).item()) for v in ub])
    return lb, ub


def _check_minimize_bounds(bounds, n):
    lb, ub = _bounds_pairs_to_arrays(bounds)
    if (ub < lb).any():
        raise ValueError("An upper bound is less than the corresponding lower bound.")
    if lb.shape == (n,) and ub.shape == (n,):
        return lb, ub
    try:
        lb = np.broadcast_to(lb, (n,))
        ub = np.broadcast_to(ub, (n,))
    except Exception as e:
        raise ValueError(
            "The number of bounds is not compatible with the length of `x0`."
        ) from e
    return lb, ub


def _check_fmin_bounds(bounds, n):
    if hasattr(bounds, "lb"):
        return _check_minimize_bounds(bounds, n)
    if len(bounds) != n:
        raise ValueError("length of x0 != length of bounds")
    lb, ub = _bounds_pairs_to_arrays(bounds)
    if np.any(lb > ub):
        raise ValueError("LBFGSB - one of the lower bounds is greater than an upper bound.")
    return lb, ub


def _as_x0(x0, ravel):
    """``x0`` as a 1-D float array: a NumPy copy when concrete, a JAX array in a trace."""
    if isinstance(x0, np.ndarray) and x0.dtype in (np.float32, np.float64):
        dtype = jax.dtypes.canonicalize_dtype(x0.dtype)
    else:
        dtype = float_dtype(x0)
    xp = jnp if is_tracer(x0) else np
    x0 = xp.asarray(x0).astype(dtype)
    if ravel:
        x0 = x0.reshape(-1)
    elif x0.ndim == 0:
        x0 = x0.reshape(1)
    if x0.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    return x0


# ----------------------------------------------------------------------------------
# Objective and gradient, compiled-solve cache
# ----------------------------------------------------------------------------------


def _callback_adapter(callback):
    """The user's callback as ``host(x, f) -> stop`` (see :func:`run_user_callback`)."""
    if callback is None:
        return None
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = set()
    by_name = params == {"intermediate_result"}

    def host(x, f):
        if by_name:
            res = intermediate_result(x=np.array(x), fun=np.array(f)[()])
            return run_user_callback(callback, intermediate_result=res)
        return run_user_callback(callback, np.array(x))

    return host


_NOT_SCALAR = "The user-provided objective function must return a scalar value."


def _not_a_gradient(shape, n):
    # SciPy does not check this (a wrong-sized gradient ends in "ABNORMAL"); we say why.
    return ValueError(f"The gradient must have shape ({n},); the user-provided function "
                      f"returned shape {tuple(shape)}.")


def _check_sizes(f_shape, g_shape, n):
    """Objective and gradient shapes (None: not known here); SciPy's error first."""
    if f_shape is not None and math.prod(f_shape) != 1:
        raise ValueError(_NOT_SCALAR)
    if g_shape is not None and math.prod(g_shape) != n:
        raise _not_a_gradient(g_shape, n)


def _checked(fun, what, n=None):
    """A NumPy ``fun`` whose output size is checked on the host (``what``: "f" or "g")."""
    def checked(x, *a, **k):
        out = fun(x, *a, **k)
        _check_sizes(np.shape(out) if what == "f" else None,
                     np.shape(out) if what == "g" else None, n)
        return out
    return checked


def _packed(fun, n, jac=None):
    """A NumPy ``(f, g)`` (or ``f`` and ``jac``) as one ``(n + 1,)`` host result."""
    if jac is None:
        def fg(x, *a):
            f, g = fun(x, *a)
            _check_sizes(np.shape(f), np.shape(g), n)
            return np.concatenate([np.ravel(f), np.ravel(g)])
    else:
        fun, jac = _checked(fun, "f"), _checked(jac, "g", n)

        def fg(x, *a):
            return np.concatenate([np.ravel(fun(x, *a)), np.ravel(jac(x, *a))])
    return fg


def _make_fg(fun, jac, grad_mode, fun_traced, jac_traced, fd_method, step_kind, n, dtype,
             bounded, static):
    """``fg(x, (lower, upper, (step, dyn))) -> (f, g)``: the objective and its gradient,
    traced or on the host, by the chosen rule."""

    def unpack(a):
        lower, upper, (step, dyn) = a
        args, kwargs = eqx.combine(dyn, static.tree())
        return lower, upper, step, args, kwargs

    def scalar(v):
        return jnp.reshape(jnp.asarray(v), ()).astype(dtype)

    def vector(v):
        return jnp.reshape(jnp.asarray(v), (n,)).astype(dtype)

    def split(fg_packed):
        return fg_packed[0], fg_packed[1:]

    if grad_mode == "fg":  # fun returns (f, g)
        def fg(x, a):
            _, _, _, args, kw = unpack(a)
            if fun_traced:
                f, g = fun(x, *args)
                return scalar(f), vector(g)
            return split(host_call(_packed(fun, n), x, args, kw, (n + 1,), dtype))
        return fg

    if grad_mode == "jac":  # separate gradient callable
        def fg(x, a):
            _, _, _, args, kw = unpack(a)
            if not fun_traced and not jac_traced:
                return split(host_call(_packed(fun, n, jac), x, args, kw, (n + 1,), dtype))
            f = (scalar(fun(x, *args)) if fun_traced
                 else host_call(_checked(fun, "f"), x, args, kw, (), dtype))
            g = (vector(jac(x, *args)) if jac_traced
                 else host_call(_checked(jac, "g", n), x, args, kw, (n,), dtype))
            return f, g
        return fg

    if grad_mode == "auto" and fun_traced:
        def fg(x, a):
            _, _, _, args, _ = unpack(a)
            return jax.value_and_grad(lambda v: scalar(fun(v, *args)))(x)
        return fg

    # Finite differences (SciPy's rules; absolute step ``eps`` or relative step).
    def fg(x, a):
        lower, upper, step, args, kw = unpack(a)
        rel = step if step_kind == "rel" else None
        abs_ = step if step_kind == "abs" else None
        if not fun_traced:
            return value_and_fd_grad_on_host(_checked(fun, "f"), x, args, kw, fd_method, rel,
                                             lower, upper,
                                             bounded, abs_)
        f1 = lambda v: jnp.reshape(fun(v, *args), (1,)).astype(dtype)  # noqa: E731
        f0 = f1(x)
        g = fd_jacobian(f1, x, f0, fd_method, rel, lower, upper, bounded, abs_)[0]
        return f0[0], g
    return fg


@functools.lru_cache(maxsize=128)
def _compiled_solve(config):
    """The jitted solve for one static configuration (a plain tuple: cheap to hash).

    Data (``x0``, bounds, finite-difference steps, array leaves of ``args``) are
    arguments of the returned functions, so new values reuse the compilation.
    """
    fg_cfg, solver_cfg, callback, iprint = config
    fg = _make_fg(*fg_cfg)
    fun, jac, grad_mode, fun_traced, jac_traced, fd_method, step_kind, n, dtype, bounded, _ = fg_cfg
    fd = grad_mode == "fd" or (grad_mode == "auto" and not fun_traced)
    evals = 1 + fd_evaluations(fd_method, n) if fd else 1
    solver = _solver.LbfgsbSolver(fg, evals, *solver_cfg, callback=_callback_adapter(callback))
    if iprint >= 0:
        solver = LbfgsbLog(solver, iprint)

    def run(x0, theta):
        lower, upper, step, dyn = theta
        return iterate(solver, x0, (lower, upper, (step, dyn)))

    def cost(x, theta):
        if not fun_traced:
            raise TypeError(
                "Differentiating an L-BFGS-B solution needs a JAX-traceable `fun`; "
                "this one runs on the host through jax.pure_callback."
            )
        lower, upper, step, dyn = theta
        return fg(x, (lower, upper, (step, dyn)))[0]

    def fields(x, theta):
        return {"fun": cost(x, theta), "jac": jax.grad(cost)(x, theta)}

    def at_bounds(out, theta):
        # Iterates are projected onto the box, so an active variable sits exactly on it.
        lower, upper = theta[0], theta[1]
        return jnp.where(out["x"] <= lower, -1, jnp.where(out["x"] >= upper, 1, 0))

    solution = implicit_solution(run, cost, fields, lambda theta: (theta[0], theta[1]), at_bounds)

    split = n > LARGE_N

    def run_packed(packed, dyn):
        # Eager calls: one buffer to the device (x0, bounds, step) and one back. Large
        # problems skip the packing (copies of n-sized arrays, and of the 2 m n
        # correction pairs, cost more than the transfers they save).
        if split:
            x0, lower, upper, step = packed
        else:
            x0, lower, upper = packed[:n], packed[n : 2 * n], packed[2 * n : 3 * n]
            step = packed[3 * n :] if step_kind is not None else None
        out = run(x0, (lower, upper, step, dyn))
        ints = jnp.stack([out[k].astype(jnp.int32) for k in _INT_FIELDS])
        # int32 counters travel exactly: as float64 values, or bit for bit in float32.
        if dtype == jnp.float32:
            ints = jax.lax.bitcast_convert_type(ints, jnp.float32)
        fields = _FLOAT_FIELDS[:3] if split else _FLOAT_FIELDS
        flat = jnp.concatenate([ints.astype(dtype)] + [jnp.ravel(out[k]) for k in fields])
        return (flat, out["pairs"], out["age"]) if split else flat

    return jax.jit(solution), jax.jit(run_packed)


# How eager results travel to the host, and how they are unpacked there.
_FLOAT_FIELDS = ("x", "fun", "jac", "sk", "yk")
_INT_FIELDS = ("nfev", "njev", "nit", "status", "task_code")


def _unpack(packed, n, m):
    """Eager results as SciPy gives them: NumPy arrays, a NumPy float, Python ints.

    ``packed`` is one flat array, or for large problems ``(flat, pairs, age)``: the
    solver's memory as it is (see :func:`_pairs_in_time_order`).
    """
    split = isinstance(packed, tuple)
    if split:
        packed, pairs, age = packed
        packed = np.asarray(packed)
        sk, yk = _pairs_in_time_order(pairs, age)
    k = len(_INT_FIELDS)
    ints = packed[:k].view(np.int32) if packed.dtype == np.float32 else packed[:k]
    floats = packed[k:]
    x = floats[:n].copy()
    fun = floats[n]
    jac = floats[n + 1 : 2 * n + 1].copy()
    if not split:
        sk = floats[2 * n + 1 : 2 * n + 1 + m * n].reshape(m, n)
        yk = floats[2 * n + 1 + m * n :].reshape(m, n)
    nfev, njev, nit, status, task = (int(v) for v in ints)
    return dict(x=x, fun=fun, jac=jac, nfev=nfev, njev=njev, nit=nit, status=status,
                task_code=task), sk, yk


def _pairs_in_time_order(pairs, age):
    """``(sk, yk)`` from the solver's circular memory ``pairs`` (rows ``[Y; S]``) and the
    slots' insertion ``age`` (-1: empty), oldest first with zero rows for empty slots.

    On the host: a NumPy view of the memory (no copy of the 2 m n values on CPU) when
    the slots are already in time order and the empty ones were never written (a solve
    with fewer than ``m`` updates and no restart); a gathered copy otherwise.
    """
    buf = np.asarray(pairs)
    age = np.asarray(age)
    m = age.shape[0]
    valid = age >= 0
    order = np.argsort(np.where(valid, age, np.iinfo(np.int32).max), kind="stable")
    in_order = bool(np.all(order == np.arange(m)))
    empty = ~valid[order]
    if in_order and not buf[np.concatenate([empty, empty])].any():
        return buf[m:], buf[:m]
    keep = valid[order][:, None]
    return np.where(keep, buf[m + order], 0.0), np.where(keep, buf[order], 0.0)


def _minimize_lbfgsb(
    fun, x0, args=(), jac=None, bounds=None, disp=_NoValue, maxcor=10,
    ftol=2.2204460492503131e-09, gtol=1e-5, eps=1e-8, maxfun=15000, maxiter=15000,
    iprint=_NoValue, callback=None, maxls=20, finite_diff_rel_step=None, workers=None,
    _approx_grad=False, _check_bounds=_check_fmin_bounds, _ravel=True,
    _gcp_chunk=_NoValue, _gram_update_size=_NoValue, _lbub=None, **unknown_options,
):
    if unknown_options:
        msg = ", ".join(map(str, unknown_options.keys()))
        warnings.warn(f"Unknown solver options: {msg}", OptimizeWarning, stacklevel=4)
    if disp is not _NoValue:
        warnings.warn(_DEPRECATED, DeprecationWarning, stacklevel=3)
    if iprint is not _NoValue:
        warnings.warn(_DEPRECATED, DeprecationWarning, stacklevel=3)
    # SciPy <= 1.14's rule (its Fortran code printed; SciPy 1.15+ prints nothing):
    # ``disp`` overrides ``iprint`` unless None; disp=0 silences.
    level = -1 if iprint is _NoValue or iprint is None else int(iprint)
    if disp is not _NoValue and disp is not None:
        level = int(disp) if disp else -1

    x0 = _as_x0(x0, _ravel)
    n = x0.shape[0]
    dtype = x0.dtype
    if bounds is None:
        lower = np.full((n,), -np.inf, dtype)
        upper = np.full((n,), np.inf, dtype)
    else:
        # ``_lbub``: the bounds as arrays, already checked by ``minimize``.
        lb, ub = _check_bounds(bounds, n) if _lbub is None else _lbub
        lower = np.asarray(lb, dtype)
        upper = np.asarray(ub, dtype)
    if not maxls > 0:
        raise ValueError("maxls must be positive.")
    if not maxcor > 0:
        raise ValueError("maxcor must be positive (SciPy reports 'ERROR: M <= 0').")
    if not isinstance(args, tuple):
        args = (args,)

    if _approx_grad:
        grad_mode, fd_method, step_kind, step = "fd", "2-point", "abs", eps
    elif jac is True:
        grad_mode, fd_method, step_kind, step = "fg", None, None, None
    elif callable(jac):
        grad_mode, fd_method, step_kind, step = "jac", None, None, None
    elif isinstance(jac, str) and jac in FD_METHODS:
        rel = finite_diff_rel_step
        grad_mode, fd_method = "fd", jac
        step_kind, step = ("rel", rel) if rel is not None else (None, None)
    else:  # None/False: autodiff when traceable, else SciPy's forward differences
        grad_mode, fd_method, step_kind, step = "auto", "2-point", "abs", eps

    x_struct = jax.ShapeDtypeStruct((n,), dtype)
    out = output_struct(fun, x_struct, args)
    if grad_mode == "fg":
        fun_traced = isinstance(out, (tuple, list)) and len(out) == 2
    else:
        fun_traced = out is not None
    jac_out = output_struct(jac, x_struct, args) if grad_mode == "jac" else None
    jac_traced = jac_out is not None
    if grad_mode == "fg":
        if fun_traced:
            _check_sizes(out[0].shape, out[1].shape, n)
    else:
        _check_sizes(out.shape if fun_traced else None,
                     jac_out.shape if jac_traced else None, n)
    if grad_mode == "auto" and fun_traced:
        fd_method, step_kind, step = None, None, None
    if step is not None:
        xp = jnp if is_tracer(step) else np
        step = xp.broadcast_to(xp.asarray(step, dtype), (n,))
    dyn, static = split_data(args, {})

    large = n > LARGE_N
    gcp_chunk = (_GCP_CHUNK if large else None) if _gcp_chunk is _NoValue else _gcp_chunk
    gram_upd = (
        (_GRAM_UPDATE if large else None)
        if _gram_update_size is _NoValue
        else _gram_update_size
    )
    bounded = bounds is not None
    fg_cfg = (fun, jac, grad_mode, fun_traced, jac_traced, fd_method, step_kind, n, dtype,
              bounded, static)
    # Field order of LbfgsbSolver after ``fg`` and ``evals_per_fg``.
    solver_cfg = (int(maxcor), float(ftol), float(gtol), int(maxfun), int(maxiter), int(maxls),
                  bounded, gcp_chunk, gram_upd)
    solve, solve_packed = _compiled_solve((fg_cfg, solver_cfg, callback, level))
    if is_tracer(x0, step, dyn):
        out = solve(x0, (lower, upper, step, dyn))
        sk, yk = out.pop("sk"), out.pop("yk")
        for k in ("n_corrs", "pairs", "age"):
            out.pop(k)
    else:
        if n > LARGE_N:
            packed = (x0, lower, upper, step)
        else:
            parts = [x0, lower, upper] if step is None else [x0, lower, upper, step]
            packed = np.concatenate(parts)
        with reraise_host_errors():  # a NumPy fun that raised: re-raise it, as SciPy does
            res = solve_packed(packed, dyn)
            res = res if isinstance(res, tuple) else np.asarray(res)
            out, sk, yk = _unpack(res, n, int(maxcor))
    return OptimizeResult(_kind="lbfgsb", hess_inv=_hess_inv(sk, yk), **out)


_HESS_INV_TREEDEF = []


def _hess_inv(sk, yk):
    """``LbfgsInvHessProduct(sk, yk)`` built as a pytree is unflattened: the same object,
    without the cost of a Module ``__init__`` (about 10-30 us, a tenth of a small solve)."""
    if not _HESS_INV_TREEDEF:
        _HESS_INV_TREEDEF.append(jax.tree_util.tree_structure(LbfgsInvHessProduct(sk, yk)))
    return jax.tree_util.tree_unflatten(_HESS_INV_TREEDEF[0], [sk, yk])


# ----------------------------------------------------------------------------------
# Public facades
# ----------------------------------------------------------------------------------


def minimize(
    fun, x0, args=(), method="L-BFGS-B", jac=None, hess=None, hessp=None,
    bounds=None, constraints=(), tol=None, callback=None, options=None,
):
    """Minimise a scalar function of one or more variables with L-BFGS-B.

    The signature, options and result follow :func:`scipy.optimize.minimize` with
    ``method="L-BFGS-B"``; only that method is implemented.

    Parameters
    ----------
    fun : callable ``fun(x, *args) -> float``
        The objective. A JAX-traceable function is differentiated with
        :func:`jax.value_and_grad` when ``jac`` is None; a plain NumPy function is run
        on the host through :func:`jax.pure_callback` (with SciPy's forward
        differences when ``jac`` is None).
    x0 : array_like, shape (n,)
        Initial guess; its floating dtype is the working dtype (float32 or float64).
        It is clipped into the bounds and never modified.
    args : tuple, optional
        Extra arguments. Arrays in ``args`` are traced: new values of the same shape
        do not recompile. Other values are static (part of the compilation key).
    method : str, optional
        Must be ``"L-BFGS-B"`` (case-insensitive) or None.
    jac : {callable, True, '2-point', '3-point', 'cs', None}, optional
        Gradient: a callable ``jac(x, *args)``; ``True`` when ``fun`` returns
        ``(f, g)``; a finite-difference scheme with relative step; None for autodiff
        (or forward differences with absolute step ``eps`` for a NumPy function).
    hess, hessp : optional
        Not used by L-BFGS-B; a ``RuntimeWarning`` when given, as in SciPy.
    bounds : sequence of ``(min, max)`` pairs or `scipy.optimize.Bounds`, optional
        None or +-inf for no bound.
    constraints : optional
        Not supported by L-BFGS-B; a ``RuntimeWarning`` when given, as in SciPy.
    tol : float, optional
        Sets ``ftol`` and ``gtol`` when they are not in ``options``.
    callback : callable, optional
        ``callback(xk)`` or ``callback(intermediate_result)``, called on the host after
        each iteration. Raising ``StopIteration`` stops the solve (status 99), as in
        SciPy.
    options : dict, optional
        ``maxcor`` (10), ``ftol`` (2.22e-9), ``gtol`` (1e-5), ``eps`` (1e-8),
        ``maxfun`` (15000), ``maxiter`` (15000), ``maxls`` (20),
        ``finite_diff_rel_step`` (None), ``workers`` (None: accepted for compatibility
        and ignored; finite differences of a traceable ``fun`` are one vectorised
        call, those of a NumPy ``fun`` run one after another on the host); ``disp``
        and ``iprint`` are accepted with
        SciPy 1.17's ``DeprecationWarning`` and print the iteration log of the
        L-BFGS-B Fortran code (see Notes).

    Returns
    -------
    res : OptimizeResult
        ``x``, ``fun``, ``jac``, ``nfev``, ``njev``, ``nit``, ``status`` (0 converged,
        1 limits reached, 2 abnormal), ``message``, ``success``, ``hess_inv`` (an
        :class:`LbfgsInvHessProduct`) and ``task_code`` (the integer behind
        ``message``). A pytree: returns from ``jax.jit`` and batches under ``jax.vmap``.

    See Also
    --------
    fmin_l_bfgs_b : SciPy's older interface to the same solver.
    least_squares : for objectives that are sums of squares.

    Notes
    -----
    Hessian information and constraints are not used (SciPy warns the same way).

    Iteration log: SciPy up to 1.14 ran the Fortran L-BFGS-B code, which printed a log
    for ``iprint >= 0``; since 1.15 SciPy prints nothing and deprecates ``iprint`` and
    ``disp``. jaxopt_lsq warns as SciPy 1.17 does and prints the old log (so existing
    code keeps its output), with the old rule: ``disp`` overrides ``iprint`` unless it
    is None, ``disp=0`` silences, ``disp=True`` means ``iprint=1``. Levels:
    ``iprint < 0`` nothing (the default); ``0`` header and final summary; ``k > 0`` also
    ``At iterate`` every ``k`` iterations, skipped BFGS updates and the final ``F``;
    ``>= 99`` every iteration with its line-search count and step norm; ``>= 100`` the
    final ``x``; ``> 100`` ``x`` and ``g`` at every iteration. It is printed through
    :func:`jax.debug.callback`, so it also appears inside ``jax.jit`` (once per batch
    element under ``jax.vmap``). The summary's ``Tnint`` (Cauchy-search segments) is
    not tracked and prints ``-``; ``Nact`` counts the variables on a bound at the final
    iterate.
    ``maxcor <= 0`` raises ``ValueError`` where SciPy returns an ``ERROR: M <= 0``
    result. ``hess_inv`` uses the pairs in time order (SciPy, after more than
    ``maxcor`` updates, passes them in storage order).

    The algorithm is L-BFGS-B 3.0 [1]_ (the papers and the line search are listed in
    :func:`fmin_l_bfgs_b`). Solutions are differentiable: ``x``, ``fun`` and ``jac``
    with respect to arrays in ``args``, by implicit differentiation [2]_ of
    ``grad f = 0`` on the free variables with the variables on an active bound held
    fixed; the loop is never unrolled.

    References
    ----------
    .. [1] R. H. Byrd, P. Lu, J. Nocedal and C. Zhu, "A limited memory algorithm for
       bound constrained optimization", SIAM J. Sci. Comput. 16(5):1190-1208, 1995.
    .. [2] M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-López,
       F. Pedregosa and J.-P. Vert, "Efficient and modular implicit differentiation",
       NeurIPS 2022.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import minimize
    >>> def rosen(x):
    ...     return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    >>> res = minimize(rosen, np.zeros(5), method="L-BFGS-B", bounds=[(0, 0.8)] * 5)
    >>> bool(res.success), np.asarray(res.x, float).round(4).tolist()  # x[0] on a bound
    (True, [0.8, 0.66, 0.4483, 0.2089, 0.0436])

    Inside ``jax.jit``, and differentiated with respect to data in ``args``:

    >>> def fit(c):
    ...     return minimize(lambda x, c: jnp.sum((x - c) ** 2), jnp.zeros(3), args=(c,)).x
    >>> J = jax.jacobian(jax.jit(fit))(jnp.array([1.0, 2.0, 3.0]))
    >>> bool(jnp.allclose(J, jnp.eye(3), atol=1e-5))
    True
    """
    if method is None:
        method = "L-BFGS-B"
    if not isinstance(method, str) or method.lower() != "l-bfgs-b":
        raise ValueError(
            f"Unknown solver {method!r}: jaxopt_lsq.minimize supports only "
            "method='L-BFGS-B'."
        )
    if hess is not None:
        warnings.warn("Method L-BFGS-B does not use Hessian information (hess).",
                      RuntimeWarning, stacklevel=2)
    if hessp is not None:
        warnings.warn("Method L-BFGS-B does not use Hessian-vector product information "
                      "(hessp).", RuntimeWarning, stacklevel=2)
    if constraints is not None and np.any(constraints):
        warnings.warn("Method L-BFGS-B cannot handle constraints.", RuntimeWarning,
                      stacklevel=2)
    options = dict(options or {})
    if options.pop("return_all", False):
        warnings.warn("Method L-BFGS-B does not support the return_all option.",
                      RuntimeWarning, stacklevel=2)
    if tol is not None:
        options.setdefault("ftol", tol)
        options.setdefault("gtol", tol)
    if jac is not None and not callable(jac) and jac is not True and not (
        isinstance(jac, str) and jac in FD_METHODS
    ):
        jac = None
    kw = dict(args=args, jac=jac, callback=callback, _check_bounds=_check_minimize_bounds,
              _ravel=False, **options)
    fixed = None
    if bounds is not None:
        x0 = _as_x0(x0, False)
        lb, ub = _check_minimize_bounds(bounds, x0.shape[0])
        fixed = lb == ub
        if fixed.all():
            return _all_fixed_result(fun, x0, lb, args, jac)
    if fixed is not None and fixed.any() and not callable(jac) and jac is not True:
        res = _minimize_without_fixed(fun, x0, lb, ub, fixed, **kw)
    else:
        res = _minimize_lbfgsb(fun, x0, bounds=bounds,
                               _lbub=None if bounds is None else (lb, ub), **kw)
    return _callback_stop_as_minimize(res)


# ----------------------------------------------------------------------------------
# What SciPy's ``minimize`` adds around L-BFGS-B
# ----------------------------------------------------------------------------------


def _callback_stop_as_minimize(res):
    """``minimize`` reports a callback stop as status 99 (``fmin_l_bfgs_b``: 2)."""
    task = res["task_code"]
    stop = task == _solver.TASK_CALLBACK
    if isinstance(task, int):
        if not stop:
            return res
        status, task = 99, _TASK_CALLBACK_MINIMIZE
    else:
        status = jnp.where(stop, 99, res["status"])
        task = jnp.where(stop, _TASK_CALLBACK_MINIMIZE, task)
    fields = {k: v for k, v in res.items() if k not in OptimizeResult._DERIVED}
    fields.update(status=status, task_code=task)
    return OptimizeResult(_kind="lbfgsb", **fields)


def _all_fixed_result(fun, x0, lb, args, jac):
    """Every variable fixed by ``lb == ub``: SciPy evaluates ``fun`` once and returns."""
    traced = is_tracer(x0, args)
    xp = jnp if traced else np
    x = xp.asarray(lb, x0.dtype)
    f = fun(x, *(args if isinstance(args, tuple) else (args,)))
    if jac is True:
        f = f[0]
    f = xp.asarray(f, x0.dtype).reshape(())
    f = f if traced else f[()]
    return OptimizeResult(_kind="lbfgsb", x=x, fun=f, nfev=1, njev=0, nhev=0, status=0,
                          task_code=_TASK_ALL_FIXED)


class _Embed(eqx.Module):
    """Puts the free variables back among the fixed ones (lb == ub)."""

    n: int = eqx.field(static=True)
    free: tuple = eqx.field(static=True)
    fixed: tuple = eqx.field(static=True)
    values: tuple = eqx.field(static=True)

    def __call__(self, v, fill=None):
        values = self.values if fill is None else (fill,) * len(self.fixed)
        free, fixed = list(self.free), list(self.fixed)
        if isinstance(v, np.ndarray):
            out = np.empty(v.shape[:-1] + (self.n,), v.dtype)
            out[..., free] = v
            out[..., fixed] = values
            return out
        v = jnp.asarray(v)
        out = jnp.zeros(v.shape[:-1] + (self.n,), v.dtype)
        return out.at[..., jnp.asarray(free)].set(v).at[..., jnp.asarray(fixed)].set(
            jnp.asarray(values, v.dtype))


class _OnFree(eqx.Module):
    """``fun`` (or ``callback``) of the free variables only.

    Compares equal for equal contents, so repeated calls reuse the compiled solve (the
    fixed values are part of its key: new values compile anew).
    """

    fun: Any = eqx.field(static=True)
    embed: _Embed = eqx.field(static=True)

    @property
    def __signature__(self):
        return inspect.signature(self.fun)

    def __call__(self, *args, **kwargs):
        if "intermediate_result" in kwargs:  # a callback that takes the result
            r = kwargs.pop("intermediate_result")
            r["x"] = self.embed(r["x"])
            return self.fun(intermediate_result=r)
        return self.fun(self.embed(args[0]), *args[1:], **kwargs)


def _minimize_without_fixed(fun, x0, lb, ub, fixed, callback=None, **kw):
    """SciPy's rule: with finite differences, variables fixed by ``lb == ub`` are
    removed from the problem; the result gives them ``jac = nan`` and no ``hess_inv``."""
    embed = _Embed(x0.shape[0], tuple(np.flatnonzero(~fixed).tolist()),
                   tuple(np.flatnonzero(fixed).tolist()), tuple(lb[fixed].tolist()))
    free = np.asarray(embed.free)
    cb = None if callback is None else _OnFree(callback, embed)
    res = _minimize_lbfgsb(_OnFree(fun, embed), x0[free], callback=cb,
                           bounds=np.stack([lb[free], ub[free]], axis=1), **kw)
    res["x"] = embed(res["x"])
    res["jac"] = embed(res["jac"], fill=np.nan)
    res["hess_inv"] = None
    return res


def fmin_l_bfgs_b(
    func, x0, fprime=None, args=(), approx_grad=0, bounds=None, m=10, factr=1e7,
    pgtol=1e-5, epsilon=1e-8, iprint=_NoValue, maxfun=15000, maxiter=15000,
    disp=_NoValue, callback=None, maxls=20,
):
    """Minimise ``func`` with L-BFGS-B, as :func:`scipy.optimize.fmin_l_bfgs_b`.

    Same parameters, defaults and return values as SciPy 1.17; the solver is a compiled
    ``jax.lax.while_loop`` (see :func:`minimize`, which shares it), so the call also
    works inside ``jax.jit``, under ``jax.vmap`` and in float32.

    Parameters
    ----------
    func : callable ``f(x, *args)``
        The function to minimise. When ``fprime`` is None and ``approx_grad`` is false
        it returns ``(f, g)``, the value and the gradient. A JAX-traceable function runs
        inside the compiled solver; a plain NumPy function is called on the host through
        :func:`jax.pure_callback`.
    x0 : array_like, shape (n,)
        Initial guess (flattened; its float dtype is the working precision). It is
        projected onto the bounds and never modified.
    fprime : callable ``fprime(x, *args)``, optional
        The gradient of ``func``. With ``func`` in ``jax.numpy``, ``jax.grad(func)`` is
        a good choice.
    args : sequence, optional
        Extra arguments for ``func`` and ``fprime``. Arrays are traced: new values of
        the same shapes reuse the compiled solver.
    approx_grad : bool, optional
        Approximate the gradient by forward differences with absolute step
        ``epsilon`` (``func`` then returns only ``f``).
    bounds : list, optional
        ``(min, max)`` pairs for each element of ``x``; None or +-inf for no bound.
    m : int, optional
        Number of correction pairs kept in the limited memory (SciPy's ``maxcor``).
    factr : float, optional
        Stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= factr * eps``, with
        ``eps`` the machine precision of float64 (as in SciPy, also in float32). 1e12
        for low accuracy, 1e7 (default) for moderate accuracy, 10 for high accuracy.
    pgtol : float, optional
        Stop when ``max(|proj g_i|) <= pgtol``, the projected gradient's inf-norm.
    epsilon : float, optional
        Finite-difference step when ``approx_grad`` is true.
    iprint : int, optional
        Deprecated in SciPy (1.15) together with ``disp``; passing either issues
        SciPy's ``DeprecationWarning``. SciPy 1.17 prints nothing; here ``iprint >= 0``
        prints the iteration log of the Fortran L-BFGS-B code, as SciPy <= 1.14 did
        (levels in :func:`minimize`'s Notes). Default: no output.
    maxfun : int, optional
        Maximum number of function evaluations (finite-difference evaluations count,
        so the limit can be passed within an iteration, as in SciPy).
    maxiter : int, optional
        Maximum number of iterations.
    disp : int, optional
        Deprecated, see ``iprint``: 0 silences the log, a positive value overrides
        ``iprint``.
    callback : callable, optional
        ``callback(xk)`` on the host after each iteration (also inside ``jax.jit``).
    maxls : int, optional
        Maximum number of line-search steps per iteration (default 20).

    Returns
    -------
    x : ndarray
        Estimated position of the minimum (a JAX array inside a transformation).
    f : float
        Value of ``func`` at the minimum.
    d : dict
        ``warnflag`` (0 converged, 1 too many function evaluations or iterations, 2
        stopped for another reason, given in ``task``), ``grad`` (the gradient at the
        minimum), ``funcalls``, ``nit`` and ``task`` (the message; None inside a trace).

    See Also
    --------
    minimize : the same solver behind SciPy's ``minimize`` interface, with the
        ``OptimizeResult`` (``hess_inv``, ``status``, ``message``).

    Notes
    -----
    The algorithm is L-BFGS-B 3.0 [1]_, [2]_, [3]_: a generalised Cauchy point along
    the projected gradient path, subspace minimisation over the free variables with the
    compact limited-memory matrices, and the Moré--Thuente line search [4]_. The Cauchy
    point is computed without a sequential loop over breakpoints, so it vectorises.
    Solutions are differentiable with respect to ``args`` by implicit differentiation
    [5]_ of the projected optimality conditions (see :func:`minimize`).

    References
    ----------
    .. [1] R. H. Byrd, P. Lu, J. Nocedal and C. Zhu, "A limited memory algorithm for
       bound constrained optimization", SIAM J. Sci. Comput. 16(5):1190-1208, 1995.
    .. [2] C. Zhu, R. H. Byrd, P. Lu and J. Nocedal, "Algorithm 778: L-BFGS-B, Fortran
       subroutines for large-scale bound-constrained optimization", ACM Trans. Math.
       Softw. 23(4):550-560, 1997.
    .. [3] J. L. Morales and J. Nocedal, "Remark on 'Algorithm 778: L-BFGS-B'", ACM
       Trans. Math. Softw. 38(1):7, 2011.
    .. [4] J. J. Moré and D. J. Thuente, "Line search algorithms with guaranteed
       sufficient decrease", ACM Trans. Math. Softw. 20(3):286-307, 1994.
    .. [5] M. Blondel et al., "Efficient and modular implicit differentiation",
       NeurIPS 2022.

    Examples
    --------
    SciPy's regression example, with the gradient from JAX:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import fmin_l_bfgs_b
    >>> X = np.arange(0, 10, 1.0)
    >>> Y = 2 * X + 3
    >>> def func(p, x, y):
    ...     return jnp.sum((y - (p[0] * x + p[1])) ** 2)
    >>> x_opt, f_opt, info = fmin_l_bfgs_b(func, np.array([0.0, 1.0]),
    ...                                    fprime=jax.grad(func), args=(X, Y))
    >>> np.asarray(x_opt, float).round(4).tolist(), info["warnflag"]
    ([2.0, 3.0], 0)

    With bounds that exclude that solution, ``bounds=[(0, 5), (5, 10)]``, the minimum
    moves to about ``[1.6599, 5.3165]``.
    """
    if approx_grad:
        jac = None
    elif fprime is None:
        jac = True
    else:
        jac = fprime
    res = _minimize_lbfgsb(
        func, x0, args=args, jac=jac, bounds=bounds, disp=disp, iprint=iprint,
        maxcor=m, ftol=factr * np.finfo(float).eps, gtol=pgtol, eps=epsilon,
        maxfun=maxfun, maxiter=maxiter, callback=callback, maxls=maxls,
        _approx_grad=bool(approx_grad),
    )
    d = {
        "grad": res["jac"],
        "task": res["message"],
        "funcalls": res["nfev"],
        "nit": res["nit"],
        "warnflag": res["status"],
    }
    return res["x"], res["fun"], d
