"""Residual functions and their Jacobians: autodiff, finite differences, or user-given.

:class:`ResidualFunction` bundles a user's ``fun`` (and ``jac``) with how to call them
(traced or through the host) and how to differentiate them:

* ``jac=None`` (our default) -- forward-mode autodiff when ``m >= n``, reverse mode
  otherwise; ``'2-point'`` when ``fun`` cannot be traced (SciPy's default).
* ``'2-point'``, ``'3-point'``, ``'cs'`` -- finite differences with SciPy's step rules
  (``scipy.optimize._numdiff``): relative step ``eps**(1/2)`` (``eps**(1/3)`` for
  3-point) times ``max(1, |x|)``, or ``diff_step * |x|`` when given; steps flipped or
  shortened so that every evaluation point stays within the bounds. All ``n`` (or
  ``2n``) evaluation points are evaluated with one ``vmap`` of the function.
* a callable -- used as given (traced or through the host, like ``fun``).

Finite-difference evaluations are not counted in ``nfev``, as in SciPy's ``trf``.

How a Jacobian is *stored* (``ResidualFunction.kind``, static):

* ``'dense'``    -- the ``(m, n)`` matrix.
* ``'sparse'``   -- values ``(nnz,)`` over the fixed structure of a :class:`Sparsity`
  (``rows``, ``cols``, and a colouring of the columns), given as ``jac_sparsity`` or
  read from a NumPy ``jac`` that returns a ``scipy.sparse`` matrix. Finite differences
  make one evaluation per colour group (Curtis, Powell & Reid 1974), autodiff one
  ``jvp`` per colour (compressed forward mode); products are segment sums over the
  non-zeros. Memory O(nnz + m + n).
* ``'operator'`` -- nothing but a row scaling ``(m,)`` (the robust loss's): the
  Jacobian of a traceable ``fun`` is applied through ``jax.linearize`` and its transpose
  at the current point and never formed (``tr_solver='lsmr'`` without
  ``jac_sparsity``). Memory O(m + n) plus what ``fun``'s linearisation keeps.
* ``'host_operator'`` -- a NumPy ``jac`` returning a ``LinearOperator``: the operator
  stays on the host (:class:`HostOperatorJac` keeps it under a handle); the stored form
  is the row scaling followed by the handle, and products are host callbacks.

:class:`JacobianOperator` gives the three a common face (``matvec``, ``rmatvec``,
``@``, column norms, row scaling, column scaling by ``right_scaled``) for the
matrix-free trust-region solvers.
"""

from __future__ import annotations

import collections
import copy
import functools
import itertools
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._host import host_call

FD_METHODS = ("2-point", "3-point", "cs")


def relative_step(method, dtype):
    eps = jnp.finfo(dtype).eps
    return eps ** (1 / 3) if method == "3-point" else eps**0.5


def absolute_step(x, method, diff_step, abs_step=None):
    """SciPy's absolute finite-difference step (``_compute_absolute_step``).

    ``diff_step`` is a relative step (``least_squares``, ``finite_diff_rel_step``);
    ``abs_step`` an absolute one (``epsilon`` of ``fmin_l_bfgs_b``, ``eps`` of
    L-BFGS-B). Either falls back to the default where it does not change ``x``.
    """
    rstep = relative_step(method, x.dtype)
    sign_x = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    default = rstep * sign_x * jnp.maximum(1.0, jnp.abs(x))
    if abs_step is not None:
        h = jnp.broadcast_to(jnp.asarray(abs_step, x.dtype), x.shape)
    elif diff_step is not None:
        h = diff_step * sign_x * jnp.abs(x)
    else:
        return default
    dx = (x + h) - x
    return jnp.where(dx == 0, default, h)


