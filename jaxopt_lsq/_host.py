"""Calling a user's function: traced by JAX when it can be, through
:func:`jax.pure_callback` when it cannot (plain NumPy/Python code, as SciPy users write).

A function is *traceable* when :func:`equinox.filter_eval_shape` can run it on abstract
values. Anything else (``np.exp`` on a tracer, ``float(x[0])``, in-place assignment) is
called on the host: the solver stays a compiled ``while_loop``, and each evaluation
leaves the compiled code once. Finite differences are then the only way to get a
Jacobian, exactly as with SciPy.

``args``/``kwargs`` are split into array leaves (traced, so new data does not
recompile) and everything else (kept static, passed through unchanged).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_dynamic(leaf):
    """Leaves of ``args``/``kwargs`` that are traced: arrays, and Python floats (so that a
    SciPy-style loop over a float parameter does not recompile). Ints, bools, strings
    and other objects stay static: they are often shapes, indices or flags."""
    return eqx.is_array(leaf) or (isinstance(leaf, (float, complex)) and not isinstance(leaf, bool))


def _abstract(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) if is_dynamic(a) else a, tree
    )


_TRACEABLE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cache_key(x_struct, args, kwargs):
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    sig = []
    for leaf in leaves:
        if is_dynamic(leaf):
            sig.append(("a", np.shape(leaf), str(jnp.result_type(leaf))))
        else:
            try:
                hash(leaf)
                sig.append(("s", leaf))
            except TypeError:
                return None
    return (x_struct.shape, str(x_struct.dtype), treedef, tuple(sig))


def output_struct(fun, x_struct, args=(), kwargs=None):
    """``ShapeDtypeStruct`` of ``fun(x, *args, **kwargs)`` if JAX can trace ``fun``, else ``None``.

    Results are cached per function object and argument signature, so repeated calls of
    the facade do not re-trace the user's function.
    """
    kwargs = {} if kwargs is None else kwargs
    key = _cache_key(x_struct, args, kwargs)
    per_fun = None
    if key is not None:
        try:
            per_fun = _TRACEABLE_CACHE.setdefault(fun, {})
        except TypeError:  # not weak-referenceable (e.g. some builtins)
            per_fun = None
        if per_fun is not None and key in per_fun:
            return per_fun[key]
    try:
        out = eqx.filter_eval_shape(lambda x, a, k: fun(x, *a, **k), x_struct, _abstract(args), _abstract(kwargs))
        out = jax.tree_util.tree_map(lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype), out)
    except Exception:  # noqa: BLE001 - any failure to trace means "call it on the host"
        out = None
    if per_fun is not None:
        per_fun[key] = out
    return out


def is_tracer(*trees):
    """True when any leaf is a JAX tracer (we are inside a user's jit/vmap/grad)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


# Exceptions raised by a host function. An eager solve opens a scope: the first exception
# is recorded, later host calls of that solve return NaN at once, and the facade re-raises
# the user's own exception when the solve returns (SciPy's behaviour). Without a scope
# (inside a user's jax.jit) nothing can raise: the residuals are treated as non-finite
# and a RuntimeWarning says why. Eager solves are synchronous, so the innermost scope is
# the running solve.
_SCOPES: list = []


@contextlib.contextmanager
def reraise_host_errors():
    """Run an eager solve; afterwards re-raise the first exception a host function raised."""
    errors: list = []
    _SCOPES.append(errors)
    try:
        yield
    finally:
        _SCOPES.remove(errors)
    if errors:
        raise errors[0]


def run_user_callback(callback, *args, **kwargs):
    """Call a user's ``callback`` on the host; True when the solve should stop.

    ``StopIteration`` asks to stop (SciPy's rule). Any other exception also stops an
    eager solve, and the facade re-raises it when the solve returns, as SciPy would;
    inside a user's ``jax.jit`` it propagates (JAX reports it as a runtime error).
    """
    try:
        callback(*args, **kwargs)
    except StopIteration:
        return True
    except Exception as e:  # noqa: BLE001
        if not _SCOPES:
            raise
        _SCOPES[-1].append(e)
        return True
    return False


def intermediate_result(**fields):
    """What a callback ``callback(intermediate_result)`` receives: SciPy's
    ``OptimizeResult`` when SciPy is installed (so ``isinstance`` checks written for
    SciPy hold), else ours."""
    try:
        from scipy.optimize import OptimizeResult
    except Exception:  # pragma: no cover
        from ._result import OptimizeResult
    return OptimizeResult(**fields)


def host_call(fun, x, args, kwargs, out_shape, out_dtype, rows=False):
    """Evaluate a NumPy function inside a trace through :func:`jax.pure_callback`.

    ``x`` may be complex (complex-step differentiation); the result then has the
    complex dtype matching ``out_dtype``. With ``rows=True``, ``x`` is a stack of
    points ``(k, n)`` and ``fun`` is called on each row within one callback (one trip
    to the host for a whole finite-difference stencil); the result has shape
    ``(k, *out_shape)``.
    """
    dyn, static = eqx.partition((args, kwargs), is_dynamic)
    complex_in = jnp.issubdtype(x.dtype, jnp.complexfloating)
    dtype = jnp.result_type(out_dtype, jnp.complex64) if complex_in else out_dtype
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    out_shape = tuple(out_shape)

    def one(x_, a, k):
        out = fun(x_, *a, **k)
        out = out.toarray() if hasattr(out, "toarray") else out  # scipy.sparse -> dense
        return np.asarray(np.atleast_1d(np.asarray(out)), dtype=dtype).reshape(out_shape)

    def callback(x_, dyn_):
        x_ = np.asarray(x_)
        full_shape = ((x_.shape[0],) + out_shape) if rows else out_shape
        scope = _SCOPES[-1] if _SCOPES else None
        if scope:  # this solve already failed: stop calling the user's function
            return np.full(full_shape, np.nan, dtype)
        a, k = eqx.combine(dyn_, static)
        try:
            if rows:
                return np.stack([one(r, a, k) for r in x_]).reshape(full_shape)
            return one(x_, a, k)
        except Exception as e:  # noqa: BLE001 - re-raised by the eager facade
            if scope is not None:
                scope.append(e)
            else:
                warnings.warn(
                    f"{getattr(fun, '__name__', 'the function')} raised {e!r} inside a JAX transformation; "
                    "its output is treated as non-finite.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return np.full(full_shape, np.nan, dtype)

    shape = ((x.shape[0],) + out_shape) if rows else out_shape
    return jax.pure_callback(
        callback, jax.ShapeDtypeStruct(shape, dtype), x, dyn, vmap_method="sequential"
    )


class StaticArgs:
    """Hashable holder of the non-array leaves of ``(args, kwargs)``: part of the key of
    a compiled solve. Unhashable leaves are compared by identity."""

    def __init__(self, tree):
        self.leaves, self.treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda v: v is None)
        try:
            self._hash = hash((self.treedef, tuple(self.leaves)))
        except TypeError:
            self._hash = hash((self.treedef, tuple(id(v) for v in self.leaves)))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return (
            isinstance(other, StaticArgs)
            and self.treedef == other.treedef
            and len(self.leaves) == len(other.leaves)
            and all(a is b or (type(a) is type(b) and _safe_eq(a, b)) for a, b in zip(self.leaves, other.leaves))
        )

    def tree(self):
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)


def _safe_eq(a, b):
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


_FLAT_STATIC = {}


def split_data(args, kwargs):
    """``(args, kwargs)`` as traced data (array leaves; Python floats as NumPy scalars)
    and a :class:`StaticArgs` of everything else."""
    if not kwargs and all(isinstance(a, (np.ndarray, jax.Array)) for a in args):
        # The common case (arrays only, or nothing) without a pytree walk: the same result.
        k = len(args)
        static = _FLAT_STATIC.get(k)
        if static is None:
            static = _FLAT_STATIC.setdefault(k, StaticArgs(((None,) * k, {})))
        return (tuple(args), {}), static
    tree = (tuple(args), dict(kwargs))
    dyn, static = eqx.partition(tree, is_dynamic)
    dyn = jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, (float, complex)) else v, dyn)
    return dyn, StaticArgs(static)
