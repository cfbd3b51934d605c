"""Pure kernels for box constraints ``lb <= x <= ub``.

* step to the nearest bound along a direction, and which bounds it hits;
* the Coleman-Li scaling vector ``v`` and its derivative ``dv`` (Coleman & Li, "An
  Interior Trust Region Approach for Nonlinear Minimization Subject to Bounds", SIAM J.
  Optim. 6(2), 1996; Branch, Coleman & Li, SIAM J. Sci. Comput. 21(1), 1999);
* intersection of a line with the trust-region sphere;
* active-set detection and the shift of a point into the strict interior.
"""

from __future__ import annotations

import jax.numpy as jnp


def in_bounds(x, lb, ub):
    return jnp.all((x >= lb) & (x <= ub))


def step_size_to_bound(x, s, lb, ub):
    """Smallest ``t >= 0`` with ``x + t s`` on a bound, and ``hits`` in {-1, 0, 1}."""
    nonzero = s != 0
    s_safe = jnp.where(nonzero, s, 1)
    steps = jnp.where(nonzero, jnp.maximum((lb - x) / s_safe, (ub - x) / s_safe), jnp.inf)
    min_step = jnp.min(steps)
    hits = jnp.where(steps == min_step, jnp.sign(s), 0).astype(jnp.int32)
    return min_step, hits


def intersect_trust_region(x, s, Delta):
    """Roots ``t_neg <= t_pos`` of ``||x + t s|| = Delta`` (``x`` inside the region)."""
    a = jnp.dot(s, s)
    b = jnp.dot(x, s)
    c = jnp.dot(x, x) - Delta**2
    d = jnp.sqrt(jnp.maximum(b * b - a * c, 0))
    q = -(b + jnp.where(b >= 0, d, -d))
    a_safe = jnp.where(a != 0, a, 1)
    q_safe = jnp.where(q != 0, q, 1)
    t1 = jnp.where(a != 0, q / a_safe, 0)
    t2 = jnp.where(q != 0, c / q_safe, 0)
    return jnp.minimum(t1, t2), jnp.maximum(t1, t2)


def find_active_constraints(x, lb, ub, rtol=1e-10):
    """-1 where the lower bound is active, 1 for the upper, 0 otherwise."""
    if isinstance(rtol, (int, float)) and rtol == 0:
        return jnp.where(x <= lb, -1, jnp.where(x >= ub, 1, 0)).astype(jnp.int32)
    lower_dist = x - lb
    upper_dist = ub - x
    lower_thr = rtol * jnp.maximum(1, jnp.abs(lb))
    upper_thr = rtol * jnp.maximum(1, jnp.abs(ub))
    lower = jnp.isfinite(lb) & (lower_dist <= jnp.minimum(upper_dist, lower_thr))
    upper = jnp.isfinite(ub) & (upper_dist <= jnp.minimum(lower_dist, upper_thr))
    return jnp.where(upper, 1, jnp.where(lower, -1, 0)).astype(jnp.int32)


def make_strictly_feasible(x, lb, ub, rstep=1e-10):
    """Move ``x`` into the interior: at least ``rstep`` (relative) from each bound, or
    one ulp when ``rstep == 0``; midpoint where the bounds are too tight for that."""
    active = find_active_constraints(x, lb, ub, rstep)
    if rstep == 0:
        lo = jnp.nextafter(lb, ub)
        hi = jnp.nextafter(ub, lb)
    else:
        lo = lb + rstep * jnp.maximum(1, jnp.abs(lb))
        hi = ub - rstep * jnp.maximum(1, jnp.abs(ub))
    x_new = jnp.where(active == -1, lo, jnp.where(active == 1, hi, x))
    tight = (x_new < lb) | (x_new > ub)
    return jnp.where(tight, 0.5 * (lb + ub), x_new)


def cl_scaling_vector(x, g, lb, ub):
    """Coleman-Li scaling ``v`` (distance to the bound the gradient points at, else 1)
    and its derivative ``dv`` in {-1, 0, 1}."""
    to_upper = (g < 0) & jnp.isfinite(ub)
    to_lower = (g > 0) & jnp.isfinite(lb)
    v = jnp.where(to_lower, x - lb, jnp.where(to_upper, ub - x, 1.0)).astype(x.dtype)
    dv = jnp.where(to_lower, 1.0, jnp.where(to_upper, -1.0, 0.0)).astype(x.dtype)
    return v, dv
