"""Large and sparse problems: tr_solver='lsmr', jac_sparsity, sparse/matrix-free Jacobians.

SciPy 1.17 is the oracle on the same functions: its Broyden tridiagonal example, its
lsmr, its 2-D trust-region solver and its column grouping; plus a handful of the shared
problems (tests/helpers.py) with tr_solver='lsmr', with and without bounds, a robust
loss and x_scale='jac'. Compilations dominate the runtime here, so each case is chosen
to exercise a different path.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sps
from scipy.optimize._lsq.common import solve_trust_region_2d as scipy_tr_2d
from scipy.optimize._numdiff import group_columns
from scipy.sparse.linalg import aslinearoperator
from scipy.sparse.linalg import lsmr as scipy_lsmr

import helpers
from jaxopt_lsq import JacobianLinearOperator, SparseJacobian, least_squares
from jaxopt_lsq._kernels.lsmr import lsmr
from jaxopt_lsq._kernels.trust_region import solve_trust_region_2d
from jaxopt_lsq._jacobian import HostOperatorJac, JacobianOperator, Sparsity
from jaxopt_lsq._sparsity import check_colouring, colour_columns, dia_layout, ell_layout, structure_coo


# --------------------------------------------------------------------------------------
# The Broyden tridiagonal system of SciPy's least_squares documentation
# --------------------------------------------------------------------------------------
def broyden(xp):
    def fun(x):
        f = (3 - x) * x + 1
        if xp is np:
            f[1:] -= x[:-1]
            f[:-1] -= 2 * x[1:]
            return f
        return f.at[1:].add(-x[:-1]).at[:-1].add(-2 * x[1:])

    return fun


def broyden_sparsity(n):
    s = sps.lil_array((n, n), dtype=int)
    i = np.arange(n)
    s[i, i] = 1
    s[i[1:], i[1:] - 1] = 1
    s[i[:-1], i[:-1] + 1] = 1
    return s


def broyden_jac(x):
    n = x.size
    J = sps.lil_array((n, n))
    i = np.arange(n)
    J[i, i] = 3 - 2 * x
    J[i[1:], i[1:] - 1] = -1
    J[i[:-1], i[:-1] + 1] = -2
    return J


def broyden_bounds(n):
    """SciPy's test_least_squares.BroydenTridiagonal: x0 and bounds."""
    rng = np.random.default_rng(123440)
    lb = np.linspace(-2, -1.5, n) + 0.1 * rng.standard_normal(n)
    ub = np.linspace(-0.8, 0.0, n) + 0.1 * rng.standard_normal(n)
    x0 = -np.ones(n) + 0.1 * rng.standard_normal(n)
    x0 = np.clip(x0, lb + 1e-10, ub - 1e-10)
    return x0, lb, ub


def scipy_ls(*a, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return so.least_squares(*a, **kw)


N = 1000
SPARSITY = broyden_sparsity(N)


@pytest.mark.parametrize(
    "case",
    [
        dict(xp=np, method="trf"),  # SciPy's documentation call, NumPy fun on the host
        dict(xp=jnp, method="trf"),  # traceable fun: compressed forward mode
        dict(xp=jnp, method="trf", jac="3-point"),
        dict(xp=np, method="dogbox", jac="cs"),
    ],
    ids=["trf-numpy-2point", "trf-autodiff", "trf-3point", "dogbox-numpy-cs"],
)
def test_broyden_jac_sparsity_matches_scipy(case):
    case = dict(case)
    xp = case.pop("xp")
    kw_scipy = dict(case, jac=case.get("jac", "2-point"))
    ref = scipy_ls(broyden(np), -np.ones(N), jac_sparsity=SPARSITY, **kw_scipy)
    res = least_squares(broyden(xp), -np.ones(N), jac_sparsity=SPARSITY, **case)
    assert res.cost < 1e-20 and ref.cost < 1e-20
    assert res.status == ref.status and res.nfev == ref.nfev and res.njev == ref.njev
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10, atol=1e-12)
    assert sps.issparse(res.jac) and res.jac.shape == (N, N)  # SciPy's type, as passed in
    np.testing.assert_allclose(res.jac.toarray(), ref.jac.toarray(), rtol=1e-6, atol=1e-8)


