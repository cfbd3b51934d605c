"""The batch-first kernels (unrolled small linear algebra, fusion steering) against NumPy,
per fit and under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lsq._kernels.fusion import materialize
from jaxopt_lsq._kernels.small_linalg import (
    all_finite,
    JACOBI_MAX,
    cholesky_solve,
    eigh_jacobi,
    max_abs,
    norm,
    pinv_solve_symmetric,
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


def _symmetric_cases(n, rng):
    """Definite, indefinite, rank-deficient (rank n - 2), diagonal and zero matrices."""
    B = rng.standard_normal((n, n)) * 10 ** rng.uniform(-1, 1, n)
    low = rng.standard_normal((n, max(n - 2, 0)))
    return np.stack([B @ B.T, B + B.T, low @ low.T, np.diag(rng.standard_normal(n)), np.zeros((n, n))])


# One fit at a time, jitted: called eagerly, the unrolled kernel dispatches its hundreds
# of scalar operations one by one (seconds per call); jitted, it compiles once per n.
pinv_solve_one = jax.jit(pinv_solve_symmetric)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])  # 6 > JACOBI_MAX: LAPACK
def test_pinv_solve_symmetric_matches_numpy(n):
    rng = np.random.default_rng(n)
    A = _symmetric_cases(n, rng)
    b = rng.standard_normal((A.shape[0], n))
    ref = np.einsum("kij,kj->ki", np.linalg.pinv(A, hermitian=True), b)
    scale = np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-300)
    for x in (jax.jit(jax.vmap(pinv_solve_symmetric))(A, b), np.stack([pinv_solve_one(a, c) for a, c in zip(A, b)])):
        np.testing.assert_allclose(np.asarray(x) / scale, ref / scale, rtol=0, atol=1e-9)
    # The minimum-norm solution of a rank-deficient system is orthogonal to the null space.
    if n > 2:
        _, _, Vt = np.linalg.svd(A[2])
        assert np.abs(Vt[n - 2:] @ np.asarray(pinv_solve_one(A[2], b[2]))).max() < 1e-9 * scale[2, 0]


@pytest.mark.parametrize("n", [2, 3, JACOBI_MAX])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_eigh_jacobi_is_an_eigendecomposition(n, dtype):
    rng = np.random.default_rng(10 + n)
    A = _symmetric_cases(n, rng).astype(dtype)
    w, V = jax.jit(jax.vmap(eigh_jacobi))(A)
    assert w.dtype == dtype and V.dtype == dtype
    tol = 50 * np.finfo(dtype).eps
    for a, wk, Vk in zip(A, np.asarray(w, np.float64), np.asarray(V, np.float64)):
        size = max(np.abs(a).max(), 1e-30)
        np.testing.assert_allclose(np.sort(wk), np.linalg.eigvalsh(a.astype(np.float64)), rtol=0, atol=tol * size)
        np.testing.assert_allclose(Vk.T @ Vk, np.eye(n), rtol=0, atol=tol)
        np.testing.assert_allclose(a @ Vk, Vk * wk, rtol=0, atol=tol * size)
