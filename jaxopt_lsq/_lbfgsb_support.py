"""Helpers for the L-BFGS-B facade: traceability, host callbacks, finite differences.

Small and generic on purpose: the least-squares side needs the same things
(``_host.py`` / ``_jacobian.py`` on main); they are kept here under a separate name so
the two branches can be reconciled at merge time.

Finite-difference steps follow SciPy's ``_numdiff`` rules (relative step
``eps**(1/2)`` for 2-point and complex step, ``eps**(1/3)`` for 3-point, with ``eps``
of the working dtype; steps flipped or shortened to stay inside the bounds). The step
logic is written once against an array namespace ``xp`` and used both with
``jax.numpy`` (traced functions) and ``numpy`` (plain NumPy functions on the host).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

FD_METHODS = ("2-point", "3-point", "cs")


# --------------------------------------------------------------------------------
# Arguments and traceability
# --------------------------------------------------------------------------------


def _is_dynamic(leaf):
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or (
        isinstance(leaf, (float, complex)) and not isinstance(leaf, bool)
    )


def split_args(args):
    """Split ``args`` into array leaves (traced) and the rest (static, hashable)."""
    return eqx.partition(args, _is_dynamic)


def static_key(static_args):
    """A hashable key for the static part of ``args`` (``None`` if unhashable)."""
    leaves, treedef = jax.tree_util.tree_flatten(static_args)
    try:
        key = (treedef, tuple(leaves))
        hash(key)
        return key
    except TypeError:
        return None


def is_traceable(fun, x_struct, dyn_args, static_args, n_out=None):
    """Whether ``fun(x, *args)`` can be traced by JAX (tried with ``jax.eval_shape``)."""

    def call(x, dyn):
        return fun(x, *eqx.combine(dyn, static_args))

    try:
        out = jax.eval_shape(call, x_struct, dyn_args)
    except Exception:  # any failure to trace means: run it on the host
        return False
    if n_out is not None:
        return isinstance(out, (tuple, list)) and len(out) == n_out
    return True


def host_call(fun, out_structs, *operands):
    """Run a NumPy function through :func:`jax.pure_callback` (vmap: sequential)."""

    def cb(*ops):
        ops = jax.tree_util.tree_map(np.asarray, ops)  # callbacks may receive jax.Arrays
        res = fun(*ops)
        return jax.tree_util.tree_map(
            lambda r, s: np.asarray(r, dtype=s.dtype).reshape(s.shape), res, out_structs
        )

    return jax.pure_callback(cb, out_structs, *operands, vmap_method="sequential")


# --------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------


def relative_step(method, dtype):
    eps = float(np.finfo(np.dtype(dtype)).eps)
    return eps ** (1.0 / 3.0) if method == "3-point" else eps**0.5


def fd_steps(xp, x, method, lower, upper, abs_step=None, rel_step=None):
    """Absolute steps and the one-sided flags, as SciPy's ``approx_derivative``."""
    rstep = relative_step(method, x.dtype)
    sign = xp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    default = rstep * sign * xp.maximum(1.0, xp.abs(x))
    if abs_step is not None:
        h = xp.broadcast_to(xp.asarray(abs_step, dtype=x.dtype), x.shape)
        h = xp.where((x + h) - x == 0, default, h)
    elif rel_step is not None:
        h = xp.asarray(rel_step, dtype=x.dtype) * sign * xp.abs(x)
        h = xp.where((x + h) - x == 0, default, h)
    else:
        h = default
    if method == "cs" or lower is None:
        return h, xp.zeros(x.shape, bool)
    lower_dist = x - lower
    upper_dist = upper - x
    if method == "2-point":
        xh = x + h
        violated = (xh < lower) | (xh > upper)
        fitting = xp.abs(h) <= xp.maximum(lower_dist, upper_dist)
        h = xp.where(violated & fitting, -h, h)
        forward = (upper_dist >= lower_dist) & ~fitting
        backward = (upper_dist < lower_dist) & ~fitting
        h = xp.where(forward, upper_dist, xp.where(backward, -lower_dist, h))
        return h, xp.ones(x.shape, bool)
    # 3-point: central where it fits, else a one-sided 3-point formula
    h = xp.abs(h)
    central = (lower_dist >= h) & (upper_dist >= h)
    forward = (upper_dist >= lower_dist) & ~central
    backward = (upper_dist < lower_dist) & ~central
    h = xp.where(forward, xp.minimum(h, 0.5 * upper_dist), h)
    h = xp.where(backward, -xp.minimum(h, 0.5 * lower_dist), h)
    one_sided = forward | backward
    min_dist = xp.minimum(upper_dist, lower_dist)
    adj = ~central & (xp.abs(h) <= min_dist)
    h = xp.where(adj, min_dist, h)
    one_sided = one_sided & ~adj
    return h, one_sided


def fd_evals_per_gradient(method, n):
    return {"2-point": n, "3-point": 2 * n, "cs": n}[method]


def fd_gradient_jax(f, x, f0, lower, upper, method, abs_step=None, rel_step=None):
    """Finite-difference gradient of a traceable scalar ``f`` (one pass per variable)."""
    n = x.shape[0]
    h, one_sided = fd_steps(jnp, x, method, lower, upper, abs_step, rel_step)
    eye_k = lambda k: jnp.arange(n) == k  # noqa: E731

    def partial(k):
        e = eye_k(k)
        hk = h[k]
        if method == "cs":
            xc = x.astype(jnp.result_type(x.dtype, jnp.complex64)) + 1j * hk * e
            return jnp.imag(f(xc)) / hk
        x1 = jnp.where(e, x + hk, x)
        if method == "2-point":
            return _guarded_div(f(x1) - f0, x1[k] - x[k])
        x2 = jnp.where(e, jnp.where(one_sided[k], x + 2 * hk, x - hk), x)
        f1, f2 = f(x1), f(x2)
        # one-sided: (-3 f0 + 4 f(x+h) - f(x+2h)) / (2h); central: (f(x+h)-f(x-h))/(2h)
        num = jnp.where(one_sided[k], -3.0 * f0 + 4.0 * f1 - f2, f1 - f2)
        den = jnp.where(one_sided[k], x2[k] - x[k], x1[k] - x2[k])
        return _guarded_div(num, den)

    g = jax.lax.map(partial, jnp.arange(n), batch_size=min(n, 64))
    return g.astype(x.dtype)


def _guarded_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def fd_gradient_numpy(f, x, f0, lower, upper, method, abs_step=None, rel_step=None):
    """The NumPy twin of :func:`fd_gradient_jax` for host functions."""
    n = x.shape[0]
    h, one_sided = fd_steps(np, x, method, lower, upper, abs_step, rel_step)
    g = np.zeros(n, dtype=x.dtype)
    for k in range(n):
        if method == "cs":
            xc = x.astype(np.result_type(x.dtype, np.complex64))
            xc[k] += 1j * h[k]
            g[k] = np.imag(f(xc)) / h[k]
            continue
        x1 = x.copy()
        x1[k] = x[k] + h[k]
        if method == "2-point":
            dx = x1[k] - x[k]
            g[k] = (f(x1) - f0) / dx if dx != 0 else 0.0
            continue
        x2 = x.copy()
        x2[k] = x[k] + 2 * h[k] if one_sided[k] else x[k] - h[k]
        f1, f2 = f(x1), f(x2)
        if one_sided[k]:
            num, den = -3.0 * f0 + 4.0 * f1 - f2, x2[k] - x[k]
        else:
            num, den = f1 - f2, x1[k] - x2[k]
        g[k] = num / den if den != 0 else 0.0
    return g