def test_broyden_bounded_and_sparse_jac_matches_scipy():
    """SciPy's own sparse test problem: bounds, a NumPy jac returning a sparse matrix."""
    x0, lb, ub = broyden_bounds(100)
    ref = scipy_ls(broyden(np), x0, broyden_jac, bounds=(lb, ub))
    res = least_squares(broyden(np), x0, broyden_jac, bounds=(lb, ub))
    assert sps.issparse(res.jac)
    assert res.status == ref.status and abs(res.nfev - ref.nfev) <= 1
    assert res.cost < 1e-20 and ref.cost < 1e-20
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)


def test_broyden_matrix_free_autodiff_and_jit():
    fun = broyden(jnp)
    solve = jax.jit(lambda x0: least_squares(fun, x0, tr_solver="lsmr", tr_options={"btol": 1e-10}))
    res = solve(-jnp.ones(N))
    assert float(res.cost) < 1e-20 and int(res.status) > 0
    J = res.jac
    assert isinstance(J, JacobianLinearOperator) and J.shape == (N, N)
    v = jnp.arange(N, dtype=float)
    ref = broyden_jac(np.asarray(res.x)).tocsr()
    np.testing.assert_allclose(J.matvec(v), ref @ np.asarray(v), rtol=1e-12)
    np.testing.assert_allclose(J.rmatvec(v), ref.T @ np.asarray(v), rtol=1e-12)


# --------------------------------------------------------------------------------------
# tr_solver='lsmr' on the shared problems, against SciPy's lsmr path
# --------------------------------------------------------------------------------------
LSMR_CASES = [
    ("rosenbrock", dict(method="trf")),
    ("powell_singular_lb", dict(method="trf")),
    ("wood_bounded", dict(method="trf", x_scale="jac")),
    ("exp_fit_outliers", dict(method="trf", loss="soft_l1", f_scale=0.1)),
    ("beale_bounded", dict(method="dogbox")),
    ("osborne1", dict(method="dogbox", x_scale="jac")),
]


@pytest.mark.parametrize("name,kw", LSMR_CASES, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in LSMR_CASES])
def test_lsmr_matches_scipy_on_problem_library(name, kw):
    p = helpers.get_problem(name)
    ref = scipy_ls(p.make(np), p.x0_array(), bounds=p.bounds, args=p.args, tr_solver="lsmr", **kw)
    res = least_squares(
        p.make(jnp), p.x0_array(), jac="2-point", bounds=p.bounds, args=p.args, tr_solver="lsmr", **kw
    )
    assert res.status > 0 and ref.status > 0
    assert res.cost <= ref.cost * (1 + 1e-6) + 1e-12
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-3, atol=1e-6)
    # The same path: SciPy's lsmr and ours agree to rounding on these small systems.
    assert abs(res.nfev - ref.nfev) <= max(2, 0.1 * ref.nfev)


def test_lsmr_autodiff_bounded_robust_and_vmap():
    p = helpers.get_problem("powell_singular_lb")
    ref = scipy_ls(p.make(np), p.x0_array(), bounds=p.bounds, tr_solver="lsmr", loss="huber")
    fun = p.make(jnp)
    lb, ub = (jnp.asarray(b) for b in p.bounds_arrays())

    def solve(x0):
        return least_squares(fun, x0, bounds=(lb, ub), tr_solver="lsmr", loss="huber")

    res = least_squares(fun, p.x0_array(), bounds=p.bounds, tr_solver="lsmr", loss="huber")
    assert isinstance(res.jac, JacobianLinearOperator) and res.status > 0
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-5)
    x0s = jnp.stack([p.x0_array(), p.x0_array() + 0.5, p.x0_array() * 2])
    batch = jax.vmap(solve)(x0s)
    for i in range(3):
        # Batched products round differently; the solutions agree to the tolerances.
        one = solve(x0s[i])
        np.testing.assert_allclose(batch.cost[i], one.cost, rtol=1e-6)
        np.testing.assert_allclose(batch.x[i], one.x, rtol=1e-5, atol=1e-8)
        assert int(batch.status[i]) > 0


def test_sparse_result_without_scipy_input():
    """A dense jac_sparsity gives a SparseJacobian (no SciPy needed) equal to the dense one."""
    p = helpers.get_problem("broyden_tridiagonal10")
    fun = p.make(jnp)
    n = p.n
    pattern = (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1).astype(int)
    res = least_squares(fun, p.x0_array(), jac_sparsity=pattern)
    dense = least_squares(fun, p.x0_array())
    assert isinstance(res.jac, SparseJacobian) and res.jac.nnz == pattern.sum()
    np.testing.assert_allclose(np.asarray(res.jac.toarray()), np.asarray(jax.jacfwd(fun)(res.x)), atol=1e-12)
    np.testing.assert_allclose(res.x, dense.x, atol=1e-8)


