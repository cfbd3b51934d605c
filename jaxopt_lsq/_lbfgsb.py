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
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._implicit import implicit_solution
from ._host import host_call, is_tracer, output_struct, reraise_host_errors, split_data
from ._iterate import iterate
from ._jacobian import FD_METHODS, fd_evaluations, fd_jacobian, value_and_fd_grad_on_host
from ._result import OptimizeResult, register_result_kind
from ._solvers import lbfgsb as _solver
from ._validate import float_dtype

try:  # SciPy's warning class when SciPy is installed, so filters written for it work
    from scipy.optimize import OptimizeWarning
except Exception:  # pragma: no cover

    class OptimizeWarning(UserWarning):
        pass


LBFGSB_MESSAGES = {
    _solver.TASK_PGTOL: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
    _solver.TASK_FTOL: "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH",
    _solver.TASK_MAXFUN: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    _solver.TASK_MAXITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
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
    Nocedal (1980) over the pairs, oldest first. Unlike SciPy it is a pytree (so it can
    leave ``jax.jit`` and be batched by ``jax.vmap``); empty slots are zero rows and do
    nothing. ``matvec``, ``dot``, ``@``, ``matmat`` and ``todense`` return JAX arrays.

    References
    ----------
    J. Nocedal. Updating quasi-Newton matrices with limited storage. Math. Comp.
    35(151):773-782, 1980.
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

    def matmat(self, X):
        s, y = self.sk, self.yk
        sy = jnp.einsum("ij,ij->i", s, y)
        rho = jnp.where(sy != 0, 1.0 / jnp.where(sy != 0, sy, 1.0), 0.0)
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
    if callback is None:
        return None
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = set()
    if params == {"intermediate_result"}:
        return lambda x, f: callback(
            intermediate_result=OptimizeResult(x=np.asarray(x), fun=np.asarray(f))
        )
    return lambda x, f: callback(np.asarray(x))


def _packed(fun, jac=None):
    """A NumPy ``(f, g)`` (or ``f`` and ``jac``) as one ``(n + 1,)`` host result."""
    if jac is None:
        def fg(x, *a):
            f, g = fun(x, *a)
            return np.concatenate([np.ravel(f), np.ravel(g)])
    else:
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
            return split(host_call(_packed(fun), x, args, kw, (n + 1,), dtype))
        return fg

    if grad_mode == "jac":  # separate gradient callable
        def fg(x, a):
            _, _, _, args, kw = unpack(a)
            if not fun_traced and not jac_traced:
                return split(host_call(_packed(fun, jac), x, args, kw, (n + 1,), dtype))
            f = scalar(fun(x, *args)) if fun_traced else host_call(fun, x, args, kw, (), dtype)
            g = vector(jac(x, *args)) if jac_traced else host_call(jac, x, args, kw, (n,), dtype)
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
            return value_and_fd_grad_on_host(fun, x, args, kw, fd_method, rel, lower, upper,
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
    fg_cfg, solver_cfg, callback = config
    fg = _make_fg(*fg_cfg)
    fun, jac, grad_mode, fun_traced, jac_traced, fd_method, step_kind, n, dtype, bounded, _ = fg_cfg
    fd = grad_mode == "fd" or (grad_mode == "auto" and not fun_traced)
    evals = 1 + fd_evaluations(fd_method, n) if fd else 1
    solver = _solver.LbfgsbSolver(fg, evals, *solver_cfg, callback=_callback_adapter(callback))

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
        return (flat, out["sk"], out["yk"]) if split else flat

    return jax.jit(solution), jax.jit(run_packed)


# How eager results travel to the host, and how they are unpacked there.
_FLOAT_FIELDS = ("x", "fun", "jac", "sk", "yk")
_INT_FIELDS = ("nfev", "njev", "nit", "status", "task_code")


def _unpack(packed, n, m):
    """Eager results as SciPy gives them: NumPy arrays, a NumPy float, Python ints.

    ``packed`` is one flat array, or for large problems ``(flat, sk, yk)`` (the
    correction pairs then stay JAX arrays).
    """
    split = isinstance(packed, tuple)
    if split:
        packed, sk, yk = packed
        packed = np.asarray(packed)
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


def _minimize_lbfgsb(
    fun, x0, args=(), jac=None, bounds=None, disp=_NoValue, maxcor=10,
    ftol=2.2204460492503131e-09, gtol=1e-5, eps=1e-8, maxfun=15000, maxiter=15000,
    iprint=_NoValue, callback=None, maxls=20, finite_diff_rel_step=None,
    _approx_grad=False, _check_bounds=_check_fmin_bounds, _ravel=True,
    _gcp_chunk=_NoValue, _gram_update_size=_NoValue, **unknown_options,
):
    if unknown_options:
        msg = ", ".join(map(str, unknown_options.keys()))
        warnings.warn(f"Unknown solver options: {msg}", OptimizeWarning, stacklevel=4)
    if disp is not _NoValue:
        warnings.warn(_DEPRECATED, DeprecationWarning, stacklevel=3)
    if iprint is not _NoValue:
        warnings.warn(_DEPRECATED, DeprecationWarning, stacklevel=3)

    x0 = _as_x0(x0, _ravel)
    n = x0.shape[0]
    dtype = x0.dtype
    if bounds is None:
        lower = np.full((n,), -np.inf, dtype)
        upper = np.full((n,), np.inf, dtype)
    else:
        lb, ub = _check_bounds(bounds, n)
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
    jac_traced = grad_mode == "jac" and output_struct(jac, x_struct, args) is not None
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
    solve, solve_packed = _compiled_solve((fg_cfg, solver_cfg, callback))
    if is_tracer(x0, step, dyn):
        out = solve(x0, (lower, upper, step, dyn))
        sk, yk = out.pop("sk"), out.pop("yk")
        out.pop("n_corrs")
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
    return OptimizeResult(_kind="lbfgsb", hess_inv=LbfgsInvHessProduct(sk, yk), **out)


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
    bounds : sequence of ``(min, max)`` pairs or `scipy.optimize.Bounds`, optional
        None or +-inf for no bound.
    tol : float, optional
        Sets ``ftol`` and ``gtol`` when they are not in ``options``.
    callback : callable, optional
        ``callback(xk)`` or ``callback(intermediate_result)``, called on the host after
        each iteration. Unlike SciPy, it cannot stop the solve.
    options : dict, optional
        ``maxcor`` (10), ``ftol`` (2.22e-9), ``gtol`` (1e-5), ``eps`` (1e-8),
        ``maxfun`` (15000), ``maxiter`` (15000), ``maxls`` (20),
        ``finite_diff_rel_step`` (None); ``disp`` and ``iprint`` are accepted with
        SciPy's deprecation warning.

    Returns
    -------
    res : OptimizeResult
        ``x``, ``fun``, ``jac``, ``nfev``, ``njev``, ``nit``, ``status`` (0 converged,
        1 limits reached, 2 abnormal), ``message``, ``success``, ``hess_inv`` (an
        :class:`LbfgsInvHessProduct`) and ``task_code`` (the integer behind
        ``message``). A pytree: returns from ``jax.jit`` and batches under ``jax.vmap``.

    Notes
    -----
    Hessian information and constraints are not used (SciPy warns the same way).
    ``maxcor <= 0`` raises ``ValueError`` where SciPy returns an ``ERROR: M <= 0``
    result. ``hess_inv`` uses the pairs in time order (SciPy, after more than
    ``maxcor`` updates, passes them in storage order).
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
    return _minimize_lbfgsb(
        fun, x0, args=args, jac=jac, bounds=bounds, callback=callback,
        _check_bounds=_check_minimize_bounds, _ravel=False, **options,
    )


def fmin_l_bfgs_b(
    func, x0, fprime=None, args=(), approx_grad=0, bounds=None, m=10, factr=1e7,
    pgtol=1e-5, epsilon=1e-8, iprint=_NoValue, maxfun=15000, maxiter=15000,
    disp=_NoValue, callback=None, maxls=20,
):
    """Minimise ``func`` with L-BFGS-B, as :func:`scipy.optimize.fmin_l_bfgs_b`.

    Parameters are SciPy's: ``func`` returns ``(f, g)`` when ``fprime`` is None and
    ``approx_grad`` is false; ``approx_grad`` uses forward differences with absolute
    step ``epsilon``; ``bounds`` are ``(min, max)`` pairs (None or +-inf for no bound);
    ``m`` corrections; stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <=
    factr * eps`` (``eps`` of float64, as SciPy) or the projected gradient inf-norm
    ``<= pgtol``; ``iprint`` and ``disp`` are deprecated no-ops (with SciPy's warning).

    Returns
    -------
    x : jax.Array
        Estimated position of the minimum.
    f : jax.Array
        Value of ``func`` at the minimum.
    d : dict
        ``warnflag`` (0 converged, 1 too many evaluations or iterations, 2 stopped for
        another reason, given in ``task``), ``grad``, ``funcalls``, ``nit``, ``task``
        (the message string; None inside a trace).
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
