"""Differentiating a solution with respect to the problem's data (implicit differentiation).

A solver maps data ``theta`` (arrays in ``args``/``kwargs``, the bounds, ``f_scale``) to a
minimiser ``x*(theta)`` of a cost ``C(x, theta)``. At a minimiser the first-order
conditions hold on the *free* variables, and the active variables sit on their bounds:

    grad_x C(x*, theta)_F = 0,        x*_A = bound_A(theta).

Differentiating these conditions (the implicit function theorem) gives the tangent of the
solution without differentiating the iterations:

    dx_A = d bound_A,      H_FF dx_F = -(d/dtheta grad_x C)_F dtheta - H_FA dx_A,

with ``H = hess_x C(x*, theta)`` (the full Hessian: for least squares, including the
residuals' second derivatives and the robust loss's rho' and rho''). The JVP rule is
linear in the tangents, so JAX transposes it for reverse mode: ``jax.grad``,
``jax.jacrev``, ``jax.vjp`` and ``jax.jvp``/``jax.jacfwd`` all work, and memory does not
grow with the number of iterations. ``x0`` only selects which minimiser is found: its
derivative is zero. ``H_FF`` is inverted with a pseudo-inverse, so a minimiser that is
not locally unique gets the minimum-norm derivative instead of NaN; for the per-fit
gradients of a batch of small fits its eigenvectors come from an unrolled Jacobi
method, which under ``vmap`` is elementwise code instead of one LAPACK call per fit.

References: B. M. Bell, J. V. Burke, "Algorithmic differentiation of implicit functions
and optimal values", Advances in Automatic Differentiation, 2008; M. Blondel et al.,
"Efficient and Modular Implicit Differentiation", NeurIPS 2022.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._kernels.small_linalg import UNROLL_MAX, pinv_solve_symmetric


def _zero_tangent(a):
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def active_mask_field(out, theta):
    """The active set as the least-squares solvers report it (``active_mask``)."""
    return out["active_mask"]


def _hessian(grad, x, theta, batched):
    """``d grad / dx`` at ``(x, theta)``: forward over reverse mode. For a batch
    (``batched``, up to ``UNROLL_MAX`` variables) one ``jvp`` per variable: under
    ``vmap`` each stays a contiguous ``(batch, ...)`` computation, where
    ``jax.jacfwd`` would batch the directions into a strided ``(batch, n, ...)`` one,
    several times slower on a CPU; otherwise ``jax.jacfwd`` (a smaller program)."""
    n = x.shape[0]
    if not batched or n > UNROLL_MAX:
        return jax.jacfwd(grad, argnums=0)(x, theta)
    eye = jnp.eye(n, dtype=x.dtype)
    cols = [jax.jvp(lambda x: grad(x, theta), (x,), (eye[k],))[1] for k in range(n)]
    return jnp.stack(cols, axis=-1)


def implicit_tangent(out, theta, dtheta, cost, fields, bounds_of, active_of=active_mask_field, batched=False):
    """The tangent of a solve's result ``out`` (a dict holding ``x``) along ``dtheta``.

    ``cost(x, theta)``: the scalar objective being minimised.
    ``fields(x, theta)``: the differentiable result fields as functions of the solution
    (e.g. ``fun``, ``jac``, ``cost``); their tangents come from one JVP.
    ``bounds_of(theta)``: ``(lb, ub)`` arrays (``-inf``/``inf`` where unbounded).
    ``active_of(out, theta)``: -1 where the solution sits on its lower bound, 1 on its
    upper bound, 0 for free variables.
    ``batched``: the tangent will be vmapped over many fits; it is then computed with
    elementwise-friendly small kernels (separate JVPs for the Hessian, a Jacobi
    eigensolver for its pseudo-inverse) that cost more to compile but run several
    times faster over a batch.
    """
    x = out["x"]
    active = active_of(out, theta)
    free = active == 0

    grad = jax.grad(cost, argnums=0)
    H = _hessian(grad, x, theta, batched)
    # Tangent of the active variables: the tangent of the bound they sit on.
    _, (dlb, dub) = jax.jvp(bounds_of, (theta,), (dtheta,))
    dx_active = jnp.where(active == -1, dlb, jnp.where(active == 1, dub, 0.0))
    _, b = jax.jvp(lambda th: grad(x, th), (theta,), (dtheta,))
    rhs = jnp.where(free, -(b + H @ dx_active), 0.0)
    mask = free[:, None] & free[None, :]
    H_ff = jnp.where(mask, H, jnp.diag(jnp.where(free, 0.0, 1.0)))
    dx = jnp.where(free, pinv_solve_symmetric(H_ff, rhs, unrolled=batched), dx_active)

    _, dfields = jax.jvp(fields, (x, theta), (dx, dtheta))
    dout = {k: _zero_tangent(v) for k, v in out.items()}
    dout["x"] = dx
    dout.update(dfields)
    return dout


def implicit_solution(solve, cost, fields, bounds_of, active_of=active_mask_field):
    """Wrap ``solve(x0, theta) -> dict`` with implicit differentiation (the arguments
    are those of :func:`implicit_tangent`)."""

    @jax.custom_jvp
    def solution(x0, theta):
        return solve(x0, theta)

    @solution.defjvp
    def solution_jvp(primals, tangents):
        x0, theta = primals
        _, dtheta = tangents
        out = solve(x0, theta)
        return out, implicit_tangent(out, theta, dtheta, cost, fields, bounds_of, active_of)

    return solution