def test_implicit_diff_through_lsmr_solve():
    """d x*/d data through a tr_solver='lsmr' solve equals the exact solver's derivative."""
    t = jnp.linspace(0, 3, 12)
    y = 1.5 * jnp.exp(-0.7 * t) + 0.2

    def fit(y, **kw):
        fun = lambda x, y: x[0] * jnp.exp(-x[1] * t) + x[2] - y  # noqa: E731
        return least_squares(fun, jnp.array([1.0, 1.0, 0.0]), args=(y,), xtol=1e-12, ftol=1e-12, gtol=1e-12, **kw).x

    g_lsmr = jax.jacrev(lambda y: fit(y, tr_solver="lsmr", tr_options={"atol": 1e-12, "btol": 1e-12}))(y)
    g_exact = jax.jacrev(fit)(y)
    np.testing.assert_allclose(g_lsmr, g_exact, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------
# SciPy's validation
# --------------------------------------------------------------------------------------
def _rosen(xp):
    return lambda x: xp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def _bad_operator_jac(x):
    return aslinearoperator(np.array([[-20 * x[0], 10.0], [-1.0, 0.0]]))


def _sparse_rosen_jac(x):
    return sps.csr_array(np.array([[-20 * x[0], 10.0], [-1.0, 0.0]]))


BAD = [
    dict(tr_solver="exact", jac_sparsity=[[1, 1], [1, 1]]),
    dict(jac_sparsity=[[1, 1]]),
    dict(tr_solver="lsmr", tr_options={"tol": 1e-10}),
    dict(tr_solver="lsmr", method="dogbox", tr_options={"regularize": True, "foo": 1}),
    dict(method="lm", jac_sparsity=[[1, 1], [1, 1]]),
    dict(jac=_sparse_rosen_jac, tr_solver="exact"),
    dict(jac=_sparse_rosen_jac, method="lm"),
    dict(jac=_bad_operator_jac, tr_solver="exact"),
    dict(jac=_bad_operator_jac, method="lm"),
    dict(jac=_bad_operator_jac, x_scale="jac"),
]


@pytest.mark.parametrize("kw", BAD, ids=[str({k: getattr(v, "__name__", v) for k, v in kw.items()}) for kw in BAD])
def test_bad_input_matches_scipy(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            so.least_squares(_rosen(np), [2.0, 2.0], **kw)
        with pytest.raises(type(expected.value)) as got:
            least_squares(_rosen(np if callable(kw.get("jac")) else jnp), [2.0, 2.0], **kw)
    assert str(got.value) == str(expected.value)


def test_dogbox_regularize_warns_and_solves():
    with pytest.warns(UserWarning, match="The keyword 'regularize' in `tr_options` is not relevant"):
        res = least_squares(_rosen(jnp), [2.0, 2.0], method="dogbox", tr_solver="lsmr", tr_options={"regularize": False})
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-6)


def test_linear_operator_jac_matches_scipy():
    """A NumPy jac returning a LinearOperator (SciPy's test_linear_operator): applied on
    the host; res.jac is the user's operator at the solution."""
    x0, lb, ub = broyden_bounds(40)

    def op_jac(x):
        return aslinearoperator(broyden_jac(x))

    for kw in (dict(), dict(method="dogbox", bounds=(lb, ub))):
        ref = scipy_ls(broyden(np), x0, op_jac, **kw)
        res = least_squares(broyden(np), x0, op_jac, **kw)
        assert res.status == ref.status and res.nfev == ref.nfev
        np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-8, atol=1e-20)
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-8, atol=1e-10)
        v = np.arange(40.0)
        np.testing.assert_allclose(res.jac.matvec(v), broyden_jac(res.x) @ v, rtol=1e-12)
    with pytest.raises(NotImplementedError, match="eager calls only"):
        jax.jit(lambda x0: least_squares(broyden(np), x0, op_jac).x)(jnp.asarray(x0))


