"""Status codes, messages and the `OptimizeResult` pytree.

Inside a trace a solver can only report *numbers*: each solver's state carries an
integer ``status``.  Strings live here, on the host, and are looked up from the status
when (and only when) the status is a concrete value.  That is why ``message`` is derived
rather than stored: a result returned out of a user's ``jax.jit`` gains its message the
moment JAX rebuilds it with concrete arrays.
"""

from __future__ import annotations

import numpy as np
import jax

# Status used inside the loop while a solver is still iterating. Never returned.
RUNNING = -100

# least_squares: SciPy's codes (-2..4) plus codes that only our traced/JAX-native
# use can produce (SciPy raises an exception instead, which a trace cannot do).
LEAST_SQUARES_MESSAGES = {
    -5: "Initial guess is outside of provided bounds",
    -4: "Residuals are not finite in the initial point.",
    -3: "Stopped because the Jacobian is not finite at the current point.",
    -2: "Stopped because `callback` function raised `StopIteration` or returned `True`",
    -1: "Improper input parameters status returned from `leastsq`",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


def _success_positive(status):
    return status > 0



# Each kind of result names its message table and success rule. Kept in a registry so
# the pytree's static data is a short hashable string.
_KINDS = {
    "least_squares": (LEAST_SQUARES_MESSAGES, _success_positive),
}


# Optional per-kind field that selects the message when it is not ``status`` itself
# (L-BFGS-B reports SciPy's coarse ``warnflag`` as ``status`` but has one message per
# stopping rule).
_MESSAGE_KEYS = {}


def register_result_kind(name, messages, success_rule, message_key="status"):
    """Register a message table and success rule for a solver family.

    ``message_key`` names the integer field whose value indexes ``messages``
    (default ``"status"``); ``success`` is always derived from ``status``.
    """
    _KINDS[name] = (messages, success_rule)
    _MESSAGE_KEYS[name] = message_key


def _is_concrete_array(a):
    if isinstance(a, (np.ndarray, np.generic, int)):
        return True
    if isinstance(a, jax.Array):
        try:
            return a.is_fully_addressable and not isinstance(a, jax.core.Tracer)
        except Exception:  # pragma: no cover - defensive
            return False
    return False


def _host_value(a):
    """``a`` as NumPy when it is a concrete array (one device-to-host read), else ``None``."""
    if isinstance(a, (np.ndarray, np.generic)):
        return a
    if isinstance(a, int):
        return np.asarray(a)
    if not isinstance(a, jax.Array) or isinstance(a, jax.core.Tracer):
        return None
    try:
        return np.asarray(a)
    except Exception:  # not fully addressable (multi-process arrays)
        return None


def _messages_of(kind, s):
    """Messages for the NumPy status ``s`` (one per fit when batched)."""
    messages = _KINDS[kind][0]
    if s.ndim == 0:
        return messages.get(int(s), f"Unknown status {int(s)}.")
    # Batched results (from jax.vmap): one message per fit.
    flat = [messages.get(int(v), f"Unknown status {int(v)}.") for v in s.ravel()]
    return np.array(flat, dtype=object).reshape(s.shape)


def _message_for(kind, status):
    """Host-side message lookup; ``None`` when ``status`` is not a concrete array."""
    s = _host_value(status)
    return None if s is None else _messages_of(kind, s)


def _success_for(kind, status, host=None):
    """``success`` from ``status``: NumPy when ``status`` is concrete (``host``: its NumPy
    value when already read), else the traced comparison."""
    rule = _KINDS[kind][1]
    if isinstance(status, int):
        return bool(rule(status))
    if status is None or not hasattr(status, "dtype"):
        return None
    if host is None:
        host = _host_value(status)
    if host is not None:
        # Computed on the host: a JAX comparison here would be one more dispatch
        # (several microseconds) every time a result leaves `jit`.
        return np.asarray(rule(host))
    return rule(status)


class OptimizeWarning(UserWarning):
    """A fit's result may not be what was asked for: covariance that cannot be
    estimated (``curve_fit``), unknown solver options (``minimize``). The counterpart
    of ``scipy.optimize.OptimizeWarning``, also a ``UserWarning``; every warning of this
    kind that the package issues has this one class."""


@jax.tree_util.register_pytree_node_class
class OptimizeResult(dict):
    """The result of an optimisation: a dict with attribute access and a JAX pytree.

    Field names and meanings follow :class:`scipy.optimize.OptimizeResult` for each
    solver. Array fields are pytree leaves, so a result can be returned from
    ``jax.jit`` and batched by ``jax.vmap``. ``message`` and ``success`` are derived from
    ``status``: ``message`` is a string once ``status`` is concrete (an array of strings
    for a batched result, ``None`` while tracing); ``success`` is an array that also
    works inside a trace.

    Attributes
    ----------
    x : ndarray
        The solution.
    success : bool
        Whether the solver reports convergence (``status > 0`` for
        ``least_squares``, ``status == 0`` for L-BFGS-B, as in SciPy).
    status : int
        The termination code; its meaning is solver-specific (see
        :func:`least_squares` and :func:`minimize`).
    message : str
        The description of ``status`` (SciPy's wording).
    fun, jac, nfev, njev, nit
        The value(s) of the objective (residuals for ``least_squares``), its Jacobian
        or gradient, and the counters, where the solver defines them.
    cost, grad, optimality, active_mask
        ``least_squares`` only, as in SciPy.
    hess_inv, task_code
        L-BFGS-B only: the :class:`LbfgsInvHessProduct` and the integer behind
        ``message``.

    Notes
    -----
    Only fields that exist are present: ``res.keys()`` lists them. Results of eager calls
    hold NumPy arrays and Python ints (as SciPy's); inside a JAX transformation they hold
    JAX arrays.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxopt_lsq import least_squares
    >>> def fun(x):
    ...     return x - jnp.array([1.0, 2.0])
    >>> res = least_squares(fun, np.zeros(2))
    >>> res.message == res["message"]
    True
    >>> batched = jax.vmap(lambda x0: least_squares(fun, x0))(jnp.zeros((4, 2)))
    >>> batched.x.shape, batched.status.shape
    ((4, 2), (4,))
    """

    _DERIVED = ("message", "success")

    def __init__(self, *args, _kind="least_squares", **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_kind", _kind)
        self._derive()

    def _derive(self):
        if "status" in self:
            status = dict.__getitem__(self, "status")
            key = _MESSAGE_KEYS.get(self._kind, "status")
            code = dict.__getitem__(self, key) if key in self else status
            host = _host_value(status)
            host_code = host if code is status else _host_value(code)
            dict.__setitem__(self, "message", None if host_code is None else _messages_of(self._kind, host_code))
            dict.__setitem__(self, "success", _success_for(self._kind, status, host))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __repr__(self):
        if not self:
            return self.__class__.__name__ + "()"
        width = max(map(len, self.keys())) + 1
        lines = []
        for k, v in self.items():
            text = repr(v) if not isinstance(v, str) else v
            text = text.replace("\n", "\n" + " " * (width + 2))
            lines.append(f"{k.rjust(width)}: {text}")
        return "\n".join(lines)

    def __dir__(self):
        return list(self.keys())

    # --- pytree protocol -------------------------------------------------------------
    def tree_flatten(self):
        # Runs at every `block_until_ready` and every `jit` boundary: kept lean.
        derived = self._DERIVED
        items = [kv for kv in dict.items(self) if kv[0] not in derived]
        return tuple([v for _, v in items]), (tuple([k for k, _ in items]), self._kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        keys, kind = aux
        out = cls.__new__(cls)
        dict.__init__(out, zip(keys, children))
        object.__setattr__(out, "_kind", kind)
        try:
            out._derive()
        except Exception:
            # JAX sometimes rebuilds pytrees with placeholder leaves (None, object(),
            # axis specs); derived fields are meaningless then.
            dict.__setitem__(out, "message", None)
            dict.__setitem__(out, "success", None)
        return out
