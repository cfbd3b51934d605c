"""trf's choice of a feasible step near the bounds (Coleman & Li 1996).

Given the trust-region step ``p`` (``p_h`` in the scaled "hat" variables, ``x = x_k +
d * p_h``) of the quadratic model ``0.5 ||J_h s||^2 + 0.5 s^T diag(diag_h) s + g_h^T s``,
:func:`select_step` takes the best, by the model's value, of: the step itself if it stays
in the box; the step truncated at the first bound it meets and scaled back by ``theta``;
its reflection off that bound; and the anti-gradient step limited by the region and the
bounds. ``J_h`` is used only through ``J_h @ s``, so a dense matrix, an operator, or any
square root ``R`` of ``J_h^T J_h`` (``R^T R = J_h^T J_h``) serves.

References: T. F. Coleman, Y. Li, "An Interior Trust Region Approach for Nonlinear
Minimization Subject to Bounds", SIAM J. Optim. 6(2), 1996; M. A. Branch, T. F. Coleman,
Y. Li, SIAM J. Sci. Comput. 21(1), 1999.
"""

from __future__ import annotations

import jax.numpy as jnp

from .bounds import in_bounds, intersect_trust_region, step_size_to_bound
from .trust_region import build_quadratic_1d, evaluate_quadratic, minimize_quadratic_1d


def select_step(x, J_h, diag_h, g_h, p, p_h, d, Delta, lb, ub, theta):
    """The best of: the trust-region step (if feasible, else truncated at the bound and
    scaled by ``theta``), its reflection, and the constrained anti-gradient step.
    Returns ``(step, step_h, predicted_reduction)``."""
    inside = in_bounds(x + p, lb, ub)
    p_value_full = evaluate_quadratic(J_h, g_h, p_h, diag=diag_h)

    p_stride, hits = step_size_to_bound(x, p, lb, ub)
    r_h = jnp.where(hits != 0, -p_h, p_h)
    r = d * r_h
    p_b = p * p_stride
    p_h_b = p_h * p_stride
    x_on_bound = x + p_b
    _, to_tr = intersect_trust_region(p_h_b, r_h, Delta)
    to_bound, _ = step_size_to_bound(x_on_bound, r, lb, ub)
    r_stride = jnp.minimum(to_bound, to_tr)
    pos = r_stride > 0
    r_stride_safe = jnp.where(pos, r_stride, 1)
    r_stride_l = jnp.where(pos, (1 - theta) * p_stride / r_stride_safe, 0.0)
    r_stride_u = jnp.where(pos, jnp.where(r_stride == to_bound, theta * to_bound, to_tr), -1.0)
    reflect_ok = r_stride_l <= r_stride_u
    a, b, c = build_quadratic_1d(J_h, g_h, r_h, s0=p_h_b, diag=diag_h)
    t_r, r_value = minimize_quadratic_1d(a, b, r_stride_l, jnp.where(reflect_ok, r_stride_u, r_stride_l), c=c)
    r_h_step = r_h * t_r + p_h_b
    r_step = r_h_step * d
    r_value = jnp.where(reflect_ok, r_value, jnp.inf)

    p_b = p_b * theta
    p_h_b = p_h_b * theta
    p_value = evaluate_quadratic(J_h, g_h, p_h_b, diag=diag_h)

    ag_h = -g_h
    ag = d * ag_h
    to_tr_ag = Delta / jnp.linalg.norm(ag_h)
    to_bound_ag, _ = step_size_to_bound(x, ag, lb, ub)
    ag_stride = jnp.where(to_bound_ag < to_tr_ag, theta * to_bound_ag, to_tr_ag)
    a, b, _ = build_quadratic_1d(J_h, g_h, ag_h, diag=diag_h)
    ag_stride, ag_value = minimize_quadratic_1d(a, b, jnp.zeros_like(ag_stride), ag_stride)
    ag_h = ag_h * ag_stride
    ag = ag * ag_stride

    use_p = (p_value < r_value) & (p_value < ag_value)
    use_r = ~use_p & (r_value < p_value) & (r_value < ag_value)
    step = jnp.where(use_p, p_b, jnp.where(use_r, r_step, ag))
    step_h = jnp.where(use_p, p_h_b, jnp.where(use_r, r_h_step, ag_h))
    value = jnp.where(use_p, p_value, jnp.where(use_r, r_value, ag_value))
    # A trust-region step that is already feasible is taken as it is.
    step = jnp.where(inside, p, step)
    step_h = jnp.where(inside, p_h, step_h)
    value = jnp.where(inside, p_value_full, value)
    return step, step_h, -value