def test_our_documented_errors():
    with pytest.raises(ValueError, match="x_scale='jac' can't be used with the matrix-free"):
        least_squares(_rosen(jnp), [2.0, 2.0], tr_solver="lsmr", x_scale="jac")


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------
def test_lsmr_kernel_matches_scipy():
    rng = np.random.default_rng(0)
    solve = jax.jit(lambda A, b, damp, atol: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], damp, atol, atol))
    for m, n in [(30, 10), (10, 30)]:
        A = rng.standard_normal((m, n))
        b = rng.standard_normal(m)
        for damp in (0.0, 0.7):
            for atol in (1e-6, 1e-10):
                ref = scipy_lsmr(A, b, damp=damp, atol=atol, btol=atol)
                out = solve(A, b, damp, atol)
                assert int(out.istop) == ref[1] and int(out.itn) == ref[2]
                np.testing.assert_allclose(out.x, ref[0], rtol=1e-8, atol=1e-12)
    few = jax.jit(lambda A, b: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], maxiter=3))(A, b)
    ref = scipy_lsmr(A, b, maxiter=3)
    assert int(few.istop) == ref[1] == 7
    np.testing.assert_allclose(few.x, ref[0], rtol=1e-10, atol=1e-14)


def test_lsmr_kernel_edge_cases_match_scipy():
    """x = 0 solving the problem already (b = 0, A^T b = 0: no iteration, istop 0); the
    Krylov space used up after one iteration (beta = 0 for b in the range of orthonormal
    columns, with and without damping: then zetabar = 0 and the loop ends; alpha = 0
    for a single column); and float32."""
    rng = np.random.default_rng(5)
    solve = jax.jit(lambda A, b, damp: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], damp, 1e-8, 1e-8))
    A = rng.standard_normal((6, 4))
    top = np.vstack([rng.standard_normal((2, 3)), np.zeros((2, 3))])
    Q = np.eye(6)[:, :2]
    column = rng.standard_normal((5, 1))
    cases = [
        (A, np.zeros(6), 0.0, True),  # b = 0
        (top, np.array([0.0, 0.0, 1.0, 2.0]), 0.0, True),  # A^T b = 0
        (Q, np.array([3.0, 4.0, 0, 0, 0, 0]), 0.0, True),  # beta = 0 after one iteration
        (Q, np.array([3.0, 4.0, 0, 0, 0, 0]), 0.5, True),
        (column, rng.standard_normal(5), 0.0, False),  # alpha = 0 after one iteration
        (column, rng.standard_normal(5), 0.3, False),
    ]
    for A, b, damp, same_istop in cases:
        ref = scipy_lsmr(A, b, damp=damp, atol=1e-8, btol=1e-8)
        out = solve(A, b, damp)
        # With alpha = 0 the machine-precision tests (istop 5 or 2) hinge on rounding.
        assert int(out.itn) == ref[2] and (int(out.istop) == ref[1] or not same_istop)
        np.testing.assert_allclose(out.x, ref[0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(out.normr, ref[3], rtol=1e-10, atol=1e-14)
    # float32 follows the inputs' dtype.
    A = rng.standard_normal((30, 10)).astype(np.float32)
    b = rng.standard_normal(30).astype(np.float32)
    for damp in (0.0, 0.7):
        ref = scipy_lsmr(A.astype(float), b.astype(float), damp=damp, atol=1e-6, btol=1e-6)
        out = jax.jit(lambda A, b: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, 10, damp))(A, b)
        assert out.x.dtype == jnp.float32 and int(out.istop) == ref[1] and int(out.itn) == ref[2]
        np.testing.assert_allclose(out.x, ref[0], rtol=1e-5, atol=1e-6)


def test_lsmr_kernel_initial_guess_matches_scipy():
    """``x0``: LSMR runs on b - A x0 and accumulates onto x0 (damping on the correction,
    stopping tests on ||b||); an x0 that already solves the problem is returned as it is
    (istop 0), and b = 0 returns 0 whatever x0, as SciPy's lsmr does."""
    rng = np.random.default_rng(7)
    solve = jax.jit(
        lambda A, b, x0, damp: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], damp, 1e-8, 1e-8, x0=x0)
    )
    few = jax.jit(lambda A, b, x0: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], maxiter=2, x0=x0))
    for m, n in [(30, 10), (10, 30)]:
        A = rng.standard_normal((m, n))
        b = rng.standard_normal(m)
        x0 = rng.standard_normal(n)
        for damp in (0.0, 0.7):
            ref = scipy_lsmr(A, b, damp=damp, atol=1e-8, btol=1e-8, x0=x0)
            out = solve(A, b, x0, damp)
            assert int(out.istop) == ref[1] and int(out.itn) == ref[2]
            np.testing.assert_allclose(out.x, ref[0], rtol=1e-8, atol=1e-12)
            np.testing.assert_allclose(out.normr, ref[3], rtol=1e-8, atol=1e-12)
        ref = scipy_lsmr(A, b, maxiter=2, x0=x0)
        out = few(A, b, x0)
        assert int(out.istop) == ref[1] == 7
        np.testing.assert_allclose(out.x, ref[0], rtol=1e-10, atol=1e-14)
    A = np.vstack([np.diag([1.0, 2.0, 3.0]), np.zeros((5, 3))])
    solved = np.concatenate([[1.0, 4.0, 9.0], rng.standard_normal(5)])  # A^T (b - A x0) = 0 exactly
    for b, x0 in [(solved, np.array([1.0, 2.0, 3.0])), (np.zeros(8), np.ones(3))]:
        ref = scipy_lsmr(A, b, atol=1e-8, btol=1e-8, x0=x0)
        out = solve(A, b, x0, 0.0)
        assert int(out.istop) == ref[1] == 0 and int(out.itn) == ref[2] == 0
        np.testing.assert_allclose(out.x, ref[0], rtol=1e-12, atol=1e-15)


