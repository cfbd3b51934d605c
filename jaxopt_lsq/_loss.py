"""Robust loss functions ``rho(z)`` for least squares, with ``z = (f / f_scale)**2``.

Each loss returns the stacked array ``[rho(z), rho'(z), rho''(z)]`` of shape
``(3, m)``, as SciPy's ``least_squares`` defines them:

* ``linear``  : rho(z) = z
* ``soft_l1`` : rho(z) = 2 ((1 + z)**0.5 - 1)
* ``huber``   : rho(z) = z if z <= 1 else 2 z**0.5 - 1
* ``cauchy``  : rho(z) = ln(1 + z)
* ``arctan``  : rho(z) = arctan(z)

The cost is ``0.5 * f_scale**2 * sum(rho(z))``. Robust losses enter the trust-region
algorithms through the rescaling of residuals and Jacobian described by Triggs et al.,
"Bundle Adjustment - A Modern Synthesis" (2000), section 4.3, as in SciPy.
"""

from __future__ import annotations

import jax.numpy as jnp

IMPLEMENTED_LOSSES = ("linear", "huber", "soft_l1", "cauchy", "arctan")  # SciPy's order (messages)


def _linear(z):
    return jnp.stack([z, jnp.ones_like(z), jnp.zeros_like(z)])


def _soft_l1(z):
    t = 1 + z
    return jnp.stack([2 * (t**0.5 - 1), t**-0.5, -0.5 * t**-1.5])


def _huber(z):
    inner = z <= 1
    # Double where: the outer branch is only ever evaluated at z > 1.
    z_out = jnp.where(inner, 2.0, z)
    rho0 = jnp.where(inner, z, 2 * z_out**0.5 - 1)
    rho1 = jnp.where(inner, 1.0, z_out**-0.5)
    rho2 = jnp.where(inner, 0.0, -0.5 * z_out**-1.5)
    return jnp.stack([rho0, rho1, rho2]).astype(z.dtype)


def _cauchy(z):
    t = 1 + z
    return jnp.stack([jnp.log1p(z), 1 / t, -1 / t**2])


def _arctan(z):
    t = 1 + z**2
    return jnp.stack([jnp.arctan(z), 1 / t, -2 * z / t**2])


_LOSSES = {
    "linear": _linear,
    "soft_l1": _soft_l1,
    "huber": _huber,
    "cauchy": _cauchy,
    "arctan": _arctan,
}


def rho(loss, f, f_scale):
    """``(3, m)`` array of the loss and its derivatives, scaled as SciPy scales them.

    ``loss`` is a name or a traceable callable ``loss(z) -> (3, m)``.
    """
    z = (f / f_scale) ** 2
    r = _LOSSES[loss](z) if isinstance(loss, str) else jnp.asarray(loss(z), dtype=f.dtype)
    return jnp.stack([r[0] * f_scale**2, r[1], r[2] / f_scale**2])


def cost(loss, f, f_scale):
    """The cost ``0.5 * sum(rho)`` (``0.5 * f @ f`` for the linear loss)."""
    if isinstance(loss, str) and loss == "linear":
        return 0.5 * jnp.dot(f, f)
    return 0.5 * jnp.sum(rho(loss, f, f_scale)[0])


def cost_and_scaled(loss, J, f, f_scale, scale_rows=None):
    """``(cost, J, f)`` at an accepted point: the cost and the Jacobian and residuals
    rescaled so that the Gauss-Newton model of the robust cost is a plain
    least-squares model (unchanged for the linear loss). ``scale_rows(J, s)`` computes
    ``diag(s) J`` for a Jacobian that is not stored as a dense matrix."""
    if isinstance(loss, str) and loss == "linear":
        return 0.5 * jnp.dot(f, f), J, f
    r = rho(loss, f, f_scale)
    J, f = scale_for_robust_loss(J, f, r, scale_rows)
    return 0.5 * jnp.sum(r[0]), J, f


def scale_for_robust_loss(J, f, r, scale_rows=None):
    """Rescale ``J`` and ``f`` so that the Gauss-Newton model of the robust cost is a
    plain least-squares model: ``J_s = diag(sqrt(rho' + 2 rho'' f**2)) J`` and
    ``f_s = rho' f / sqrt(...)`` (clipped below at eps, as SciPy does)."""
    eps = jnp.finfo(f.dtype).eps
    J_scale = r[1] + 2 * r[2] * f**2
    J_scale = jnp.sqrt(jnp.maximum(J_scale, eps))
    J = J * J_scale[:, None] if scale_rows is None else scale_rows(J, J_scale)
    return J, f * r[1] / J_scale
