"""``curve_fit``: SciPy's interface on top of :func:`jaxopt_lsq.least_squares`."""

from __future__ import annotations

import functools
import inspect
import warnings

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ._host import is_tracer
from ._least_squares import least_squares
from ._result import OptimizeWarning


def _n_params(f):
    try:
        params = [
            p for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) < 2:
        raise ValueError("Unable to determine number of fit parameters.")
    return len(params) - 1


def _initialize_feasible(lb, ub):
    lb_f, ub_f = np.isfinite(lb), np.isfinite(ub)
    with np.errstate(invalid="ignore"):  # inf + inf in the branches np.where discards
        return np.where(lb_f & ub_f, 0.5 * (lb + ub), np.where(lb_f, lb + 1, np.where(ub_f, ub - 1, 1.0)))


@functools.lru_cache(maxsize=256)
def _residual_function(f, weighting):
    """Residuals ``W (f(xdata, *p) - ydata)``; one function object per (f, weighting),
    so that fits of new data reuse the compiled solver. Data travel in ``args``."""
    if weighting == "none":
        def residuals(p, xdata, ydata, transform):
            return f(xdata, *p) - ydata
    elif weighting == "diagonal":
        def residuals(p, xdata, ydata, transform):
            return transform * (f(xdata, *p) - ydata)
    else:  # covariance: whiten with the Cholesky factor L (C = L L^T)
        def residuals(p, xdata, ydata, transform):
            return solve_triangular(transform, f(xdata, *p) - ydata, lower=True)
    return residuals


@functools.lru_cache(maxsize=256)
def _jacobian_function(jac, weighting):
    if weighting == "none":
        def jac_wrapped(p, xdata, ydata, transform):
            return jac(xdata, *p)
    elif weighting == "diagonal":
        def jac_wrapped(p, xdata, ydata, transform):
            return transform[:, None] * jnp.asarray(jac(xdata, *p))
    else:
        def jac_wrapped(p, xdata, ydata, transform):
            return solve_triangular(transform, jnp.asarray(jac(xdata, *p)), lower=True)
    return jac_wrapped


def _covariance(J, xp):
    """Moore-Penrose ``(J^T J)^+`` from the SVD of ``J``, discarding tiny singular values."""
    _, s, VT = xp.linalg.svd(J, full_matrices=False)
    threshold = xp.finfo(J.dtype).eps * max(J.shape) * s[0]
    keep = s > threshold
    inv_s2 = xp.where(keep, 1.0 / xp.where(keep, s, 1.0) ** 2, 0.0)
    return (VT.T * inv_s2) @ VT