def _lsmr_guess_problem():
    p = helpers.get_problem("osborne1")
    return p, np.linspace(-0.5, 0.5, p.n)


@pytest.mark.parametrize(
    "kw", [dict(method="trf"), dict(method="trf", bounded=True), dict(method="dogbox", bounded=True)],
    ids=["trf", "trf-bounded", "dogbox-bounded"],
)
def test_tr_options_x0_matches_scipy(kw):
    """tr_options['x0'] reaches LSMR at every iteration (SciPy's meaning: a guess in the
    scaled variables); with maxiter=2 the guess changes every step, so the path only
    matches SciPy's if it is used as SciPy uses it. The user's array is not written to."""
    p, guess = _lsmr_guess_problem()
    kw = dict(kw)
    bounds = (p.x0_array() - 0.3, p.x0_array() + 2.0) if kw.pop("bounded", False) else (-np.inf, np.inf)
    opts = {"x0": guess, "maxiter": 2}
    common = dict(bounds=bounds, args=p.args, tr_solver="lsmr", max_nfev=40, **kw)
    ref = scipy_ls(p.make(np), p.x0_array(), tr_options=dict(opts), **common)
    before = guess.copy()
    res = least_squares(p.make(jnp), p.x0_array(), jac="2-point", tr_options=opts, **common)
    np.testing.assert_array_equal(guess, before)
    without = least_squares(p.make(jnp), p.x0_array(), jac="2-point", tr_options={"maxiter": 2}, **common)
    assert res.status == ref.status and res.nfev == ref.nfev
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-6)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5, atol=1e-8)
    assert not np.allclose(without.x, res.x, rtol=1e-5, atol=1e-8)  # the guess did change the path


def test_tr_options_x0_traced_under_jit_and_bad_shape():
    p, guess = _lsmr_guess_problem()
    fun = p.make(jnp)
    traces = []

    def solve(x0, g):
        traces.append(1)
        return least_squares(fun, x0, args=p.args, tr_solver="lsmr", tr_options={"x0": g, "maxiter": 2}, max_nfev=40)

    solve = jax.jit(solve)
    eager = least_squares(fun, p.x0_array(), args=p.args, tr_solver="lsmr", tr_options={"x0": guess, "maxiter": 2},
                          max_nfev=40)
    out = solve(jnp.asarray(p.x0_array()), jnp.asarray(guess))
    np.testing.assert_allclose(out.x, eager.x, rtol=1e-10)
    other = solve(jnp.asarray(p.x0_array()), jnp.asarray(-guess))
    assert len(traces) == 1  # a new guess is data: no retrace
    assert not np.allclose(other.x, out.x, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="dimension mismatch"):
        least_squares(fun, p.x0_array(), args=p.args, tr_solver="lsmr", tr_options={"x0": np.ones(p.n + 1)})


