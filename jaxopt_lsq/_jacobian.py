"""Residual functions and their Jacobians: autodiff, finite differences, or user-given.

:class:`ResidualFunction` bundles a user's ``fun`` (and ``jac``) with how to call them
(traced or through the host) and how to differentiate them:

* ``jac=None`` (our default) -- forward-mode autodiff when ``m >= n``, reverse mode
  otherwise; ``'2-point'`` when ``fun`` cannot be traced (SciPy's default).
* ``'2-point'``, ``'3-point'``, ``'cs'`` -- finite differences with SciPy's step rules
  (``scipy.optimize._numdiff``): relative step ``eps**(1/2)`` (``eps**(1/3)`` for
  3-point) times ``max(1, |x|)``, or ``diff_step * |x|`` when given; steps flipped or
  shortened so that every evaluation point stays within the bounds. All ``n`` (or
  ``2n``) evaluation points are evaluated with one ``vmap`` of the function.
* a callable -- used as given (traced or through the host, like ``fun``).

Finite-difference evaluations are not counted in ``nfev``, as in SciPy's ``trf``.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._host import host_call

FD_METHODS = ("2-point", "3-point", "cs")


def relative_step(method, dtype):
    eps = jnp.finfo(dtype).eps
    return eps ** (1 / 3) if method == "3-point" else eps**0.5


def absolute_step(x, method, diff_step, abs_step=None):
    """SciPy's absolute finite-difference step (``_compute_absolute_step``).

    ``diff_step`` is a relative step (``least_squares``, ``finite_diff_rel_step``);
    ``abs_step`` an absolute one (``epsilon`` of ``fmin_l_bfgs_b``, ``eps`` of
    L-BFGS-B). Either falls back to the default where it does not change ``x``.
    """
    rstep = relative_step(method, x.dtype)
    sign_x = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    default = rstep * sign_x * jnp.maximum(1.0, jnp.abs(x))
    if abs_step is not None:
        h = jnp.broadcast_to(jnp.asarray(abs_step, x.dtype), x.shape)
    elif diff_step is not None:
        h = diff_step * sign_x * jnp.abs(x)
    else:
        return default
    dx = (x + h) - x
    return jnp.where(dx == 0, default, h)


def adjust_step_to_bounds(x, h, method, lb, ub):
    """SciPy's ``_adjust_scheme_to_bounds`` with one step: returns ``(h, one_sided)``."""
    lower_dist = x - lb
    upper_dist = ub - x
    if method == "2-point":
        violated = ((x + h) < lb) | ((x + h) > ub)
        fitting = jnp.abs(h) <= jnp.maximum(lower_dist, upper_dist)
        h = jnp.where(violated & fitting, -h, h)
        forward = (upper_dist >= lower_dist) & ~fitting
        backward = (upper_dist < lower_dist) & ~fitting
        h = jnp.where(forward, upper_dist, jnp.where(backward, -lower_dist, h))
        return h, jnp.ones_like(x, dtype=bool)
    # 3-point: central where it fits, one-sided (possibly shortened) otherwise.
    h = jnp.abs(h)
    central = (lower_dist >= h) & (upper_dist >= h)
    forward = (upper_dist >= lower_dist) & ~central
    backward = (upper_dist < lower_dist) & ~central
    h_adj = jnp.where(forward, jnp.minimum(h, 0.5 * upper_dist), h)
    h_adj = jnp.where(backward, -jnp.minimum(h, 0.5 * lower_dist), h_adj)
    one_sided = forward | backward
    min_dist = jnp.minimum(upper_dist, lower_dist)
    adjusted_central = ~central & (jnp.abs(h_adj) <= min_dist)
    h_adj = jnp.where(adjusted_central, min_dist, h_adj)
    one_sided = one_sided & ~adjusted_central
    return h_adj, one_sided


def fd_evaluations(method, n):
    """Function evaluations of one finite-difference Jacobian or gradient."""
    return 2 * n if method == "3-point" else n


def fd_points(x, method, diff_step, lb, ub, bounded, abs_step=None):
    """The points a finite-difference scheme evaluates, and what assembling needs.

    Returns ``(pts, one_sided)``: ``pts`` has ``n`` rows (``x + h_i e_i``; complex for
    ``'cs'``) or ``2n`` for ``'3-point'`` (``x - h_i e_i`` then ``x + h_i e_i`` where
    central, ``x + h_i e_i`` then ``x + 2 h_i e_i`` where one-sided).
    """
    n = x.shape[0]
    h = absolute_step(x, method, diff_step, abs_step)
    if method == "cs":
        xc = x.astype(jnp.result_type(x.dtype, jnp.complex64))
        return xc[None, :] + 1j * jnp.diag(h).astype(xc.dtype), None
    if bounded:
        h, one_sided = adjust_step_to_bounds(x, h, method, lb, ub)
    else:
        one_sided = jnp.full((n,), method == "2-point")
    eye = jnp.eye(n, dtype=x.dtype)
    if method == "2-point":
        return x[None, :] + eye * h[:, None], one_sided
    first = jnp.where(one_sided, h, -h)
    second = jnp.where(one_sided, 2 * h, h)
    p1 = x[None, :] + eye * first[:, None]
    p2 = x[None, :] + eye * second[:, None]
    return jnp.concatenate([p1, p2]), one_sided