def curve_fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma=False,
    check_finite=None,
    bounds=(-np.inf, np.inf),
    method=None,
    jac=None,
    *,
    full_output=False,
    nan_policy=None,
    **kwargs,
):
    """Use non-linear least squares to fit a function ``f`` to data.

    Assumes ``ydata = f(xdata, *params) + eps``. Interface, defaults and results are
    those of :func:`scipy.optimize.curve_fit` (SciPy 1.17); the fit is solved by
    :func:`jaxopt_lsq.least_squares`, so with a JAX-traceable ``f`` it also works inside
    ``jax.jit``, under ``jax.vmap`` (many datasets at once), and under ``jax.grad``
    (``popt`` and ``pcov`` are differentiable with respect to ``xdata``, ``ydata`` and
    ``sigma``). New data of the same shapes reuse the compiled solver.

    Parameters
    ----------
    f : callable
        The model ``f(x, *params)``; ``x`` is ``xdata`` unchanged. A plain NumPy ``f``
        works too (evaluated on the host, finite-difference Jacobian).
    xdata : array_like or object
        The independent variable(s).
    ydata : array_like
        The dependent data, nominally ``f(xdata, ...)``.
    p0 : array_like, optional
        Initial guess; default all ones (or the bounds' midpoints), with the number of
        parameters taken from ``f``'s signature, as in SciPy.
    sigma : None, scalar, 1-D or 2-D array_like, optional
        Uncertainty of ``ydata``: standard deviations (residuals divided by ``sigma``)
        or a covariance matrix (residuals whitened by its Cholesky factor).
    absolute_sigma : bool, optional
        If True, ``sigma`` is absolute and ``pcov`` is not rescaled by the reduced
        chi-square.
    check_finite : bool, optional
        Check the data for NaN/inf (default True unless ``nan_policy`` is given).
    bounds : 2-tuple of array_like or `Bounds`, optional
        Bounds on the parameters.
    method : {'lm', 'trf', 'dogbox'}, optional
        Default ``'lm'`` for unbounded problems, ``'trf'`` otherwise.
    jac : callable, str or None, optional
        ``jac(x, *params)`` returning the Jacobian of the model with respect to the
        parameters, or a finite-difference scheme; default: autodiff when ``f`` is
        traceable (see :func:`least_squares`).
    full_output : bool, optional
        Also return ``infodict`` (``nfev``, ``fvec``), ``mesg`` and ``ier``.
    nan_policy : {None, 'raise', 'omit'}, optional
        With ``'omit'``, data points with NaN are dropped before fitting.
    **kwargs
        Passed to :func:`least_squares` (``maxfev`` is accepted as ``max_nfev``).

    Returns
    -------
    popt : array
        Optimal parameters.
    pcov : 2-D array
        Estimated covariance of ``popt``: ``(J^T J)^+``, scaled by the reduced
        chi-square unless ``absolute_sigma``. Filled with inf (and an
        :class:`OptimizeWarning`) when it cannot be estimated.
    infodict, mesg, ier
        With ``full_output=True``.

    Raises
    ------
    RuntimeError
        If the fit did not converge (eager calls; under a JAX transformation check
        ``ier`` with ``full_output=True`` instead: ``pcov`` is then inf).
    ValueError
        For invalid input, with SciPy's messages.

    See Also
    --------
    least_squares : the solver underneath, with robust losses.

    Notes
    -----
    With ``method='lm'`` SciPy computes ``pcov`` from MINPACK's QR factors; here it is
    always the pseudo-inverse from the SVD of the final Jacobian (the same quantity).
    ``infodict`` holds ``nfev`` and ``fvec`` only.

    ``pcov`` is the usual linearised estimate ``s^2 (J^T J)^{-1}`` of the covariance of
    the least-squares estimate [1]_, with ``s^2`` the reduced chi-square (or 1 with
    ``absolute_sigma=True``). The fit itself is :func:`least_squares`: Levenberg--
    Marquardt [2]_ for ``'lm'``, Trust Region Reflective [3]_ for ``'trf'``.

    References
    ----------
    .. [1] G. A. F. Seber and C. J. Wild, "Nonlinear Regression", Wiley, 1989,
       section 2.1.
    .. [2] J. J. Moré, "The Levenberg-Marquardt algorithm: implementation and theory",
       Lecture Notes in Mathematics 630, Springer, pp. 105-116, 1977.
    .. [3] M. A. Branch, T. F. Coleman and Y. Li, "A subspace, interior, and conjugate
       gradient method for large-scale bound-constrained minimization problems", SIAM
       J. Sci. Comput. 21(1):1-23, 1999.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import curve_fit
    >>> def func(x, a, b, c):
    ...     return a * jnp.exp(-b * x) + c
    >>> xdata = np.linspace(0, 4, 50)
    >>> ydata = func(xdata, 2.5, 1.3, 0.5) + 0.05 * np.random.default_rng(1).standard_normal(50)
    >>> popt, pcov = curve_fit(func, xdata, ydata)
    >>> bool(np.abs(np.asarray(popt) - [2.5, 1.3, 0.5]).max() < 0.1)
    True

    Constrain the parameters to ``0 <= a <= 3``, ``0 <= b <= 1``, ``0 <= c <= 0.5``:

    >>> popt, pcov = curve_fit(func, xdata, ydata, bounds=(0, [3.0, 1.0, 0.5]))
    >>> round(float(popt[1]), 4)  # on its upper bound
    1.0

    Many datasets at once, and the derivative of a fitted parameter with respect to
    the data:

    >>> fit = lambda y: curve_fit(func, xdata, y, p0=[1.0, 1.0, 1.0])[0]
    >>> jax.vmap(fit)(jnp.stack([ydata, 2 * ydata])).shape
    (2, 3)
    >>> jax.grad(lambda y: fit(y)[1])(jnp.asarray(ydata)).shape
    (50,)
    """
    traced = is_tracer(xdata, ydata, p0, sigma, bounds)
    if p0 is None:
        n = _n_params(f)
    else:
        p0 = jnp.atleast_1d(p0) if is_tracer(p0) else np.atleast_1d(np.asarray(p0, dtype=float))
        n = p0.size
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        lb, ub = bounds.lb, bounds.ub
    else:
        lb, ub = bounds
    lb_np = np.resize(np.asarray(lb, float), n) if not is_tracer(lb) else None
    ub_np = np.resize(np.asarray(ub, float), n) if not is_tracer(ub) else None
    if p0 is None:
        p0 = _initialize_feasible(lb_np, ub_np)
    bounded = lb_np is None or ub_np is None or bool(np.any((lb_np > -np.inf) | (ub_np < np.inf)))
    if method is None:
        method = "trf" if bounded else "lm"
    if method == "lm" and bounded:
        raise ValueError("Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead.")
    if check_finite is None:
        check_finite = nan_policy is None

    dtype = jnp.result_type(float)
    if traced:
        ydata = jnp.asarray(ydata, dtype)
        if isinstance(xdata, (list, tuple, np.ndarray)):
            xdata = jnp.asarray(xdata, dtype)
    else:
        ydata = np.asarray_chkfinite(ydata, float) if check_finite else np.asarray(ydata, float)
        if isinstance(xdata, (list, tuple, np.ndarray)):
            xdata = np.asarray_chkfinite(xdata, float) if check_finite else np.asarray(xdata, float)
    if ydata.size == 0:
        raise ValueError("`ydata` must not be empty!")

    if not check_finite and nan_policy is not None:
        if nan_policy == "propagate":
            raise ValueError("`nan_policy='propagate'` is not supported by this function.")
        if nan_policy not in ("raise", "omit"):
            raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
        if traced:
            raise ValueError("nan_policy cannot be applied inside a JAX transformation (data shapes would change).")
        x_nan = np.isnan(np.asarray(xdata, float)) if isinstance(xdata, np.ndarray) else np.zeros(ydata.shape, bool)
        y_nan = np.isnan(ydata)
        if (x_nan.any() or y_nan.any()) and nan_policy == "raise":
            raise ValueError("The input contains nan values")
        if nan_policy == "omit" and (x_nan.any() or y_nan.any()):
            has_nan = x_nan.any(axis=tuple(range(x_nan.ndim - 1))) if x_nan.ndim > 1 else x_nan
            has_nan = has_nan | y_nan
            xdata = xdata[..., ~has_nan]
            ydata = ydata[~has_nan]
            if sigma is not None:
                sigma = np.asarray(sigma)
                if sigma.ndim == 1:
                    sigma = sigma[~has_nan]
                elif sigma.ndim == 2:
                    sigma = sigma[~has_nan][:, ~has_nan]

    m = ydata.size
    if sigma is None:
        weighting, transform = "none", jnp.zeros((), dtype) if traced else np.zeros(())
    else:
        sig = jnp.asarray(sigma) if is_tracer(sigma) else np.asarray(sigma, float)
        if sig.size == 1 or sig.shape == (m,):
            weighting, transform = "diagonal", 1.0 / sig
        elif sig.shape == (m, m):
            weighting = "covariance"
            if is_tracer(sig):
                transform = jnp.linalg.cholesky(sig)
            else:
                try:
                    transform = np.linalg.cholesky(sig)
                except np.linalg.LinAlgError as e:
                    raise ValueError("`sigma` must be positive definite.") from e
        else:
            raise ValueError("`sigma` has incorrect shape.")

    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    if "maxfev" in kwargs and "max_nfev" not in kwargs:
        kwargs["max_nfev"] = kwargs.pop("maxfev")
    if method == "lm" and m != 1 and n > m:
        raise TypeError(f"The number of func parameters={n} must not exceed the number of data points={m}")
    if callable(jac):
        jac = _jacobian_function(jac, weighting)

    res = least_squares(
        _residual_function(f, weighting), p0, jac=jac, bounds=bounds, method=method,
        args=(xdata, ydata, transform), **kwargs,
    )
    if not traced and not res.success:
        raise RuntimeError("Optimal parameters not found: " + res.message)

    xp = jnp if traced else np
    popt = res.x
    cost = 2 * res.cost
    pcov = _covariance(xp.asarray(res.jac), xp)
    invalid = xp.any(xp.isnan(pcov))
    if not absolute_sigma:
        if m > n:
            pcov = pcov * (cost / (m - n))
        else:
            invalid = True
    if traced:
        pcov = jnp.where(invalid | ~res.success, jnp.inf, pcov)
    elif invalid:
        pcov = np.full((n, n), np.inf)
        warnings.warn("Covariance of the parameters could not be estimated", category=OptimizeWarning, stacklevel=2)

    if full_output:
        infodict = dict(nfev=res.nfev, fvec=res.fun)
        return popt, pcov, infodict, res.message, res.status
    return popt, pcov
