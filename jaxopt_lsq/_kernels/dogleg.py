"""Pure kernels of the rectangular-trust-region dogleg (``method='dogbox'``).

Glossary (the notation of SciPy's ``_lsq/dogbox.py``):

``free``        mask of the variables the step may move; the others are held at a bound
                that the anti-gradient points out of (they satisfy the first-order
                conditions already, so a dogleg step would not move them anyway).
``tr_bounds``   half-widths of the rectangular trust region, ``Delta * scale``.
``lb_total``,   the box ``[lb - x, ub - x]`` intersected with ``[-tr_bounds, tr_bounds]``:
``ub_total``    the feasible set of the step.
``newton_step`` the (minimum-norm) Gauss-Newton step on the free variables.
``a``, ``b``    the model ``a t^2 + b t`` along the anti-gradient ``-g``.

A dogleg path goes from 0 to the constrained Cauchy point along ``-g`` and then
straight towards the Gauss-Newton point; in a box the step is the last point of that
path inside the box (Nocedal & Wright, "Numerical Optimization", 2nd ed., ch. 4;
C. Voglis and I. E. Lagaris, "A Rectangular Trust Region Dogleg Approach for
Unconstrained and Bound Constrained Nonlinear Optimization", WSEAS International
Conference on Applied Mathematics, Corfu, 2004).

Active variables are handled with masks instead of slicing (shapes stay static under
``jit``/``vmap``): their columns of ``J`` and components of ``g`` are zero, so every
quantity below leaves them at zero.
"""

from __future__ import annotations

import jax.numpy as jnp

from .bounds import step_size_to_bound
from .trust_region import minimize_quadratic_1d


def min_norm_lstsq(A, b):
    """Minimum-norm solution of ``min ||A x - b||`` from the SVD, with singular values
    below ``eps * s_max`` treated as zero (``numpy.linalg.lstsq(A, b, rcond=-1)``)."""
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    eps = jnp.finfo(A.dtype).eps
    keep = s > eps * s[0]
    coef = jnp.where(keep, (U.T @ b) / jnp.where(keep, s, 1), 0)
    return Vt.T @ coef


def find_intersection(x, tr_bounds, lb, ub):
    """The box of feasible steps and which constraint makes each of its faces.

    Returns ``lb_total, ub_total`` and the masks ``orig_l, orig_u`` (face from the
    original bound) and ``tr_l, tr_u`` (face from the trust region).
    """
    lb_centered = lb - x
    ub_centered = ub - x
    lb_total = jnp.maximum(lb_centered, -tr_bounds)
    ub_total = jnp.minimum(ub_centered, tr_bounds)
    return (
        lb_total,
        ub_total,
        lb_total == lb_centered,
        ub_total == ub_centered,
        lb_total == -tr_bounds,
        ub_total == tr_bounds,
    )


def dogleg_step(x, newton_step, g, a, b, tr_bounds, lb, ub, free):
    """The dogleg step in the rectangle ``[lb, ub] - x`` intersected with the trust region.

    ``g`` and ``newton_step`` are zero where ``free`` is False. Returns ``(step,
    bound_hits, tr_hit)``: ``bound_hits`` in {-1, 0, 1} says which original bound each
    variable lands on; ``tr_hit`` whether the step ends on the trust-region boundary.
    """
    lb_total, ub_total, orig_l, orig_u, tr_l, tr_u = find_intersection(x, tr_bounds, lb, ub)
    newton_inside = jnp.all(((newton_step >= lb_total) & (newton_step <= ub_total)) | ~free)

    # The classical dogleg would stop at a Cauchy point outside the region; in a box it
    # pays to go on from the constrained Cauchy point towards the Newton point.
    to_bounds, _ = step_size_to_bound(jnp.zeros_like(x), -g, lb_total, ub_total)
    to_bounds = jnp.where(jnp.isfinite(to_bounds), to_bounds, 0)  # g == 0
    t_cauchy, _ = minimize_quadratic_1d(a, b, jnp.zeros_like(to_bounds), to_bounds)
    cauchy_step = -t_cauchy * g

    step_diff = newton_step - cauchy_step
    step_size, hits = step_size_to_bound(cauchy_step, step_diff, lb_total, ub_total)
    step_size = jnp.where(jnp.isfinite(step_size), step_size, 0)  # Newton == Cauchy point
    bound_hits = jnp.where((hits > 0) & orig_u, 1, jnp.where((hits < 0) & orig_l, -1, 0)).astype(jnp.int32)
    tr_hit = jnp.any(((hits < 0) & tr_l) | ((hits > 0) & tr_u))

    step = jnp.where(newton_inside, newton_step, cauchy_step + step_size * step_diff)
    bound_hits = jnp.where(newton_inside, 0, bound_hits)
    return step, bound_hits, ~newton_inside & tr_hit