def test_trust_region_2d_kernel_is_scipys_minimiser():
    rng = np.random.default_rng(1)
    solve = jax.jit(solve_trust_region_2d)
    for k in range(300):
        A = rng.standard_normal((2, 2))
        B = A @ A.T if k % 3 == 0 else A + A.T
        g = rng.standard_normal(2) * 10 ** rng.uniform(-3, 3)
        Delta = 10 ** rng.uniform(-2, 2)
        p_ref, newton_ref = scipy_tr_2d(B, g, Delta)
        p, newton = solve(jnp.asarray(B), jnp.asarray(g), Delta)
        q = lambda p: 0.5 * p @ B @ p + g @ p  # noqa: E731
        assert bool(newton) == newton_ref
        assert np.linalg.norm(p) <= Delta * (1 + 1e-12)
        assert q(np.asarray(p)) <= q(p_ref) + 1e-12 * max(1.0, abs(q(p_ref)))


@pytest.mark.parametrize("shape,density", [((300, 200), 0.05), ((50, 400), 0.02), ((100, 100), 0.3)])
def test_column_colouring(shape, density):
    A = sps.random_array(shape, density=density, rng=np.random.default_rng(2))
    m, n = shape
    rows, cols = structure_coo(A, m, n)
    colour, k = colour_columns(rows, cols, m, n)
    assert check_colouring(rows, cols, colour) and colour.max() + 1 == k
    # A greedy colouring needs at most (largest number of neighbours + 1) colours, and
    # comes close to SciPy's greedy grouping.
    B = (A != 0).astype(int)
    neighbours = ((B.T @ B) != 0).sum(axis=1) - 1
    assert k <= neighbours.max() + 1
    assert k <= 1.3 * (group_columns(A).max() + 1) + 1


def test_structure_coo():
    A = sps.coo_array((np.array([1.0, 0.0, 2.0, 3.0]), (np.array([1, 0, 1, 0]), np.array([0, 1, 0, 2]))), shape=(2, 3))
    rows, cols = structure_coo(A, 2, 3)  # explicit zero dropped, duplicate merged, row-major
    assert rows.tolist() == [0, 1] and cols.tolist() == [2, 0]
    rows, cols = structure_coo([[0, 1, 1], [1, 0, 0]], 2, 3)
    assert rows.tolist() == [0, 0, 1] and cols.tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="`jac_sparsity` has wrong shape."):
        structure_coo(A, 3, 2)
    colour, k = colour_columns(np.array([], int), np.array([], int), 2, 3)
    assert k == 1 and colour.tolist() == [0, 0, 0]


def test_many_colours_are_evaluated_in_chunks():
    """A dense row forces n colours; the colour groups are then evaluated in chunks
    (memory O(nnz + m + n)) and the Jacobian is still SciPy's."""
    n = 60

    def make(xp):
        def fun(x):
            f = broyden(xp)(x * 1.0)
            return xp.concatenate([f, xp.stack([xp.sum(x**2) - 1.0])])

        return fun

    pattern = np.vstack([broyden_sparsity(n).toarray(), np.ones((1, n), int)])
    x0 = -np.ones(n)
    for jac in ("3-point", None):  # two values per colour chunk; compressed jvp
        res = least_squares(make(jnp), x0, jac=jac, jac_sparsity=pattern, max_nfev=3)
        ref = scipy_ls(make(np), x0, jac=jac or "2-point", jac_sparsity=pattern, max_nfev=3)
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
        J = res.jac.toarray()
        np.testing.assert_allclose(J, jax.jacfwd(make(jnp))(jnp.asarray(res.x)), rtol=1e-5, atol=1e-6)


def _banded(m, n, offsets, rng):
    A = sps.lil_array((m, n))
    for o in offsets:
        for i in range(max(0, -o), min(m, n - o)):
            A[i, i + o] = rng.standard_normal()
    return A


