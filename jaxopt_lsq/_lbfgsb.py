"""SciPy's ``fmin_l_bfgs_b`` and ``minimize(method="L-BFGS-B")`` on top of the solver.

Host side: argument checks with SciPy's exception types and messages, the choice of
gradient (autodiff, user gradient, finite differences; in JAX when the function can be
traced, else through :func:`jax.pure_callback`) and a cache of compiled solves keyed on
everything static (function identity, gradient mode, options, shapes). Data that
changes between calls goes through ``args`` as arrays and never causes a recompile.
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._iterate import iterate
from ._lbfgsb_support import (
    FD_METHODS,
    fd_evals_per_gradient,
    fd_gradient_jax,
    fd_gradient_numpy,
    host_call,
    is_traceable,
    split_args,
    static_key,
)
from ._result import OptimizeResult, register_result_kind
from ._solvers import lbfgsb as _solver

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
    lb, ub = zip(*bounds)
    lb = np.array([-np.inf if v is None else float(np.asarray(v).item()) for v in lb])
    ub = np.array([np.inf if v is None else float(np.asarray(v).item()) for v in ub])
    return lb, ub


def _check_minimize_bounds(bounds, n):
    lb, ub = _bounds_pairs_to_arrays(bounds)
    if np.any(ub < lb):
        raise ValueError("An upper bound is less than the corresponding lower bound.")
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
    x0 = jnp.asarray(x0)
    if ravel:
        x0 = x0.reshape(-1)
    elif x0.ndim == 0:
        x0 = x0.reshape(1)
    if x0.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    return x0


# ----------------------------------------------------------------------------------
# Gradient plan and compiled-solve cache
# ----------------------------------------------------------------------------------

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 128


def _struct(a):
    return (tuple(a.shape), str(a.dtype))


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


def _build_fg(fun, jac, grad_mode, x_struct, dyn, static, fd_method, abs_step, rel_step):
    """Return ``(fg, evals_per_fg)``; ``fg(x, (lower, upper, dyn)) -> (f, g)``."""
    n = x_struct.shape[0]
    dtype = x_struct.dtype
    f_s = jax.ShapeDtypeStruct((), dtype)
    g_s = jax.ShapeDtypeStruct((n,), dtype)

    def user(fn):
        return lambda x, d: fn(x, *eqx.combine(d, static))

    def scalar(v):
        return jnp.reshape(jnp.asarray(v), ()).astype(dtype)

    def np_call(fn, x, d):
        return fn(np.asarray(x), *eqx.combine(d, static))

    if grad_mode == "fg":  # fun returns (f, g)
        if is_traceable(fun, x_struct, dyn, static, n_out=2):
            def fg(x, a):
                f, g = user(fun)(x, a[2])
                return scalar(f), jnp.reshape(jnp.asarray(g), (n,)).astype(dtype)
        else:
            def fg(x, a):
                return host_call(lambda xx, d: np_call(fun, xx, d), (f_s, g_s), x, a[2])
        return fg, 1

    if grad_mode == "jac":  # separate gradient callable
        f_tr = is_traceable(fun, x_struct, dyn, static)
        g_tr = is_traceable(jac, x_struct, dyn, static)

        def fg(x, a):
            if f_tr:
                f = scalar(user(fun)(x, a[2]))
            else:
                f = host_call(lambda xx, d: np_call(fun, xx, d), f_s, x, a[2])
            if g_tr:
                g = jnp.reshape(jnp.asarray(user(jac)(x, a[2])), (n,)).astype(dtype)
            else:
                g = host_call(lambda xx, d: np_call(jac, xx, d), g_s, x, a[2])
            return f, g

        return fg, 1

    traceable = is_traceable(fun, x_struct, dyn, static)
    if grad_mode == "auto" and traceable:
        def fg(x, a):
            return jax.value_and_grad(lambda xx: scalar(user(fun)(xx, a[2])))(x)

        return fg, 1

    # finite differences
    method = fd_method
    evals = 1 + fd_evals_per_gradient(method, n)
    if traceable:
        def fg(x, a):
            lower, upper, d = a
            f = lambda xx: scalar(user(fun)(xx, d))  # noqa: E731
            f0 = f(x)
            g = fd_gradient_jax(f, x, f0, lower, upper, method, abs_step, rel_step)
            return f0, g
    else:
        def host_fg(x, lower, upper, d):
            f = lambda xx: float(np.asarray(np_call(fun, xx, d)).reshape(()))  # noqa: E731
            f0 = f(x)
            g = fd_gradient_numpy(f, x, f0, lower, upper, method, abs_step, rel_step)
            return f0, g

        def fg(x, a):
            return host_call(host_fg, (f_s, g_s), x, a[0], a[1], a[2])

    return fg, evals


def _get_solve(fun, jac, grad_mode, x0, dyn, static, settings):
    """The jitted solve for this static configuration (built once, then cached)."""
    skey = static_key(static)
    dyn_struct = jax.tree_util.tree_map(
        lambda a: _struct(jnp.asarray(a)), dyn
    )
    key = (fun, jac if callable(jac) or jac is None else str(jac), grad_mode,
           _struct(x0), jax.tree_util.tree_structure(dyn), str(dyn_struct), skey,
           tuple(sorted(settings.items())))
    if skey is not None:
        try:
            hit = _CACHE.get(key)
        except TypeError:
            hit, skey = None, None
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    x_struct = jax.ShapeDtypeStruct(x0.shape, x0.dtype)
    dyn_shapes = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.asarray(a).dtype), dyn
    )
    s = dict(settings)
    fg, evals = _build_fg(
        fun, jac, grad_mode, x_struct, dyn_shapes, static,
        s.pop("fd_method"), s.pop("abs_step"), s.pop("rel_step"),
    )
    cb = s.pop("callback")
    solver = _solver.LbfgsbSolver(fg=fg, evals_per_fg=evals, callback=cb, **s)

    @jax.jit
    def solve(x0, lower, upper, dyn):
        return iterate(solver, x0, (lower, upper, dyn))

    if skey is not None:
        _CACHE[key] = solve
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return solve


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
        lower = jnp.full((n,), -jnp.inf, dtype)
        upper = jnp.full((n,), jnp.inf, dtype)
    else:
        lb, ub = _check_bounds(bounds, n)
        lower = jnp.asarray(lb, dtype)
        upper = jnp.asarray(ub, dtype)
    if not maxls > 0:
        raise ValueError("maxls must be positive.")
    if not maxcor > 0:
        raise ValueError("maxcor must be positive (SciPy reports 'ERROR: M <= 0').")
    if not isinstance(args, tuple):
        args = (args,)

    if _approx_grad:
        grad_mode, fd_method, abs_step, rel_step = "fd", "2-point", eps, None
    elif jac is True:
        grad_mode, fd_method, abs_step, rel_step = "fg", None, None, None
    elif callable(jac):
        grad_mode, fd_method, abs_step, rel_step = "jac", None, None, None
    elif isinstance(jac, str) and jac in FD_METHODS:
        grad_mode, fd_method, abs_step, rel_step = "fd", jac, None, finite_diff_rel_step
    else:  # None/False: autodiff when traceable, else SciPy's forward differences
        grad_mode, fd_method, abs_step, rel_step = "auto", "2-point", eps, None
    if isinstance(abs_step, np.ndarray) or isinstance(rel_step, np.ndarray):
        abs_step = None if abs_step is None else tuple(np.ravel(abs_step).tolist())
        rel_step = None if rel_step is None else tuple(np.ravel(rel_step).tolist())

    large = n > LARGE_N
    gcp_chunk = (_GCP_CHUNK if large else None) if _gcp_chunk is _NoValue else _gcp_chunk
    gram_upd = (
        (_GRAM_UPDATE if large else None)
        if _gram_update_size is _NoValue
        else _gram_update_size
    )
    settings = dict(
        m=int(maxcor),
        ftol=float(ftol),
        pgtol=float(gtol),
        maxfun=int(maxfun),
        maxiter=int(maxiter),
        maxls=int(maxls),
        bounded=bounds is not None,
        gcp_chunk=gcp_chunk,
        gram_update_size=gram_upd,
        fd_method=fd_method,
        abs_step=None if abs_step is None else (
            abs_step if isinstance(abs_step, tuple) else float(abs_step)),
        rel_step=None if rel_step is None else (
            rel_step if isinstance(rel_step, tuple) else float(rel_step)),
        callback=_callback_adapter(callback),
    )
    dyn, static = split_args(args)
    solve = _get_solve(fun, jac, grad_mode, x0, dyn, static, settings)
    out = solve(x0, lower, upper, dyn)
    hess_inv = LbfgsInvHessProduct(out.pop("sk"), out.pop("yk"))
    out.pop("n_corrs")
    return OptimizeResult(_kind="lbfgsb", hess_inv=hess_inv, **out)


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