def adjust_step_to_bounds(x, h, method, lb, ub):
    """SciPy's ``_adjust_scheme_to_bounds`` with one step: returns ``(h, one_sided)``."""
    lower_dist = x - lb
    upper_dist = ub - x
    if method == "2-point":
        violated = ((x + h) < lb) | ((x + h) > ub)
        fitting = jnp.abs(h) <= jnp.maximum(lower_dist, upper_dist)
        h = jnp.where(violated & fitting, -h, h)
        forward = (upper_dist >= lower_dist) & ~fitting
        backward = (upper_dist < lower_dist) & ~fitting
        h = jnp.where(forward, upper_dist, jnp.where(backward, -lower_dist, h))
        return h, jnp.ones_like(x, dtype=bool)
    # 3-point: central where it fits, one-sided (possibly shortened) otherwise.
    h = jnp.abs(h)
    central = (lower_dist >= h) & (upper_dist >= h)
    forward = (upper_dist >= lower_dist) & ~central
    backward = (upper_dist < lower_dist) & ~central
    h_adj = jnp.where(forward, jnp.minimum(h, 0.5 * upper_dist), h)
    h_adj = jnp.where(backward, -jnp.minimum(h, 0.5 * lower_dist), h_adj)
    one_sided = forward | backward
    min_dist = jnp.minimum(upper_dist, lower_dist)
    adjusted_central = ~central & (jnp.abs(h_adj) <= min_dist)
    h_adj = jnp.where(adjusted_central, min_dist, h_adj)
    one_sided = one_sided & ~adjusted_central
    return h_adj, one_sided


def fd_evaluations(method, n):
    """Function evaluations of one finite-difference Jacobian or gradient."""
    return 2 * n if method == "3-point" else n


def fd_points(x, method, diff_step, lb, ub, bounded, abs_step=None):
    """The points a finite-difference scheme evaluates, and what assembling needs.

    Returns ``(pts, one_sided)``: ``pts`` has ``n`` rows (``x + h_i e_i``; complex for
    ``'cs'``) or ``2n`` for ``'3-point'`` (``x - h_i e_i`` then ``x + h_i e_i`` where
    central, ``x + h_i e_i`` then ``x + 2 h_i e_i`` where one-sided).
    """
    n = x.shape[0]
    h = absolute_step(x, method, diff_step, abs_step)
    if method == "cs":
        xc = x.astype(jnp.result_type(x.dtype, jnp.complex64))
        return xc[None, :] + 1j * jnp.diag(h).astype(xc.dtype), None
    if bounded:
        h, one_sided = adjust_step_to_bounds(x, h, method, lb, ub)
    else:
        one_sided = jnp.full((n,), method == "2-point")
    eye = jnp.eye(n, dtype=x.dtype)
    if method == "2-point":
        return x[None, :] + eye * h[:, None], one_sided
    first = jnp.where(one_sided, h, -h)
    second = jnp.where(one_sided, 2 * h, h)
    p1 = x[None, :] + eye * first[:, None]
    p2 = x[None, :] + eye * second[:, None]
    return jnp.concatenate([p1, p2]), one_sided


def fd_assemble(x, f0, F, pts, one_sided, method):
    """The ``(m, n)`` Jacobian from the values ``F`` (one row per point of
    :func:`fd_points`) and ``f0`` at ``x``. A zero step (a variable fixed by equal
    bounds) gives a zero column."""
    n = x.shape[0]
    if method == "cs":
        h = jnp.diagonal(pts).imag
        return (F.imag / h[:, None]).T.astype(x.dtype)
    if method == "2-point":
        return _guarded_div(F - f0[None, :], (jnp.diagonal(pts) - x)[:, None]).T
    F1, F2 = F[:n], F[n:]
    d1, d2 = jnp.diagonal(pts[:n]), jnp.diagonal(pts[n:])
    dx = jnp.where(one_sided, d2 - x, d2 - d1)
    df = jnp.where(one_sided[:, None], -3.0 * f0[None, :] + 4 * F1 - F2, F2 - F1)
    return _guarded_div(df, dx[:, None]).T


def _guarded_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def fd_jacobian(fn, x, f0, method, diff_step, lb, ub, bounded, abs_step=None):
    """Finite-difference Jacobian of ``fn`` at ``x`` (``f0 = fn(x)``), shape ``(m, n)``.

    All points are evaluated by one ``vmap`` of ``fn``."""
    pts, one_sided = fd_points(x, method, diff_step, lb, ub, bounded, abs_step)
    return fd_assemble(x, f0, jax.vmap(fn)(pts), pts, one_sided, method)