@pytest.mark.parametrize(
    "case",
    ["random", "wide", "tall", "dense_row", "tridiagonal", "band_tall", "band_wide", "many_diagonals"],
)
def test_sparse_products_match_dense(case):
    """J @ v, J.T @ u and the column norms of a sparse Jacobian, by diagonals (banded
    structures), by the padded slot tables (gathers) and by segment sums, against the
    dense matrix, and the same for J diag(d) (right_scaled, which scales the laid-out
    values); empty rows and columns are allowed; one dense row makes the slot tables
    too wide and 17 diagonals too many for the diagonal layout."""
    rng = np.random.default_rng(3)
    random = {"random": ((300, 200), 0.05), "wide": ((50, 400), 0.02), "tall": ((400, 30), 0.1), "dense_row": ((200, 200), 0.02)}
    banded = {"tridiagonal": (100, 100, (-1, 0, 1)), "band_tall": (120, 80, (-30, -2, 0, 5)),
              "band_wide": (60, 90, (0, 3, 40)), "many_diagonals": (100, 100, tuple(range(-8, 9)))}
    if case in random:
        (m, n), density = random[case]
        A = sps.random_array((m, n), density=density, rng=rng, data_sampler=rng.standard_normal).tolil()
        A[1, :] = 0  # an empty row
        A[:, 2] = 0  # an empty column
        if case == "dense_row":
            A[5, :] = rng.standard_normal(n)
    else:
        m, n, offsets = banded[case]
        A = _banded(m, n, offsets, rng)
        A[3, :] = 0
    rows, cols = structure_coo(A, m, n)
    ell, dia = ell_layout(rows, cols, m, n), dia_layout(rows, cols, m, n)
    assert (ell is None) == (case == "dense_row")
    assert (dia is None) == (case in random or case == "many_diagonals")
    vals = jnp.asarray(A.tocsr()[rows, cols]).ravel()
    dense = A.toarray()
    v, u = rng.standard_normal(n), rng.standard_normal(m)
    d = rng.uniform(0.5, 2.0, n)
    d[7] = 0.0  # a masked column (dogbox's active variables)
    x = jnp.zeros(n)
    layouts = [{}]
    if ell is not None:
        layouts.append({"ell": ell})
    if dia is not None:
        layouts.append({"dia": dia[1], "dia_offsets": dia[0]})
    for layout in layouts:
        sp = Sparsity(rows=rows, cols=cols, colour=np.zeros(n, np.int32), n_colours=1, **layout)
        op = jax.jit(lambda J, v, u, sp: (lambda o: (o.matvec(v), o.rmatvec(u), o.col_norms()))(
            JacobianOperator("sparse", J, x, None, sp, m)))
        Jv, JTu, norms = op(vals, v, u, sp)
        np.testing.assert_allclose(Jv, dense @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(JTu, dense.T @ u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(norms, np.linalg.norm(dense, axis=0), rtol=1e-12, atol=1e-12)
        scaled = jax.jit(lambda J, d, v, u, sp: (lambda o: (o.matvec(v), o.rmatvec(u), o.col_norms()))(
            JacobianOperator("sparse", J, x, None, sp, m).right_scaled(d)))
        Jv, JTu, norms = scaled(vals, d, v, u, sp)
        np.testing.assert_allclose(Jv, (dense * d) @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(JTu, (dense * d).T @ u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(norms, np.linalg.norm(dense * d, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "operator", "host_operator"])
def test_right_scaled_products_match_dense(kind):
    """J diag(d) of the other stored forms: the dense matrix, a Jacobian applied by
    jax.linearize, a LinearOperator kept on the host; scaling twice composes."""
    rng = np.random.default_rng(4)
    m, n = 40, 25
    A = rng.standard_normal((m, n))
    row_scale = rng.uniform(0.5, 2.0, m)  # the loss's rescaling, stored with the operator
    d1, d2 = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)
    d1[3] = 0.0
    v, u = rng.standard_normal(n), rng.standard_normal(m)
    x = jnp.asarray(rng.standard_normal(n))
    if kind == "dense":
        J, fn = jnp.asarray(row_scale[:, None] * A), None
    elif kind == "operator":
        J, fn = jnp.asarray(row_scale), lambda x: jnp.asarray(A) @ x + jnp.sin(x[0])
    else:
        handle = HostOperatorJac(lambda x: aslinearoperator(A))(np.asarray(x))
        J, fn = jnp.concatenate([jnp.asarray(row_scale), jnp.asarray(handle)]), None
    Jd = row_scale[:, None] * A  # the dense J
    if kind == "operator":
        Jd[:, 0] += row_scale * np.cos(x[0])

    @jax.jit
    def products(J, d1, d2, v, u, x):
        op = JacobianOperator(kind, J, x, fn, None, m).right_scaled(d1)
        return op.matvec(v), op.rmatvec(u), op.right_scaled(d2).matvec(v), op.right_scaled(d2).rmatvec(u)

    Jv, JTu, Jv2, JTu2 = products(J, d1, d2, v, u, x)
    np.testing.assert_allclose(Jv, (Jd * d1) @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(JTu, (Jd * d1).T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Jv2, (Jd * d1 * d2) @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(JTu2, (Jd * d1 * d2).T @ u, rtol=1e-12, atol=1e-12)
