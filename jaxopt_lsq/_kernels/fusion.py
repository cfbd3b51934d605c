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
    """The boolean array ``a`` unchanged, computed once rather than fused into its users
    (it goes through the square root of 0.0/1.0)."""
    if a.dtype != jnp.bool_:
        raise TypeError("materialize is only used on boolean decisions")
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    return jnp.sqrt(jnp.where(a, one, zero)) > 0.5