def value_and_fd_grad_on_host(fun, x, args, kwargs, method, diff_step, lb, ub, bounded, abs_step=None):
    """``f(x)`` and the finite-difference gradient of a scalar NumPy ``fun``, evaluated
    on the host in one callback (two for ``'cs'``, where ``f(x)`` is taken at real
    ``x``): the stencil's points are made and the gradient assembled in JAX."""
    dtype = x.dtype
    pts, one_sided = fd_points(x, method, diff_step, lb, ub, bounded, abs_step)
    if method == "cs":
        f0 = host_call(fun, x, args, kwargs, (), dtype)
        F = host_call(fun, pts, args, kwargs, (), dtype, rows=True)
    else:
        F = host_call(fun, jnp.concatenate([x[None, :], pts]), args, kwargs, (), dtype, rows=True)
        f0, F = F[0], F[1:]
    g = fd_assemble(x, f0[None], F[:, None], pts, one_sided, method)[0]
    return f0, g


class Sparsity(eqx.Module):
    """A Jacobian's structure (data, built on the host by :mod:`jaxopt_lsq._sparsity`):
    non-zeros at ``(rows[k], cols[k])`` in row-major order, and a colouring of the
    columns into ``n_colours`` groups of columns with no common row."""

    rows: jax.Array  # int32 (nnz,)
    cols: jax.Array  # int32 (nnz,)
    colour: jax.Array  # int32 (n,)
    n_colours: int = eqx.field(static=True)
    # How products read the values (see JacobianOperator): by diagonals (slots of
    # _sparsity.dia_layout, and their static offsets), else by the padded slot tables
    # (row_slots, row_cols, col_slots, col_rows) of _sparsity.ell_layout, else (both
    # None) by segment sums.
    dia: Any = None
    ell: Any = None
    dia_offsets: tuple = eqx.field(static=True, default=())

    def seeds(self, dtype, first=0, count=None):
        """``(count, n)`` 0/1 matrix: row ``c`` marks the columns of colour ``first + c``."""
        count = self.n_colours if count is None else count
        ids = first + jnp.arange(count, dtype=self.colour.dtype)
        return (self.colour[None, :] == ids[:, None]).astype(dtype)

    def gather(self, compressed):
        """Values of the non-zeros from a compressed Jacobian ``(n_colours, m)``:
        entry ``(i, j)`` is row ``i`` of the product with the seed of ``j``'s colour."""
        return compressed[self.colour[self.cols], self.rows]

    def chunk(self, m, n):
        """How many colours to evaluate at once: all of them unless that would need
        much more memory than the structure itself (a nearly dense row makes many
        colours); then chunks, so that memory stays O(nnz + m + n)."""
        budget = 8 * (self.rows.shape[0] + m + n)
        return max(1, min(self.n_colours, budget // (m + n)))

    def values_by_colour(self, compressed_of, m, n):
        """Values of the non-zeros from ``compressed_of(first, count) -> tuple of
        (count, m) arrays`` (products with the seeds of colours ``first ..
        first + count - 1``); returns one ``(nnz,)`` array per output."""
        k = self.n_colours
        size = self.chunk(m, n)
        if size >= k:
            return tuple(self.gather(F) for F in compressed_of(0, k))
        entry_colour = self.colour[self.cols]

        def body(i, vals):
            first = i * size
            local = entry_colour - first
            inside = (local >= 0) & (local < size)
            idx = jnp.clip(local, 0, size - 1)
            return tuple(jnp.where(inside, F[idx, self.rows], v) for F, v in zip(compressed_of(first, size), vals))

        shapes = jax.eval_shape(lambda: compressed_of(0, size))
        zeros = tuple(jnp.zeros(self.rows.shape, o.dtype) for o in shapes)
        return lax.fori_loop(0, -(-k // size), body, zeros)


def sparse_fd_values(fn, x, f0, method, diff_step, sp, lb, ub, bounded, on_host_rows=None):
    """Finite-difference values of a sparse Jacobian: one evaluation of ``fn`` per
    colour (two for ``'3-point'``), with SciPy's steps and bound handling per column.

    ``on_host_rows``: evaluates a stack of points in one host trip (NumPy ``fun``);
    otherwise the points are evaluated by one ``vmap`` of ``fn``.
    """
    evaluate = on_host_rows if on_host_rows is not None else jax.vmap(fn)
    m, n = f0.shape[0], x.shape[0]
    h = absolute_step(x, method, diff_step)
    rows, cols = sp.rows, sp.cols
    if method == "cs":
        xc = x.astype(jnp.result_type(x.dtype, jnp.complex64))

        def imag_parts(first, count):
            E = sp.seeds(x.dtype, first, count)
            return (evaluate(xc[None, :] + 1j * (E * h).astype(xc.dtype)).imag,)

        (F,) = sp.values_by_colour(imag_parts, m, n)
        return (F / h[cols]).astype(x.dtype)
    if bounded:
        h, one_sided = adjust_step_to_bounds(x, h, method, lb, ub)
    else:
        one_sided = jnp.full(x.shape, method == "2-point")
    if method == "2-point":
        (F,) = sp.values_by_colour(lambda first, count: (evaluate(x[None, :] + sp.seeds(x.dtype, first, count) * h),), m, n)
        dx = (x + h) - x
        return _guarded_div(F - f0[rows], dx[cols])
    first_step = jnp.where(one_sided, h, -h)
    second_step = jnp.where(one_sided, 2 * h, h)

    def both(first, count):
        E = sp.seeds(x.dtype, first, count)
        F = evaluate(jnp.concatenate([x[None, :] + E * first_step, x[None, :] + E * second_step]))
        return F[:count], F[count:]

    F1, F2 = sp.values_by_colour(both, m, n)
    p1, p2 = x + first_step, x + second_step
    os = one_sided[cols]
    dx = jnp.where(one_sided, p2 - x, p2 - p1)[cols]
    df = jnp.where(os, -3.0 * f0[rows] + 4 * F1 - F2, F2 - F1)
    return _guarded_div(df, dx)


def sparse_jvp_values(fn, x, sp, m):
    """Values of a sparse Jacobian by compressed forward mode: one ``jvp`` per colour
    (vmapped), then each non-zero read off its colour's product."""
    _, lin = jax.linearize(fn, x)
    (vals,) = sp.values_by_colour(lambda first, count: (jax.vmap(lin)(sp.seeds(x.dtype, first, count)),), m, x.shape[0])
    return vals


class JacobianOperator:
    """The Jacobian at ``x`` as a linear operator, whatever its storage (built inside a
    trace; not a pytree). ``J`` is the stored form: the matrix (``'dense'``), the values
    (``'sparse'``; ``None`` once :meth:`right_scaled` has scaled a layout of them) or
    the row scaling (``'operator'``)."""

    def __init__(self, kind, J, x, fn, sp, m):
        self.kind, self.J, self.sp, self.m = kind, J, sp, m
        self.n = x.shape[0]
        self._col_scale = None  # the matrix-free kinds' d of right_scaled
        if kind == "operator":
            _, self._lin = jax.linearize(fn, x)
            self._lin_t = jax.linear_transpose(self._lin, x)
        # A sparse Jacobian's values are laid out once per operator so that every
        # product gathers instead of scattering (XLA's scatter, which segment_sum
        # becomes, is several times slower on a CPU): by diagonals for a banded
        # structure (products are shifted vectors, no index arrays), else in padded
        # slot tables (a few gathers and a sum over the slots).
        self._dia = self._ell = None
        if kind == "sparse" and (sp.dia is not None or sp.ell is not None):
            vals = jnp.concatenate([J, jnp.zeros((1,), J.dtype)])  # slot nnz: padding
            if sp.dia is not None:
                self._dia = vals[sp.dia]
            else:
                row_slots, row_cols, col_slots, col_rows = sp.ell
                self._ell = (vals[row_slots], row_cols, vals[col_slots], col_rows)

    @property
    def shape(self):
        return (self.m, self.n)

    def right_scaled(self, d):
        """``J diag(d)`` as an operator (``d`` of shape ``(n,)``), for the scaled
        variables of the trust-region solvers. A stored matrix has its columns scaled
        once here, so that the products then cost what ``J``'s do (an LSMR solve makes
        two per iteration); the matrix-free kinds scale the vectors instead
        (``J (d v)`` and ``d (J^T u)``)."""
        new = copy.copy(self)
        if self.kind == "dense":
            new.J = self.J * d
        elif self.kind == "sparse" and self._dia is not None:
            # _dia[k, i] is the entry (i, i + offsets[k]): it takes d[i + offsets[k]].
            new._dia = self._dia * jnp.stack([_shift(d, o, self.m) for o in self.sp.dia_offsets])
            new.J = None  # products read the layout only
        elif self.kind == "sparse" and self._ell is not None:
            row_vals, row_cols, col_vals, col_rows = self._ell
            new._ell = (row_vals * d[row_cols], row_cols, col_vals * d, col_rows)
            new.J = None
        elif self.kind == "sparse":
            new.J = self.J * d[self.sp.cols]
        else:
            new._col_scale = d if self._col_scale is None else self._col_scale * d
        return new

    def matvec(self, v):
        if self.kind == "dense":
            return self.J @ v
        if self.kind == "sparse":
            if self._dia is not None:
                return sum(d * _shift(v, o, self.m) for d, o in zip(self._dia, self.sp.dia_offsets))
            if self._ell is not None:
                return _sum_slots(self._ell[0], v, self._ell[1])
            return jax.ops.segment_sum(self.J * v[self.sp.cols], self.sp.rows, self.m, indices_are_sorted=True)
        if self._col_scale is not None:
            v = self._col_scale * v
        if self.kind == "host_operator":
            m = self.m
            return self.J[:m] * host_call(apply_host_operator, v, (self.J[m:], False), {}, (m,), v.dtype)
        return self.J * self._lin(v)

    __matmul__ = matvec

    def rmatvec(self, u):
        if self.kind == "dense":
            return self.J.T @ u
        if self.kind == "sparse":
            if self._dia is not None:
                return sum(_shift(d * u, -o, self.n) for d, o in zip(self._dia, self.sp.dia_offsets))
            if self._ell is not None:
                return _sum_slots(self._ell[2], u, self._ell[3])
            return jax.ops.segment_sum(self.J * u[self.sp.rows], self.sp.cols, self.n)
        if self.kind == "host_operator":
            m = self.m
            out = host_call(apply_host_operator, self.J[:m] * u, (self.J[m:], True), {}, (self.n,), u.dtype)
        else:
            out = self._lin_t(self.J * u)[0]
        return out if self._col_scale is None else self._col_scale * out

    def col_norms(self):
        """Euclidean norms of the columns (not available matrix-free)."""
        if self.kind == "dense":
            return jnp.sqrt(jnp.sum(self.J**2, axis=0))
        if self._dia is not None:
            return jnp.sqrt(sum(_shift(d * d, -o, self.n) for d, o in zip(self._dia, self.sp.dia_offsets)))
        if self._ell is not None:
            return jnp.sqrt(_sum_slots(self._ell[2], self._ell[2]))
        return jnp.sqrt(jax.ops.segment_sum(self.J**2, self.sp.cols, self.n))


def _shift(v, offset, size):
    """``w[i] = v[i + offset]`` for ``i`` in ``0 .. size - 1``, zero outside ``v``
    (static slices and padding, which XLA fuses into the consumer)."""
    lo, hi = max(0, -offset), max(0, offset + size - v.shape[0])
    start = offset + lo
    return jnp.pad(v, (lo, hi))[start : start + size]


def _sum_slots(values, v, index=None):
    """``sum_k values[k] * v[index[k]]`` over the slots ``k`` of a padded table
    (``v`` itself when ``index`` is None); unrolled for narrow tables, so that XLA
    fuses the whole product into one loop."""
    terms = v if index is None else v[index]
    if values.shape[0] > 16:
        return jnp.sum(values * terms, axis=0)
    out = values[0] * terms[0]
    for k in range(1, values.shape[0]):
        out = out + values[k] * terms[k]
    return out


def scale_rows(kind, J, s, sp):
    """``diag(s) J`` in the stored form ``kind``."""
    if kind == "dense":
        return J * s[:, None]
    if kind == "sparse":
        return J * s[sp.rows]
    if kind == "host_operator":
        return jnp.concatenate([J[: s.shape[0]] * s, J[s.shape[0]:]])
    return J * s


# LinearOperators returned by a NumPy jac, by handle (the most recent ones: a solve only
# ever uses the operator of its current point).
_HOST_OPERATORS: "collections.OrderedDict" = collections.OrderedDict()
_HANDLES = itertools.count()


class HostOperatorJac:
    """A NumPy ``jac`` that returns a ``LinearOperator``: called on the host, it keeps
    the operator there and returns its handle (a small integer, exact in float32)."""

    def __init__(self, jac):
        self.jac = jac

    def __call__(self, x, *args, **kwargs):
        op = self.jac(x, *args, **kwargs)
        handle = next(_HANDLES) % (1 << 20)
        _HOST_OPERATORS[handle] = op
        while len(_HOST_OPERATORS) > 64:
            _HOST_OPERATORS.popitem(last=False)
        return np.array([handle], dtype=float)

    def __hash__(self):
        return hash(("host_operator", self.jac))

    def __eq__(self, other):
        return isinstance(other, HostOperatorJac) and other.jac is self.jac


def host_operator(handle):
    """The ``LinearOperator`` stored under ``handle``."""
    return _HOST_OPERATORS[int(round(float(np.ravel(handle)[0])))]


def apply_host_operator(v, handle, transpose):
    """``A @ v`` or ``A.T @ v`` on the host, for the operator stored under ``handle``."""
    op = host_operator(handle)
    return op.rmatvec(v) if transpose else op.matvec(v)


class ResidualFunction(eqx.Module):
    """A user's residual function with everything needed to evaluate and differentiate it.

    All fields are static: two solves with the same ``ResidualFunction`` share one
    compilation. Data reach the function through ``args``/``kwargs`` at call time.
    """

    fun: Callable = eqx.field(static=True)
    jac: Any = eqx.field(static=True)  # None (autodiff), an FD method name, or a callable
    fun_on_host: bool = eqx.field(static=True)
    jac_on_host: bool = eqx.field(static=True)
    m: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)
    kind: str = eqx.field(static=True, default="dense")  # 'dense', 'sparse', 'operator', 'host_operator'

    def __call__(self, x, args, kwargs):
        return self._fn(args, kwargs)(x).astype(self.dtype)

    def _fn(self, args, kwargs):
        if self.fun_on_host:
            return lambda x: host_call(self.fun, x, args, kwargs, (self.m,), self.dtype)
        return lambda x: jnp.atleast_1d(self.fun(x, *args, **kwargs))

    def jacobian(self, x, f, args, kwargs, lb, ub, diff_step, sp=None):
        """The Jacobian at ``x`` in the stored form of ``self.kind`` (see the module
        docstring); ``f`` is the residual vector at ``x``, ``sp`` the :class:`Sparsity`."""
        n = x.shape[0]
        if self.kind == "operator":
            return jnp.ones((self.m,), self.dtype)  # the row scaling of the loss, later
        if callable(self.jac):
            if self.kind == "host_operator":
                # A NumPy jac returning a LinearOperator: it stays on the host; the
                # stored form is the loss's row scaling and the operator's handle.
                handle = host_call(self.jac, x, args, kwargs, (1,), self.dtype)
                return jnp.concatenate([jnp.ones((self.m,), self.dtype), handle])
            if self.kind == "sparse":
                # A NumPy jac returning scipy.sparse: its values on the structure.
                return host_call(self.jac, x, args, kwargs, (sp.rows.shape[0],), self.dtype)
            if self.jac_on_host:
                J = host_call(self.jac, x, args, kwargs, (self.m, n), self.dtype)
            else:
                J = jnp.asarray(self.jac(x, *args, **kwargs))
            return jnp.reshape(J, (self.m, n)).astype(self.dtype)
        fn = self._fn(args, kwargs)
        if self.kind == "sparse":
            if self.jac in FD_METHODS:
                rows_eval = None
                if self.fun_on_host:  # the whole stencil in one trip to the host
                    rows_eval = functools.partial(host_call, self.fun, args=args, kwargs=kwargs,
                                                  out_shape=(self.m,), out_dtype=self.dtype, rows=True)
                vals = sparse_fd_values(fn, x, f, self.jac, diff_step, sp, lb, ub, self.bounded, rows_eval)
            else:
                vals = sparse_jvp_values(fn, x, sp, self.m)
            return vals.astype(self.dtype)
        if self.jac in FD_METHODS:
            return fd_jacobian(fn, x, f, self.jac, diff_step, lb, ub, self.bounded).astype(self.dtype)
        J = jax.jacfwd(fn)(x) if self.m >= n else jax.jacrev(fn)(x)
        return J.astype(self.dtype)

    def operator(self, J, x, args, kwargs, sp=None):
        """The stored Jacobian ``J`` at ``x`` as a :class:`JacobianOperator`."""
        fn = self._fn(args, kwargs) if self.kind == "operator" else None
        return JacobianOperator(self.kind, J, x, fn, sp, self.m)


class SparseJacobian(eqx.Module):
    """A sparse Jacobian as ``least_squares`` returns it: the values ``data`` of the
    non-zeros at ``(rows, cols)``, shape ``(m, n)``. A JAX pytree (it can leave
    ``jax.jit`` and be batched by ``jax.vmap``)."""

    data: jax.Array
    rows: jax.Array
    cols: jax.Array
    shape: tuple = eqx.field(static=True)

    @property
    def nnz(self):
        return self.data.shape[-1]

    def matvec(self, v):
        """``J @ v``."""
        return jax.ops.segment_sum(self.data * jnp.asarray(v)[self.cols], self.rows, self.shape[0])

    def rmatvec(self, u):
        """``J.T @ u``."""
        return jax.ops.segment_sum(self.data * jnp.asarray(u)[self.rows], self.cols, self.shape[1])

    def __matmul__(self, v):
        return self.matvec(v)

    def toarray(self):
        """The dense ``(m, n)`` matrix (O(m n) memory)."""
        return jnp.zeros(self.shape, self.data.dtype).at[self.rows, self.cols].set(self.data)

    def to_scipy(self):
        """A ``scipy.sparse.csr_array`` (imports SciPy)."""
        import numpy as np
        import scipy.sparse

        return scipy.sparse.csr_array((np.asarray(self.data), (np.asarray(self.rows), np.asarray(self.cols))), shape=self.shape)


class JacobianLinearOperator(eqx.Module):
    """The Jacobian of a traceable ``fun`` at the solution ``x``, never formed: what
    ``least_squares`` returns as ``jac`` with ``tr_solver='lsmr'`` and autodiff (SciPy
    returns a ``LinearOperator`` in the matching case). Products are computed by
    ``jax.jvp``/``jax.vjp`` of ``fun`` (rows scaled for a robust loss, like SciPy's
    ``jac``); ``toarray()`` forms the matrix on request. A JAX pytree."""

    x: jax.Array
    row_scale: jax.Array
    dyn: Any  # array leaves of (args, kwargs)
    residuals: Any = eqx.field(static=True)  # the ResidualFunction
    static: Any = eqx.field(static=True)  # the other leaves of (args, kwargs)

    def _fn(self):
        args, kwargs = eqx.combine(self.dyn, self.static.tree())
        return self.residuals._fn(args, kwargs)

    @property
    def shape(self):
        return (self.row_scale.shape[-1], self.x.shape[-1])

    @property
    def dtype(self):
        return self.x.dtype

    def matvec(self, v):
        """``J @ v`` (one ``jax.jvp`` of ``fun``)."""
        return self.row_scale * jax.jvp(self._fn(), (self.x,), (jnp.asarray(v, self.x.dtype),))[1]

    def rmatvec(self, u):
        """``J.T @ u`` (one ``jax.vjp`` of ``fun``)."""
        _, vjp = jax.vjp(self._fn(), self.x)
        return vjp(self.row_scale * jnp.asarray(u, self.x.dtype))[0]

    def __matmul__(self, v):
        return self.matvec(v)

    def toarray(self):
        """The dense ``(m, n)`` matrix (forward-mode autodiff; O(m n) memory)."""
        return self.row_scale[:, None] * jax.jacfwd(self._fn())(self.x)
