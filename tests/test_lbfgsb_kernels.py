"""Kernel tests for L-BFGS-B: Cauchy point, free-set Gram, subspace step, line search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lsq._kernels import lbfgsb as K
from lbfgsb_reference import cauchy_point_reference

# The kernels run jitted, as they do inside the solver. Called eagerly, each call traces
# and compiles the kernel's loops and branches again; jitted, one compilation per shape
# and static setting serves every seed and memory below.
cauchy_point = jax.jit(K.cauchy_point, static_argnames=("chunk",))
middle_matrix = jax.jit(K.middle_matrix)
select_smallest = jax.jit(K.select_smallest, static_argnums=(1, 3))
free_gram_full = jax.jit(K.free_gram_full, static_argnames=("block",))
free_gram_update = jax.jit(K.free_gram_update, static_argnums=4)
free_gram_refresh = jax.jit(K.free_gram_refresh, static_argnums=4)
dcsrch_start = jax.jit(K.dcsrch_start)
dcsrch_update = jax.jit(K.dcsrch_update)


@jax.jit
def _add_pair(mem, s, y):
    mem, slot = K.memory_write_rows(mem, s, y, True)
    prod = K.wt_matvec(mem, jnp.stack([s, y], 1), jnp.ones(2 * mem.age.shape[0], s.dtype))
    return K.memory_update_small(mem, slot, prod, s @ y, y @ y, True)


def _memory(rng, n, m, npairs):
    """A memory filled with pairs y = A s from an SPD A (curvature always positive)."""
    A = rng.standard_normal((n, n))
    A = A @ A.T / n + np.eye(n)
    mem = K.memory_init(n, m, jnp.float64)
    for _ in range(npairs):
        s = rng.standard_normal(n)
        y = A @ s
        mem = _add_pair(mem, jnp.asarray(s), jnp.asarray(y))
    return mem


def _problem(rng, n, frac_at_bound=0.3):
    lower = -rng.uniform(0.0, 1.0, n)
    upper = rng.uniform(0.0, 1.0, n)
    lower[rng.uniform(size=n) < 0.1] = -np.inf
    upper[rng.uniform(size=n) < 0.1] = np.inf
    x = rng.uniform(np.maximum(lower, -1), np.minimum(upper, 1))
    at = rng.uniform(size=n) < frac_at_bound
    x = np.where(at & np.isfinite(lower), lower, x)
    g = rng.standard_normal(n) * rng.uniform(0.1, 10.0, n)
    g[rng.uniform(size=n) < 0.05] = 0.0
    return x, g, lower, upper


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("npairs", [0, 3, 12])
@pytest.mark.parametrize("chunk", [None, 3])
def test_cauchy_point_matches_sequential_reference(seed, npairs, chunk):
    rng = np.random.default_rng(seed)
    n, m = 40, 5
    mem = _memory(rng, n, m, npairs)
    x, g, lower, upper = _problem(rng, n)
    M, ok = middle_matrix(mem)
    assert bool(ok)
    xc, c, free, t = cauchy_point(
        jnp.asarray(x), jnp.asarray(g), jnp.asarray(lower), jnp.asarray(upper), mem, M,
        chunk=chunk,
    )
    xr, cr, freer, tr = cauchy_point_reference(x, g, lower, upper, mem, M)
    np.testing.assert_allclose(float(t), tr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(xc), xr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(c), cr, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(free), freer)
    assert np.all(np.asarray(xc) >= lower) and np.all(np.asarray(xc) <= upper)


def test_cauchy_point_minimises_model_along_path():
    """The Cauchy point is a local minimiser of the model along the projected path."""
    rng = np.random.default_rng(7)
    n, m = 30, 4
    mem = _memory(rng, n, m, 6)
    x, g, lower, upper = _problem(rng, n)
    M, _ = middle_matrix(mem)
    scale = np.asarray(K.w_scale(mem))
    W = (np.asarray(mem.buf) * scale[:, None]).T
    B = float(mem.theta) * np.eye(n) - W @ np.asarray(M) @ W.T

    def model(t):
        z = np.clip(x - t * g, lower, upper) - x
        return g @ z + 0.5 * z @ B @ z

    _, _, _, t = cauchy_point(jnp.asarray(x), jnp.asarray(g), jnp.asarray(lower),
                                jnp.asarray(upper), mem, M)
    t = float(t)
    ts = np.linspace(0, t, 200)
    assert model(t) <= min(model(s) for s in ts) + 1e-10


def test_middle_matrix_is_inverse_of_compact_middle():
    rng = np.random.default_rng(1)
    n, m = 12, 4
    mem = _memory(rng, n, m, 6)  # wrapped around: slots out of time order
    M, ok = middle_matrix(mem)
    order = np.argsort(np.asarray(mem.age))
    S = np.asarray(mem.buf)[m:][order]
    Y = np.asarray(mem.buf)[:m][order]
    SY = S @ Y.T
    D = np.diag(np.diag(SY))
    L = np.tril(SY, -1)
    theta = float(mem.theta)
    Kmat = np.block([[-D, L.T], [L, theta * S @ S.T]])
    perm = np.concatenate([order, m + order])
    Mo = np.asarray(M)[np.ix_(perm, perm)]
    np.testing.assert_allclose(Mo @ Kmat, np.eye(2 * m), atol=1e-8)


def test_subspace_step_unbounded_is_quasi_newton_step():
    rng = np.random.default_rng(2)
    n, m = 15, 4
    mem = _memory(rng, n, m, 5)
    M, _ = middle_matrix(mem)
    scale = np.asarray(K.w_scale(mem))
    W = (np.asarray(mem.buf) * scale[:, None]).T
    B = float(mem.theta) * np.eye(n) - W @ np.asarray(M) @ W.T
    x = rng.standard_normal(n)
    g = rng.standard_normal(n)
    inf = jnp.full(n, jnp.inf)
    free = jnp.ones(n, bool)
    xbar = K.subspace_minimization(
        jnp.asarray(x), jnp.asarray(g), -inf, inf, jnp.asarray(x), jnp.zeros(2 * m),
        free, mem, M, K.full_gram(mem),
    )
    np.testing.assert_allclose(np.asarray(xbar), x - np.linalg.solve(B, g), rtol=1e-8)


def test_free_gram_update_matches_full():
    rng = np.random.default_rng(3)
    n, m = 50, 3
    mem = _memory(rng, n, m, 4)
    f0 = jnp.asarray(rng.uniform(size=n) < 0.5)
    f1 = f0.at[jnp.arange(5)].set(~f0[:5])
    g0 = free_gram_full(mem, f0)
    g1, ok = free_gram_update(mem, g0, f0, f1, 8)
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(free_gram_full(mem, f1)),
                               atol=1e-10)
    _, ok = free_gram_update(mem, g0, f0, ~f0, 8)
    assert not bool(ok)


def test_blocked_gram_and_staged_refresh_match_masked_product():
    rng = np.random.default_rng(4)
    n, m = 50, 3
    mem = _memory(rng, n, m, 4)
    f0 = jnp.asarray(rng.uniform(size=n) < 0.5)
    g0 = free_gram_full(mem, f0, block=None)
    # 13 panels of 4 columns; the last one is shifted back and masks what was counted.
    np.testing.assert_allclose(np.asarray(free_gram_full(mem, f0, block=4)),
                               np.asarray(g0), atol=1e-10)
    # size 1: stages of 1 and 16 changed variables, then the full product.
    for k in (1, 10, 30):
        f1 = f0.at[:k].set(~f0[:k])
        np.testing.assert_allclose(np.asarray(free_gram_refresh(mem, g0, f0, f1, 1)),
                                   np.asarray(free_gram_full(mem, f1, block=None)),
                                   atol=1e-10)


@pytest.mark.parametrize("n,size", [(300, 7), (5000, 5), (5003, 19)])
def test_compact_indices_matches_nonzero(n, size):
    """Both the one-level count and the two-level (blocks) one: the first ``size``."""
    rng = np.random.default_rng(n + size)
    compact = jax.jit(K.compact_indices, static_argnums=1)
    for p in (0.0, 0.001, 0.01, 0.3):
        mask = rng.uniform(size=n) < p
        want = np.full(size, n)
        nz = np.flatnonzero(mask)[:size]
        want[: nz.size] = nz
        np.testing.assert_array_equal(np.asarray(compact(jnp.asarray(mask), size)), want)


@pytest.mark.parametrize("size", [1, 4, 16, 64])
def test_select_smallest_with_ties(size):
    rng = np.random.default_rng(size)
    t = rng.choice([0.5, 1.0, 2.0, 3.0], size=40) * rng.choice([1.0, 1.0 + 1e-12], 40)
    t[rng.uniform(size=40) < 0.2] = np.inf
    idx, tk = select_smallest(jnp.asarray(t), size)
    idx, tk = np.asarray(idx), np.asarray(tk)
    valid = idx < 40
    assert valid.sum() >= 1
    assert np.all(np.diff(tk[valid]) >= 0)
    # everything selected is no larger than everything not selected
    rest = np.setdiff1d(np.arange(40)[np.isfinite(t)], idx[valid])
    if rest.size:
        assert tk[valid].max() <= t[rest].min()


@pytest.mark.parametrize("size", [1, 3, 8])
def test_select_smallest_stages_take_each_entry_once(size):
    """Chained stages (each leaves out what the last took) with many ties."""
    rng = np.random.default_rng(10 + size)
    t = rng.choice([0.5, 1.0, 2.0], size=30)
    t[rng.uniform(size=30) < 0.2] = np.inf
    taken, last, above = [], 0.0, None
    for _ in range(40):
        idx, tk, above = select_smallest(jnp.asarray(t), size, above, return_above=True)
        idx, tk = np.asarray(idx), np.asarray(tk)
        valid = idx < 30
        if not valid.any():
            break
        assert tk[valid].min() >= last
        last = tk[valid].max()
        taken += list(idx[valid])
    assert sorted(taken) == list(np.flatnonzero(np.isfinite(t)))


def test_cauchy_point_stages_with_tied_breakpoints():
    rng = np.random.default_rng(11)
    n, m = 60, 4
    mem = _memory(rng, n, m, 5)
    lower, upper = -np.ones(n), np.ones(n)
    x = np.zeros(n)
    g = rng.choice([-2.0, -1.0, 1.0, 2.0], n)  # breakpoints 0.5 and 1.0, 30 each
    M, _ = middle_matrix(mem)
    xr, cr, freer, tr = cauchy_point_reference(x, g, lower, upper, mem, M)
    for chunk in (2, 7):
        xc, c, free, t = cauchy_point(jnp.asarray(x), jnp.asarray(g), jnp.asarray(lower),
                                        jnp.asarray(upper), mem, M, chunk=chunk)
        np.testing.assert_allclose(float(t), tr, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(xc), xr, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(c), cr, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(np.asarray(free), freer)


def _run_line_search(phi, stp0, stpmax=1e10, maxls=30):
    f0, g0 = phi(0.0)
    ls = dcsrch_start(jnp.asarray(f0), jnp.asarray(g0), jnp.asarray(stp0), 0.0, stpmax)
    stp = jnp.asarray(stp0)
    for _ in range(maxls):
        f, g = phi(float(stp))
        ls, stp_next, task = dcsrch_update(ls, stp, jnp.asarray(f), jnp.asarray(g),
                                             jnp.asarray(0.0), jnp.asarray(stpmax))
        if int(task) != K.LS_FG:
            return float(stp), int(task), (f0, g0, f, g)
        stp = stp_next
    raise AssertionError("line search did not finish")


@pytest.mark.parametrize("stp0", [1e-3, 1.0, 10.0, 1e3])
@pytest.mark.parametrize(
    "phi",
    [
        lambda a: (-a / (a * a + 2.0), (a * a - 2.0) / (a * a + 2.0) ** 2),  # MT test 1
        lambda a: ((a + 0.004) ** 5 - 2 * (a + 0.004) ** 4,
                   5 * (a + 0.004) ** 4 - 8 * (a + 0.004) ** 3),  # MT test 2
        lambda a: ((a - 3.0) ** 2, 2 * (a - 3.0)),
    ],
)
def test_line_search_strong_wolfe(phi, stp0):
    # With L-BFGS-B's xtol = 0.1 a search may end on the XTOL warning (accepted, as in
    # L-BFGS-B); sufficient decrease holds either way, curvature when it converged.
    stp, task, (f0, g0, f, g) = _run_line_search(phi, stp0)
    assert task in (K.LS_CONVERGED, K.LS_WARNING)
    assert f <= f0 + K.FTOL * stp * g0
    if task == K.LS_CONVERGED:
        assert abs(g) <= K.GTOL * abs(g0)


@pytest.mark.parametrize("n", [1, 7, 128, 129])
def test_stable_order_is_a_stable_argsort(n):
    rng = np.random.default_rng(n)
    t = rng.integers(0, 4, n).astype(float)  # many ties
    t[::5] = np.inf
    np.testing.assert_array_equal(np.asarray(K.stable_order(jnp.asarray(t))),
                                  np.argsort(t, kind="stable"))
