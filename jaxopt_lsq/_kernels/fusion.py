"""Steering XLA's fusion for batch-first code.

Under ``jax.vmap`` a per-fit decision (say, "was the step accepted?") becomes a vector
over the batch, computed by a long chain of cheap compares and selects. When that
vector is broadcast into a wider array (``where(accept, new_point, old_point)`` over
the residuals, or over an ``n x n`` matrix), XLA fuses the whole chain into the
consumer's loop and recomputes it for every *element* of the wide array, not once per
fit: the decision then costs more than the linear algebra. XLA does not fuse an
*expensive* producer (a square root, a division, ...) into a consumer that reuses its
elements, so ending the chain with one such operation makes XLA compute it once and
keep it in memory. (``lax.optimization_barrier`` does not help: the CPU pipeline
removes it before fusion.)
"""

from __future__ import annotations

import jax.numpy as jnp


def materialize(a):
    """``a`` unchanged (bit for bit), computed once rather than fused into its users.

    Booleans go through ``sqrt`` of 0.0/1.0; floats through ``sqrt(a*a)`` would lose
    the sign, so they take ``a`` times the square root of 1 computed at run time."""
    if a.dtype == jnp.bool_:
        return jnp.sqrt(jnp.where(a, 1.0, 0.0).astype(jnp.float32)) > 0.5
    raise TypeError("materialize is only used on boolean decisions")