def fd_assemble(x, f0, F, pts, one_sided, method):
    """The ``(m, n)`` Jacobian from the values ``F`` (one row per point of
    :func:`fd_points`) and ``f0`` at ``x``. A zero step (a variable fixed by equal
    bounds) gives a zero column."""
    n = x.shape[0]
    if method == "cs":
        h = jnp.diagonal(pts).imag
        return (F.imag / h[:, None]).T.astype(x.dtype)
    if method == "2-point":
        return _guarded_div(F - f0[None, :], (jnp.diagonal(pts) - x)[:, None]).T
    F1, F2 = F[:n], F[n:]
    d1, d2 = jnp.diagonal(pts[:n]), jnp.diagonal(pts[n:])
    dx = jnp.where(one_sided, d2 - x, d2 - d1)
    df = jnp.where(one_sided[:, None], -3.0 * f0[None, :] + 4 * F1 - F2, F2 - F1)
    return _guarded_div(df, dx[:, None]).T


def _guarded_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def fd_jacobian(fn, x, f0, method, diff_step, lb, ub, bounded, abs_step=None):
    """Finite-difference Jacobian of ``fn`` at ``x`` (``f0 = fn(x)``), shape ``(m, n)``.

    All points are evaluated by one ``vmap`` of ``fn``."""
    pts, one_sided = fd_points(x, method, diff_step, lb, ub, bounded, abs_step)
    return fd_assemble(x, f0, jax.vmap(fn)(pts), pts, one_sided, method)


def value_and_fd_grad_on_host(fun, x, args, kwargs, method, diff_step, lb, ub, bounded, abs_step=None):
    """``f(x)`` and the finite-difference gradient of a scalar NumPy ``fun``, evaluated
    on the host in one callback (two for ``'cs'``, where ``f(x)`` is taken at real
    ``x``): the stencil's points are made and the gradient assembled in JAX."""
    dtype = x.dtype
    pts, one_sided = fd_points(x, method, diff_step, lb, ub, bounded, abs_step)
    if method == "cs":
        f0 = host_call(fun, x, args, kwargs, (), dtype)
        F = host_call(fun, pts, args, kwargs, (), dtype, rows=True)
    else:
        F = host_call(fun, jnp.concatenate([x[None, :], pts]), args, kwargs, (), dtype, rows=True)
        f0, F = F[0], F[1:]
    g = fd_assemble(x, f0[None], F[:, None], pts, one_sided, method)[0]
    return f0, g


class ResidualFunction(eqx.Module):
    """A user's residual function with everything needed to evaluate and differentiate it.

    All fields are static: two solves with the same ``ResidualFunction`` share one
    compilation. Data reach the function through ``args``/``kwargs`` at call time.
    """

    fun: Callable = eqx.field(static=True)
    jac: Any = eqx.field(static=True)  # None (autodiff), an FD method name, or a callable
    fun_on_host: bool = eqx.field(static=True)
    jac_on_host: bool = eqx.field(static=True)
    m: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)

    def __call__(self, x, args, kwargs):
        return self._fn(args, kwargs)(x).astype(self.dtype)

    def _fn(self, args, kwargs):
        if self.fun_on_host:
            return lambda x: host_call(self.fun, x, args, kwargs, (self.m,), self.dtype)
        return lambda x: jnp.atleast_1d(self.fun(x, *args, **kwargs))

    def jacobian(self, x, f, args, kwargs, lb, ub, diff_step):
        """The ``(m, n)`` Jacobian at ``x``, where ``f`` is the residual vector at ``x``."""
        n = x.shape[0]
        if callable(self.jac):
            if self.jac_on_host:
                J = host_call(self.jac, x, args, kwargs, (self.m, n), self.dtype)
            else:
                J = jnp.asarray(self.jac(x, *args, **kwargs))
            return jnp.reshape(J, (self.m, n)).astype(self.dtype)
        if self.jac in FD_METHODS:
            return fd_jacobian(self._fn(args, kwargs), x, f, self.jac, diff_step, lb, ub, self.bounded).astype(self.dtype)
        fn = self._fn(args, kwargs)
        J = jax.jacfwd(fn)(x) if self.m >= n else jax.jacrev(fn)(x)
        return J.astype(self.dtype)
