"""Test-only reference implementations of L-BFGS-B kernels (NumPy, sequential)."""

import numpy as np

from jaxopt_lsq._kernels import lbfgsb as K


def cauchy_point_reference(x, g, lower, upper, mem: K.Memory, M):
    """Breakpoint-by-breakpoint Cauchy point (Algorithm CP of BLNZ 1995) in NumPy.

    A plain sequential transcription (one breakpoint at a time, as the Fortran
    ``cauchy`` routine walks them) used to test the vectorised
    :func:`jaxopt_lsq._kernels.lbfgsb.cauchy_point`.
    """
    x, g, lower, upper = (np.asarray(a, np.float64) for a in (x, g, lower, upper))
    M = np.asarray(M, np.float64)
    theta = float(mem.theta)
    scale = np.asarray(K.w_scale(mem), np.float64)
    Wt = np.asarray(mem.buf, np.float64) * scale[:, None]  # rows of W^T
    t = np.asarray(K.breakpoints(x, g, lower, upper), np.float64)
    d = np.where(t > 0, -g, 0.0)
    p = Wt @ d
    c = np.zeros_like(p)
    f1 = -d @ d
    f2 = theta * (d @ d) - p @ M @ p
    f2_org = f2
    xc = x.copy()
    if f1 >= 0:
        return xc, c, t > 0, 0.0
    bnded = not np.any((t > 0) & np.isinf(t) & (d != 0))
    order = [i for i in np.argsort(t, kind="stable") if 0 < t[i] < np.inf]
    told = 0.0
    dtm = -f1 / f2
    tsum = 0.0
    passed = np.zeros(x.shape, bool)
    k = 0
    while k < len(order):
        b = order[k]
        dt = t[b] - told
        if dtm < dt:
            break
        # pass breakpoint b
        tsum += dt
        told = t[b]
        xc[b] = upper[b] if d[b] > 0 else lower[b]
        zb = xc[b] - x[b]
        db = d[b]
        passed[b] = True
        wb = Wt[:, b]
        c = c + dt * p
        f1 = f1 + dt * f2 + db * db - theta * db * zb
        f2 = f2 - theta * db * db
        v = M @ wb
        f1 = f1 + db * (c @ v)
        f2 = f2 + 2.0 * db * (p @ v) - db * db * (wb @ v)
        p = p - db * wb
        d[b] = 0.0
        f2 = max(np.finfo(float).eps * f2_org, f2)
        k += 1
        if k < len(order):
            dtm = -f1 / f2
        elif bnded:
            dtm = 0.0
        else:
            dtm = -f1 / f2
    dtm = max(0.0, dtm)
    tsum += dtm
    free_move = (t > 0) & ~passed
    xc = np.where(free_move, x + tsum * np.where(t > 0, -g, 0.0), xc)
    xc = np.clip(xc, lower, upper)
    c = c + dtm * p
    return xc, c, free_move, tsum
