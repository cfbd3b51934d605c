"""``least_squares_batch``: the same model fitted to many datasets at once.

Three things a plain ``jax.vmap(least_squares)`` does not give:

* **a batch-first method** (``method="lm-normal"``, the default): Levenberg-Marquardt
  whose per-iteration linear algebra is the n x n normal equations, unrolled so that the
  batch is the vector dimension (:mod:`._solvers.normal_lm`). SciPy's ``'trf'``,
  ``'dogbox'`` and ``'lm'`` are available too and run exactly as ``least_squares`` runs
  them, fit by fit, under ``vmap``;
* **rounds with compaction** (``strategy="rounds"``): under ``vmap`` a ``while_loop``
  runs every fit until the slowest one is done (finished fits are frozen, but still
  computed). In rounds, the fits are advanced in chunks a few evaluations at a time
  and, between rounds, the fits still running are gathered (a stable partition, on the
  device) into the first chunks; only those chunks are advanced in the next round, so
  the cost follows the work each fit needs. All of it is one compiled program: it runs
  inside ``jax.jit`` and is differentiated like the plain solve;
* **devices**: the fits are laid out along a 1-D mesh of all local devices
  (``jax.sharding``) when there is more than one, and each device solves its share.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._host import is_tracer
from ._host import split_data as _split_data
from ._iterate import iterate_some
from ._least_squares import _FIELDS, _setup, build_solver
from ._result import OptimizeResult

_METHODS = ("lm-normal", "trf", "dogbox", "lm")
_STRATEGIES = ("rounds", "vmap")


def least_squares_batch(
    fun,
    x0,
    jac=None,
    bounds=(-np.inf, np.inf),
    method="lm-normal",
    ftol=1e-8,
    xtol=1e-8,
    gtol=1e-8,
    x_scale=None,
    loss="linear",
    f_scale=1.0,
    diff_step=None,
    max_nfev=None,
    args=(),
    kwargs=None,
    *,
    in_axes=0,
    kwargs_in_axes=0,
    strategy="rounds",
    round_steps=1,
    devices=None,
    chunk_size="auto",
):
    """Fit one model to many datasets: ``least_squares`` over a batch of independent fits.

    Each fit keeps its own state, tolerances tests, ``status`` and ``nfev``; a fit that
    has finished stops changing. The arguments are those of :func:`least_squares`
    with a leading batch axis where a fit has its own value::

        res = least_squares_batch(model_residuals, x0, args=(t, Y), in_axes=(None, 0))
        res.x        # (N, n): one row per fit
        res.status   # (N,)

    The one-line equivalent with plain ``vmap`` (same results for SciPy's methods; no
    rounds, no batch-first method, no automatic sharding) is::

        jax.vmap(lambda x0, y: least_squares(fun, x0, args=(t, y)).x)(X0, Y)

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs)`` for ONE fit: residuals of shape (m,). Should be
        JAX-traceable (a NumPy function works but is called on the host fit by fit).
    x0 : array_like, shape (N, n) or (n,)
        Starting points, one row per fit; a 1-D ``x0`` is shared by all fits (then the
        batch size comes from ``args``/``kwargs``). Its dtype is the working precision.
    jac, ftol, xtol, gtol, x_scale, loss, f_scale, diff_step, max_nfev
        As in :func:`least_squares`, shared by all fits. ``x_scale=None`` means 1,
        except for ``'lm'`` (``'jac'``, as in SciPy).
    bounds : 2-tuple or `Bounds`, optional
        Shared bounds (scalars or shape (n,)) or one row per fit (shape (N, n)).
    method : {'lm-normal', 'trf', 'dogbox', 'lm'}, optional
        ``'lm-normal'`` (default): Levenberg-Marquardt on the normal equations with an
        unrolled Cholesky factorisation, built for batches of small fits (n up to ~12;
        larger n works and uses a LAPACK Cholesky); supports bounds (Coleman-Li
        scaling, as ``trf``) and every loss. It squares the Jacobian's condition number:
        for ill-conditioned fits prefer ``'trf'``. ``'trf'``, ``'dogbox'``, ``'lm'``:
        SciPy's algorithms exactly as :func:`least_squares` runs them.
    args, kwargs : tuple and dict, optional
        Extra arguments of ``fun``. Arrays mapped by ``in_axes``/``kwargs_in_axes`` hold
        one slice per fit; the others are shared.
    in_axes, kwargs_in_axes : int, None, or a tuple/dict prefix, optional
        Which axis of each element of ``args`` (``kwargs``) is the batch axis, with
        :func:`jax.vmap`'s meaning (``None``: shared by all fits). Default 0.
    strategy : {'rounds', 'vmap'}, optional
        ``'rounds'`` (default): advance the fits ``round_steps`` evaluations at a time,
        chunk by chunk, and between rounds gather the fits still running into the first
        chunks, so that finished fits cost nothing. ``'vmap'``: one ``while_loop`` over
        the batch (or over each chunk, see ``chunk_size``); every fit of it runs until
        the slowest one is done. Same results, fit for fit; both work inside
        ``jax.jit`` and under ``jax.grad``.
    round_steps : int, optional
        Evaluations per round for ``strategy='rounds'`` while every chunk still has
        running fits (default 1: a round costs a partition of the batch and a gather of
        the running fits, less than the evaluations that longer rounds would spend on
        fits already done). When only k of the C chunks still run, rounds are
        ``C // k`` times longer.
    devices : sequence of jax.Device, optional
        Devices to spread the fits over (default: all local devices; one device means
        no sharding). The batch is padded to a multiple of the device count; with
        ``strategy='rounds'`` each device runs rounds over its own fits.
    chunk_size : 'auto', int or None, optional
        How many fits a vmapped loop advances together. ``strategy='vmap'`` on one
        device: solve the fits in consecutive chunks of this many (a ``lax.map`` over
        vmapped solves), so that a chunk's working set stays in the CPU's cache;
        ``'auto'``: 2048 on a CPU, the whole batch elsewhere. ``strategy='rounds'``: the
        size of the chunks that rounds advance and the granularity of their compaction;
        ``'auto'``: an eighth of the batch, within [256, 512] on a CPU and at least
        8192 elsewhere. ``None``: the whole batch. Results do not
        depend on it.

    Returns
    -------
    OptimizeResult
        The fields of :func:`least_squares` with a leading batch axis: ``x`` (N, n),
        ``cost`` (N,), ``fun`` (N, m), ``jac`` (N, m, n), ``grad``, ``optimality``,
        ``active_mask``, ``nfev``, ``njev``, ``status`` (N,), ``message`` (an array of N
        strings once concrete) and ``success`` (N,). Residuals that are not finite at a
        fit's ``x0`` give that fit status -4 (only that fit; SciPy's ``least_squares``
        raises for a single fit); a row of ``x0`` outside its bounds raises ValueError.

    Notes
    -----
    Differentiable like :func:`least_squares` (both strategies): ``jax.grad`` of a
    function of the solutions with respect to batched data gives per-fit gradients by
    implicit differentiation.

    With several processes (``jax.distributed``), pass global arrays sharded along the
    batch axis and ``devices=jax.devices()``; nothing else changes.

    See Also
    --------
    least_squares : one fit, SciPy's interface.

    References
    ----------
    .. [1] J. J. Moré, "The Levenberg-Marquardt Algorithm: Implementation and Theory",
       Numerical Analysis, Lecture Notes in Mathematics 630, Springer, 1977 (the
       trust-region form of ``'lm-normal'``).
    .. [2] M. A. Branch, T. F. Coleman, Y. Li, "A Subspace, Interior, and Conjugate
       Gradient Method for Large-Scale Bound-Constrained Minimization Problems", SIAM J.
       Sci. Comput. 21(1), 1999 (the bound handling shared with ``'trf'``).

    Examples
    --------
    Fit ``a + b exp(c t)`` to three noisy curves at once:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jaxopt_lsq import least_squares_batch
    >>> def fun(x, t, y):
    ...     return x[0] + x[1] * jnp.exp(x[2] * t) - y
    >>> t = np.linspace(0, 4, 30)
    >>> Y = np.stack([1 + 2 * np.exp(-k * t) for k in (0.5, 1.0, 2.0)])
    >>> res = least_squares_batch(fun, [1.0, 1.0, -1.0], args=(t, Y), in_axes=(None, 0))
    >>> res.x.shape, bool(res.success.all())
    ((3, 3), True)
    >>> np.round(np.asarray(res.x[:, 2], float), 3).tolist()
    [-0.5, -1.0, -2.0]
    """
    kwargs = {} if kwargs is None else dict(kwargs)
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}.")
    if strategy not in _STRATEGIES:
        raise ValueError(f"`strategy` must be one of {_STRATEGIES}.")
    if not isinstance(round_steps, int) or round_steps < 1:
        raise ValueError("`round_steps` must be a positive integer.")
    if chunk_size not in ("auto", None) and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError("`chunk_size` must be 'auto', None or a positive integer.")
    traced = is_tracer(x0, args, kwargs, bounds)

    # --- batch size and the first fit (for validation and the static configuration) ---
    xp = jnp if traced else np
    x0 = xp.asarray(x0)
    if x0.ndim not in (1, 2):
        raise ValueError("`x0` must have shape (N, n) (one row per fit) or (n,) (shared).")
    arg_axes = _leaf_axes(in_axes, args, "in_axes")
    kw_axes = _leaf_axes(kwargs_in_axes, kwargs, "kwargs_in_axes")
    sizes = {np.shape(leaf)[ax] for leaf, ax in _mapped(args, arg_axes) + _mapped(kwargs, kw_axes)}
    if x0.ndim == 2:
        sizes.add(x0.shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"The batch sizes of `x0` and of the mapped arrays of `args`/`kwargs` differ: {sorted(sizes)}."
            if sizes
            else "No batch axis: give `x0` of shape (N, n) or map an argument with `in_axes`."
        )
    N = sizes.pop()
    if N == 0:
        raise ValueError("The batch is empty.")
    # Every mapped leaf with its batch axis first, so rounds can gather along axis 0.
    args = _move_to_front(args, arg_axes)
    kwargs = _move_to_front(kwargs, kw_axes)
    if hasattr(bounds, "lb"):
        lb, ub = bounds.lb, bounds.ub
    elif len(bounds) == 2:
        lb, ub = bounds
    else:
        raise ValueError("`bounds` must contain 2 elements.")
    lb, ub = xp.asarray(lb), xp.asarray(ub)
    lb_ax = 0 if lb.ndim == 2 else None
    ub_ax = 0 if ub.ndim == 2 else None
    x0_ax = 0 if x0.ndim == 2 else None

    first = functools.partial(_take_first, traced)
    setup_method = "trf" if method == "lm-normal" else method
    prob = _setup(
        fun,
        first(x0, x0_ax),
        jac,
        (first(lb, lb_ax), first(ub, ub_ax)),
        setup_method,
        ftol,
        xtol,
        gtol,
        x_scale,
        loss,
        f_scale,
        diff_step,
        None,
        None,
        None,
        max_nfev,
        0,
        _first_tree(args, arg_axes, traced),
        _first_tree(kwargs, kw_axes, traced),
        None,
    )
    dtype = prob.x0.dtype
    n = prob.n
    if not traced:
        _check_batch_input(x0, lb, ub, n)
    x0 = jnp.broadcast_to(jnp.asarray(x0, dtype), (N, n)) if x0.ndim == 1 else jnp.asarray(x0, dtype)
    lb = jnp.asarray(lb, dtype) if lb_ax is not None else prob.theta[1]
    ub = jnp.asarray(ub, dtype) if ub_ax is not None else prob.theta[2]
    config = (method,) + prob.config[1:]
    dyn, static = _split_data(args, kwargs)
    if static != prob.config[3]:  # pragma: no cover - slicing never changes static leaves
        raise ValueError("The non-array arguments of `fun` must be shared by all fits.")
    if method == "lm-normal" and prob.kind != "dense":
        raise ValueError("method='lm-normal' needs a dense Jacobian; use method='trf' for sparse ones.")
    # (dyn, lb, ub, x_scale, f_scale, diff_step, f0, sparsity, lsmr_x0); f0 (the first fit's
    # residuals from a NumPy `fun`) does not belong to the other fits.
    theta = (dyn, lb, ub) + prob.theta[3:6] + (None,) + prob.theta[7:]
    axes = ((arg_axes_tree(arg_axes, args), arg_axes_tree(kw_axes, kwargs)), lb_ax, ub_ax) + (None,) * 6
    leaves, treedef = jax.tree_util.tree_flatten(axes, is_leaf=_is_none)
    program = _program(config, tuple(leaves), treedef)

    devices = list(jax.local_devices()) if devices is None else list(devices)
    if len(devices) > 1:
        x0, theta, mesh = _shard(x0, theta, axes, N, devices)
    if strategy == "rounds":
        chunk = _rounds_chunk(chunk_size, x0.shape[0] // len(devices), devices)
        if len(devices) > 1:
            # Each device runs rounds over its own fits.
            specs = jax.tree_util.tree_map(
                lambda ax, _: PartitionSpec("fits") if ax is not None else PartitionSpec(), axes, theta,
                is_leaf=_is_none,
            )
            fields = jax.shard_map(
                lambda x, th: program.solve_rounds(x, th, chunk, round_steps),
                mesh=mesh,
                in_specs=(PartitionSpec("fits"), specs),
                out_specs=PartitionSpec("fits"),
                # The solver mixes per-fit values with constants (unit tangents, ...)
                # that the varying-axes type check would reject; every fit is local.
                check_vma=False,
            )(x0, theta)
        else:
            fields = program.solve_rounds(x0, theta, chunk, round_steps)
    elif (chunk := _chunk_size(chunk_size, N, devices)):
        fields = program.solve_chunked(x0, theta, chunk)
    else:
        fields = program.solve(x0, theta)
    if len(devices) > 1:
        fields = {k: v[:N] for k, v in fields.items()}
    if not traced:
        fields = jax.device_get(fields)
    return OptimizeResult({k: fields[k] for k in _FIELDS})


# --- the compiled pieces, cached on the static configuration ------------------------
class _Program:
    """Jitted, vmapped solves of one configuration: the plain vmap (whole batch or
    in chunks) and the solve in rounds with compaction."""

    def __init__(self, config, axes):
        solver, data_of, _, solution, tangent = build_solver(config)
        solve = jax.vmap(solution, in_axes=(0, axes))
        self.solve = jax.jit(solve)

        def solve_chunked(x0, theta, chunk):
            # Fits in consecutive chunks (a scan over vmapped solves): on a CPU a chunk's
            # working set stays in cache, which a whole large batch does not.
            N = x0.shape[0]
            C = -(-N // chunk)
            batched = _select(theta, axes, mapped=True)
            shared = _select(theta, axes, mapped=False)
            xs = (_split(_pad(x0, C * chunk), C), jax.tree_util.tree_map(lambda a: _split(_pad(a, C * chunk), C), batched))

            def one(c):
                x0_c, batched_c = c
                return solve(x0_c, _merge(batched_c, shared, axes))

            out = jax.lax.map(one, xs)
            return jax.tree_util.tree_map(lambda a: a.reshape((C * chunk,) + a.shape[2:])[:N], out)

        self.solve_chunked = jax.jit(solve_chunked, static_argnums=2)

        def rounds(x0, theta, chunk, round_steps):
            """The solve in rounds (not differentiable by itself; see below)."""
            N = x0.shape[0]
            c = min(chunk, N)
            C = -(-N // c)
            Np = C * c
            # Padding fits copy the last one and never run.
            x0 = _pad(x0, Np)
            theta = jax.tree_util.tree_map(lambda ax, a: a if ax is None or a is None else _pad(a, Np), axes, theta,
                                           is_leaf=_is_none)
            init = jax.vmap(lambda x, th: solver.init(x, data_of(th)), in_axes=(0, axes))
            advance = jax.vmap(lambda st, k, th, more: iterate_some(solver, st, data_of(th), k, more),
                               in_axes=(0, 0, axes, None))
            terminated = jax.vmap(solver.terminate)

            def running(state, steps):
                return ~terminated(state) & (steps < solver.max_steps)

            state = init(x0, theta)
            steps = jnp.where(jnp.arange(Np) < N, 0, solver.max_steps).astype(jnp.int32)

            def one_round(carry):
                state, steps, run = carry
                # Running fits first (a stable partition, no sort), then the others.
                before = jnp.cumsum(run)
                count = before[-1]
                dest = jnp.where(run, before - 1, count + jnp.arange(Np) - before)
                order = jnp.zeros(Np, jnp.int32).at[dest].set(jnp.arange(Np, dtype=jnp.int32))

                # When few chunks still run, rounds get longer (a round's partition and
                # gathers then cost more than the evaluations they save).
                active = (count + c - 1) // c
                more = round_steps * jnp.maximum(1, C // jnp.maximum(active, 1))

                def one_chunk(j, carry):
                    state, steps = carry
                    ids = jax.lax.dynamic_slice(order, (j * c,), (c,))
                    sub_theta = jax.tree_util.tree_map(
                        lambda ax, a: a if ax is None or a is None else a[ids], axes, theta, is_leaf=_is_none
                    )
                    sub_state, sub_steps = advance(jax.tree_util.tree_map(lambda a: a[ids], state), steps[ids],
                                                   sub_theta, more)
                    state = jax.tree_util.tree_map(lambda a, b: a.at[ids].set(b, unique_indices=True), state,
                                                   sub_state)
                    return state, steps.at[ids].set(sub_steps, unique_indices=True)

                # Only the chunks that hold running fits are advanced.
                state, steps = jax.lax.fori_loop(0, active, one_chunk, (state, steps))
                return state, steps, running(state, steps)

            state, steps, _ = jax.lax.while_loop(lambda carry: jnp.any(carry[2]), one_round,
                                                 (state, steps, running(state, steps)))
            out = jax.vmap(lambda st, th: solver.postprocess(st, data_of(th)), in_axes=(0, axes))(state, theta)
            return {k: v[:N] for k, v in out.items()}

        @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
        def solve_rounds(x0, theta, chunk, round_steps):
            return rounds(x0, theta, chunk, round_steps)

        @solve_rounds.defjvp
        def solve_rounds_jvp(chunk, round_steps, primals, tangents):
            # Implicit differentiation, fit by fit, at the solutions the rounds found.
            x0, theta = primals
            _, dtheta = tangents
            out = rounds(x0, theta, chunk, round_steps)
            batched_tangent = functools.partial(tangent, batched=True)
            return out, jax.vmap(batched_tangent, in_axes=(0, axes, axes))(out, theta, dtheta)

        self.solve_rounds = jax.jit(solve_rounds, static_argnums=(2, 3))


@functools.lru_cache(maxsize=64)
def _program(config, axes_leaves, axes_treedef):
    return _Program(config, jax.tree_util.tree_unflatten(axes_treedef, axes_leaves))


def _pad(a, size):
    """``a`` with copies of its last row appended up to ``size`` rows."""
    if a.shape[0] == size:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], size - a.shape[0], axis=0)])


def _split(a, C):
    return a.reshape((C, a.shape[0] // C) + a.shape[1:])


def _rounds_chunk(chunk_size, N, devices):
    """Fits advanced together in a round. The chunk is also the granularity of the
    compaction, so it is a fraction of the batch (an eighth): on a CPU between 256 (below,
    the fixed cost of each operation dominates) and 512 (measured with bench_batched's
    workloads: 256-1024 within noise, 2048 slower); on accelerators, which want wide
    batches, at least 8192."""
    if chunk_size == "auto":
        eighth = -(-N // 8)
        chunk_size = min(max(eighth, 256), 512) if devices[0].platform == "cpu" else max(eighth, 8192)
    return min(chunk_size or N, N)


def _chunk_size(chunk_size, N, devices):
    if chunk_size == "auto":
        chunk_size = _CPU_CHUNK if devices[0].platform == "cpu" else None
    if chunk_size is None or len(devices) > 1 or N <= chunk_size:
        return None
    return chunk_size


# Measured on the 2-core CPU (bench_batched.py, 2-D Gaussians, N = 1e5): chunks of
# 2000 fits ran 1.7-3x faster than the whole batch at once.
_CPU_CHUNK = 2048


def _select(theta, axes, mapped):
    """The leaves of ``theta`` with (``mapped``) or without a batch axis; None elsewhere."""
    return jax.tree_util.tree_map(
        lambda ax, leaf: leaf if (ax is not None) == mapped else None, axes, theta, is_leaf=_is_none
    )


def _merge(batched, shared, axes):
    return jax.tree_util.tree_map(
        lambda ax, b, s: b if ax is not None else s, axes, batched, shared, is_leaf=_is_none
    )


# --- helpers for batch axes ------------------------------------------------------------
def _is_none(a):
    return a is None


def _leaf_axes(prefix, tree, name):
    """The batch axis (int or None) of every array leaf of ``tree``, from a vmap-style
    ``prefix`` (an int or None for everything, or a tuple/list/dict per element)."""
    if prefix is None or isinstance(prefix, int):
        return jax.tree_util.tree_map(lambda _: prefix, tree)
    if isinstance(prefix, dict) and isinstance(tree, dict):
        if set(prefix) - set(tree):
            raise ValueError(f"`{name}` names keys that are not in the arguments: {sorted(set(prefix) - set(tree))}.")
        return {k: _leaf_axes(prefix.get(k, 0), v, name) for k, v in tree.items()}
    if isinstance(prefix, (tuple, list)) and isinstance(tree, (tuple, list)):
        if len(prefix) != len(tree):
            raise ValueError(f"`{name}` has {len(prefix)} entries for {len(tree)} arguments.")
        return type(tree)(_leaf_axes(p, t, name) for p, t in zip(prefix, tree))
    raise ValueError(f"`{name}` must be an int, None, or a tuple/dict matching the arguments.")


def _mapped(tree, axes):
    """``(leaf, axis)`` for the mapped array leaves of ``tree``."""
    out = []

    def visit(ax, leaf):
        if ax is not None and hasattr(leaf, "shape"):
            if leaf.ndim <= ax:
                raise ValueError(f"A mapped argument of shape {leaf.shape} has no axis {ax}.")
            out.append((leaf, ax))

    jax.tree_util.tree_map(visit, axes, tree, is_leaf=_is_none)
    return out


def arg_axes_tree(axes, tree):
    """Axes of the leaves after ``_move_to_front`` (0 where mapped; None elsewhere or
    for non-array leaves)."""
    return jax.tree_util.tree_map(
        lambda ax, leaf: None if ax is None or not hasattr(leaf, "shape") else 0, axes, tree, is_leaf=_is_none
    )


def _move_to_front(tree, axes):
    return jax.tree_util.tree_map(
        lambda ax, leaf: leaf if ax is None or not hasattr(leaf, "shape") else jnp.moveaxis(jnp.asarray(leaf), ax, 0),
        axes,
        tree,
        is_leaf=_is_none,
    )


def _take_first(traced, a, ax):
    if ax is None:
        return a
    return a[0] if not traced else jax.lax.stop_gradient(a[0])


def _first_tree(tree, axes, traced):
    return jax.tree_util.tree_map(
        lambda ax, leaf: leaf if ax is None or not hasattr(leaf, "shape") else _take_first(traced, leaf, 0),
        axes,
        tree,
        is_leaf=_is_none,
    )


def _check_batch_input(x0, lb, ub, n):
    """SciPy's checks, for every fit (the first fit's already ran in `_setup`)."""
    x0 = np.asarray(x0)
    if x0.shape[-1] != n:
        raise ValueError("`x0` rows must all have the same length.")
    if not np.all(np.isfinite(x0)):
        raise ValueError("`x0` must be finite.")
    lb = np.broadcast_to(np.asarray(lb, float), x0.shape if lb.ndim == 2 else (n,))
    ub = np.broadcast_to(np.asarray(ub, float), x0.shape if ub.ndim == 2 else (n,))
    if np.any(lb >= ub):
        raise ValueError("Each lower bound must be strictly less than each upper bound.")
    if np.any((x0 < lb) | (x0 > ub)):
        raise ValueError("Initial guess is outside of provided bounds")


def _shard(x0, theta, axes, N, devices):
    """Pad the batch to a multiple of the device count and lay it out along the mesh."""
    mesh = Mesh(np.asarray(devices), ("fits",))
    d = len(devices)
    N_pad = -(-N // d) * d
    batched = NamedSharding(mesh, PartitionSpec("fits"))
    shared = NamedSharding(mesh, PartitionSpec())

    def put(a, ax):
        if a is None:
            return None
        if ax is None:
            return jax.device_put(a, shared)
        if N_pad > N:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], N_pad - N, axis=0)])
        return jax.device_put(a, batched)

    x0 = put(x0, 0)
    theta = jax.tree_util.tree_map(put, theta, axes, is_leaf=_is_none)
    return x0, theta, mesh
