"""Host-side argument checks with SciPy's exception types and messages.

Everything here runs before any tracing or solving. Checks on *values* (finiteness,
feasibility, ``lb < ub``) run only when the values are concrete; inside a user's
``jit``/``vmap`` they cannot, and the solver reports the problem through ``status``
instead (see :data:`jaxopt_lsq._result.LEAST_SQUARES_MESSAGES`).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ._loss import IMPLEMENTED_LOSSES

EPS = float(np.finfo(float).eps)


def concrete(a):
    return not isinstance(a, jax.core.Tracer)


def float_dtype(x):
    """The working dtype: ``x``'s own float dtype, else JAX's default float."""
    dt = jnp.result_type(x) if hasattr(x, "dtype") else np.asarray(x).dtype
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    return jnp.dtype(jax.dtypes.canonicalize_dtype(dt))


def check_least_squares_options(method, jac, tr_solver, loss, verbose, max_nfev):
    if method not in ("trf", "dogbox", "lm"):
        raise ValueError("`method` must be 'trf', 'dogbox' or 'lm'.")
    if jac is not None and jac not in ("2-point", "3-point", "cs") and not callable(jac):
        raise ValueError("`jac` must be '2-point', '3-point', 'cs' or callable.")
    if tr_solver not in (None, "exact", "lsmr"):
        raise ValueError("`tr_solver` must be None, 'exact' or 'lsmr'.")
    if not callable(loss) and loss not in IMPLEMENTED_LOSSES:
        keys = dict.fromkeys(IMPLEMENTED_LOSSES).keys()
        raise ValueError(f"`loss` must be one of {keys} or a callable.")
    if method == "lm" and loss != "linear":
        raise ValueError("method='lm' supports only 'linear' loss function.")
    if verbose not in (0, 1, 2):
        raise ValueError("`verbose` must be in [0, 1, 2].")
    if max_nfev is not None and max_nfev <= 0:
        raise ValueError("`max_nfev` must be None or positive integer.")


def as_x0(x0):
    """``x0`` as a 1-D float JAX array (a new array: the caller's is never written)."""
    if concrete(x0):
        if np.iscomplexobj(x0):
            raise ValueError("`x0` must be real.")
    elif jnp.iscomplexobj(x0):
        raise ValueError("`x0` must be real.")
    dtype = float_dtype(x0)
    # Concrete inputs stay NumPy (a copy: the caller's array is never written); JAX
    # moves them to the device once, when the compiled solver is called.
    x0 = np.array(x0, dtype=dtype, ndmin=1) if concrete(x0) else jnp.atleast_1d(jnp.asarray(x0, dtype=dtype))
    if x0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    return x0


def prepare_bounds(bounds, x0, method):
    n = x0.shape[0]
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        lb, ub = bounds.lb, bounds.ub
    elif len(bounds) == 2:
        lb, ub = bounds
    else:
        raise ValueError("`bounds` must contain 2 elements.")

    def one(b):
        # Concrete bounds stay NumPy here: any jnp operation inside a user's trace would
        # turn them into tracers and hide that they are infinite.
        if concrete(b):
            b = np.asarray(b, dtype=float)
            return np.full(n, b) if b.ndim == 0 else b  # (np.resize is slow for large n)
        b = jnp.asarray(b, dtype=x0.dtype)
        return jnp.broadcast_to(b, (n,)) if b.ndim == 0 else b

    lb, ub = one(lb), one(ub)
    all_concrete = concrete(lb) and concrete(ub)
    unbounded = all_concrete and bool(np.all((lb == -np.inf) & (ub == np.inf)))
    if method == "lm" and not unbounded:
        raise ValueError("Method 'lm' doesn't support bounds.")
    if lb.shape != x0.shape or ub.shape != x0.shape:
        raise ValueError("Inconsistent shapes between bounds and `x0`.")
    if all_concrete and np.any(np.asarray(lb) >= np.asarray(ub)):
        raise ValueError("Each lower bound must be strictly less than each upper bound.")
    if all_concrete and concrete(x0):
        x, l, u = np.asarray(x0), np.asarray(lb), np.asarray(ub)
        if not np.all((x >= l) & (x <= u)):
            # A NaN fails this test too, as in SciPy.
            raise ValueError("Initial guess is outside of provided bounds")
        if not np.all(np.isfinite(x)):
            # SciPy would go on to fail on the residuals or produce garbage; say what is wrong.
            raise ValueError("`x0` must contain only finite values.")
    lb = lb.astype(x0.dtype) if concrete(lb) else jnp.asarray(lb, x0.dtype)
    ub = ub.astype(x0.dtype) if concrete(ub) else jnp.asarray(ub, x0.dtype)
    return lb, ub, not unbounded


def check_x_scale(x_scale, x0, method):
    """Returns ``(x_scale_array, jac_scale)``."""
    if x_scale is None:
        x_scale = "jac" if method == "lm" else 1.0
    if isinstance(x_scale, str) and x_scale == "jac":
        return np.ones(x0.shape, x0.dtype), True
    if isinstance(x_scale, str):
        valid = False
    elif not concrete(x_scale):
        return jnp.broadcast_to(jnp.asarray(x_scale, x0.dtype), x0.shape), False
    else:
        try:
            xs = np.asarray(x_scale, dtype=float)
            valid = bool(np.all(np.isfinite(xs)) and np.all(xs > 0))
        except (ValueError, TypeError):
            valid = False
    if not valid:
        raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
    if xs.ndim == 0:
        xs = np.full(x0.shape, xs)
    if xs.shape != x0.shape:
        raise ValueError("Inconsistent shapes between `x_scale` and `x0`.")
    return xs.astype(x0.dtype), False


def check_tolerance(ftol, xtol, gtol, method, dtype):
    """SciPy's checks (float64 eps), then tolerances below ``dtype``'s eps are raised to it."""

    def check(tol, name):
        if tol is None:
            return 0.0
        if tol < EPS:
            warnings.warn(
                f"Setting `{name}` below the machine epsilon ({EPS:.2e}) effectively "
                f"disables the corresponding termination condition.",
                stacklevel=4,
            )
        return float(tol)

    ftol, xtol, gtol = check(ftol, "ftol"), check(xtol, "xtol"), check(gtol, "gtol")
    if method == "lm" and (ftol < EPS or xtol < EPS or gtol < EPS):
        raise ValueError(f"All tolerances must be higher than machine epsilon ({EPS:.2e}) for method 'lm'.")
    if ftol < EPS and xtol < EPS and gtol < EPS:
        raise ValueError(f"At least one of the tolerances must be higher than machine epsilon ({EPS:.2e}).")
    eps = float(jnp.finfo(dtype).eps)
    return tuple(t if t == 0 or t >= eps else eps for t in (ftol, xtol, gtol))
