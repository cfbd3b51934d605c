"""The batch-first kernels (unrolled small linear algebra, fusion steering) against NumPy,
per fit and under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lsq._kernels.fusion import materialize
from jaxopt_lsq._kernels.small_linalg import (
    all_finite,
    cholesky_solve,
    max_abs,
    norm,
    quadratic_form,
    vdot,
)


@pytest.mark.parametrize("n", [1, 3, 5, 14])  # 14 > UNROLL_MAX: the LAPACK/jnp path
def test_small_reductions_match_numpy(n):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, 7, n))
    A = rng.standard_normal((7, n, n))
    np.testing.assert_allclose(jax.vmap(vdot)(a, b), np.sum(a * b, axis=1), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(norm)(a), np.linalg.norm(a, axis=1), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(max_abs)(a), np.max(np.abs(a), axis=1), rtol=0)
    np.testing.assert_allclose(jax.vmap(quadratic_form)(A, a), np.einsum("ki,kij,kj->k", a, A, a), rtol=1e-5)
    a[2, n - 1] = np.nan
    a[4, 0] = -np.inf
    np.testing.assert_array_equal(jax.vmap(all_finite)(a), np.all(np.isfinite(a), axis=1))
    A[3, n - 1, 0] = np.inf
    np.testing.assert_array_equal(jax.vmap(all_finite)(A), np.all(np.isfinite(A), axis=(1, 2)))


@pytest.mark.parametrize("n", [2, 4, 14])
def test_cholesky_solve_matches_numpy_and_flags_indefinite(n):
    rng = np.random.default_rng(0)
    M = rng.standard_normal((5, n + 3, n))
    A = np.einsum("kmi,kmj->kij", M, M)
    b = rng.standard_normal((5, n))
    x, _, ok = jax.vmap(cholesky_solve)(A, b)
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-5, atol=1e-6)
    assert np.all(ok)
    A[1] = -np.eye(n)
    assert not jax.vmap(cholesky_solve)(A, b)[2][1]


def test_materialize_is_the_identity_on_booleans():
    p = jnp.asarray([True, False, True, True, False])
    np.testing.assert_array_equal(materialize(p), p)
    np.testing.assert_array_equal(jax.jit(jax.vmap(materialize))(p), p)
    assert materialize(p).dtype == jnp.bool_
    with pytest.raises(TypeError):
        materialize(jnp.ones(3))
