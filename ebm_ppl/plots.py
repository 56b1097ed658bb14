"""Pictures one call away: a fit's history (:func:`plot_history`) and a grid of samples
(:func:`plot_samples`), with matplotlib, an optional dependency (``pip install
"ebm_ppl[plot]"``) imported only when a function here is called."""

import importlib
import math

import numpy as np

from ._doc import doc
from ._tree import _array_kind
from ._tree import _to_numpy

__all__ = ["plot_history", "plot_samples"]

# panels drawn first, in this order; every other 1-D entry of the history gets its own panel
_GROUPS = [
    ("surrogate loss", ("loss",)),
    (r"mean log $\tilde{p}$", ("positive_log_density", "negative_log_density")),
    ("acceptance rate", ("acceptance_rate",)),
]


def require(module, extra, caller):
    """Import an optional dependency, or raise an ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise ImportError(f"ebm_ppl.{caller} needs {top}, an optional dependency: "
                          f'pip install "ebm_ppl[{extra}]" (or pip install {top})') from e


def as_numpy(x):
    """A torch tensor, JAX array, numpy array or nested list as a numpy array."""
    kind = _array_kind(x)
    return _to_numpy(x, kind) if kind in ("torch", "jax") else np.asarray(x)


def _history_panels(history, keys):
    """[(title, [(name, x, y), ...]), ...]: the curves with at least one finite value."""
    entries = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()
               if np.ndim(v) == 1 and np.issubdtype(np.asarray(v).dtype, np.number)}
    if keys is not None:
        unknown = sorted(set(keys) - set(entries))
        if unknown:
            raise ValueError(f"plot_history: {unknown} not among the history's 1-D entries {sorted(entries)}")
        entries = {k: entries[k] for k in keys}
    grouped = {k for _, names in _GROUPS for k in names}
    groups = list(_GROUPS) + [(k, (k,)) for k in entries if k not in grouped]
    panels = []
    for title, names in groups:
        curves = []
        for name in names:
            y = entries.get(name)
            if y is None:
                continue
            step = np.flatnonzero(np.isfinite(y))
            if step.size:
                curves.append((name, step + 1, y[step]))
        if curves:
            panels.append((title, curves))
    return panels


_PLOT_HISTORY_DOC = """Plot a fit's history: the surrogate loss, the mean log p̃ of the
positive and negative phases, the sampler's acceptance rate, and every other curve in
``result.history`` (a :class:`~ebm_ppl.Monitor`'s held-out log-likelihood, R-hat, ESS, a
tempering swap rate, ...), one panel each.

Monitor entries are NaN at the updates in between evaluations: only the finite values are
drawn (joined by lines, with markers), so the gaps are skipped. A curve with no finite value
(an acceptance rate where the sampler has none) is left out. Needs matplotlib
(``pip install "ebm_ppl[plot]"``).

Parameters
----------
result : FitResult or dict
    What :func:`fit_unnormalized` returned (or :func:`load` read), or its ``history``:
    name -> 1-D array with one entry per update.
ax : matplotlib.axes.Axes or sequence of Axes, optional
    None (default): a new figure with one panel per curve group, sharing the update axis.
    One Axes: every curve drawn on it, labelled. A sequence: one panel per Axes, in order
    (at least as many Axes as panels).
keys : sequence of str, optional
    The history entries to draw (default: all 1-D numeric entries).

Returns
-------
matplotlib.figure.Figure
    The figure drawn on (``ax``'s figure where given).

Raises
------
ImportError
    matplotlib is not installed.
ValueError
    ``keys`` names an entry the history lacks, the history has no finite value to draw, or
    ``ax`` holds fewer Axes than panels.

Examples
--------
>>> result = ebm_ppl.fit_unnormalized(model, data, monitor=ebm_ppl.Monitor(every=100))  # doctest: +SKIP
>>> fig = ebm_ppl.plot_history(result)  # doctest: +SKIP
>>> fig.savefig("history.png")  # doctest: +SKIP
"""


@doc(_PLOT_HISTORY_DOC)
def plot_history(result, ax=None, *, keys=None):
    history = result.history if hasattr(result, "history") else result
    if not hasattr(history, "items"):
        raise TypeError(f"plot_history: expected a FitResult or its history dict, got {type(result).__name__}")
    panels = _history_panels(history, keys)
    if not panels:
        raise ValueError("plot_history: the history has no finite value to draw (no update yet?)")
    plt = require("matplotlib.pyplot", "plot", "plot_history")
    if ax is None:
        fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                                 figsize=(6.4, 1.2 + 1.8 * len(panels)))
        axes = list(axes[:, 0])
    elif hasattr(ax, "plot"):  # one Axes: everything on it
        axes = [ax] * len(panels)
    else:
        axes = list(ax)
        if len(axes) < len(panels):
            raise ValueError(f"plot_history: {len(panels)} panels ({[t for t, _ in panels]}) but {len(axes)} Axes")
    single = len({id(a) for a in axes}) == 1 and len(panels) > 1  # every curve on one Axes
    for (title, curves), a in zip(panels, axes):
        for name, x, y in curves:
            sparse = x.size < x[-1]  # a monitor curve: NaN between its evaluations
            a.plot(x, y, marker="o" if sparse else None, markersize=3, label=name)
        if not single:
            a.set_ylabel(title)
    for a in {id(a): a for a in axes[:len(panels)]}.values():
        if len(a.get_lines()) > 1:
            a.legend(fontsize="small")
    axes[len(panels) - 1].set_xlabel("update")
    return axes[0].figure


def _sample_rows(draws, shape):
    """(n, prod(shape)) numpy rows of ``draws`` (an array, or a dict with one site)."""
    if hasattr(draws, "items"):
        if len(draws) != 1:
            raise ValueError(f"plot_samples: draws has sites {sorted(draws)}; pass one of them, "
                             f"e.g. draws[{sorted(draws)[0]!r}]")
        draws = next(iter(draws.values()))
    x = as_numpy(draws).astype(np.float64)
    size = int(np.prod(shape))
    if x.ndim < 1 or x.shape[0] == 0 or x.size != x.shape[0] * size:
        raise ValueError(f"plot_samples: draws of shape {x.shape} are not rows of {size} = prod({tuple(shape)}) "
                         "values each")
    return x.reshape(x.shape[0], size)


_PLOT_SAMPLES_DOC = """Plot draws as a grid of images (MNIST digits, lattice states, ...).

Needs matplotlib (``pip install "ebm_ppl[plot]"``).

Parameters
----------
draws : array or dict
    A ``(num_samples, ...)`` array (torch, JAX or numpy), or a dict with a single site such
    as :func:`sample` returns for a model with one site (else pass ``draws["v"]``).
shape : tuple of int
    The shape of one image, ``(28, 28)`` by default (MNIST); each draw must hold
    ``prod(shape)`` values.
num : int, optional
    How many draws to show, the first ones (default: all, at most 64).
ncols : int, optional
    Images per row (default: about the square root of ``num``).
ax : matplotlib.axes.Axes, optional
    Where to draw (default: a new figure).
cmap : str or matplotlib.colors.Colormap
    The colormap (default ``"gray"``); the gaps between images are blue.
vmin, vmax : float, optional
    The colour range (default: the shown draws' minimum and maximum).

Returns
-------
matplotlib.figure.Figure
    The figure drawn on.

Raises
------
ImportError
    matplotlib is not installed.
ValueError
    A dict with several sites, or draws whose size does not match ``shape``.

Examples
--------
>>> draws = ebm_ppl.sample(rbm, result.params, x[:1], num_samples=64)  # doctest: +SKIP
>>> fig = ebm_ppl.plot_samples(draws["v"], shape=(28, 28))  # doctest: +SKIP
"""


@doc(_PLOT_SAMPLES_DOC)
def plot_samples(draws, shape=(28, 28), *, num=None, ncols=None, ax=None, cmap="gray", vmin=None, vmax=None):
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape) != 2:
        raise ValueError(f"plot_samples: shape must be (height, width), got {shape}")
    rows = _sample_rows(draws, shape)
    num = min(rows.shape[0], 64) if num is None else int(num)
    if not 1 <= num <= rows.shape[0]:
        raise ValueError(f"plot_samples: num must be between 1 and {rows.shape[0]} (the draws), got {num}")
    ncols = math.ceil(math.sqrt(num)) if ncols is None else min(max(1, int(ncols)), num)
    nrows = math.ceil(num / ncols)
    h, w = shape
    canvas = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan)  # NaN: the gaps
    for i, row in enumerate(rows[:num]):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = row.reshape(h, w)
    shown = rows[:num]
    vmin = float(shown.min()) if vmin is None else vmin
    vmax = float(shown.max()) if vmax is None else vmax
    plt = require("matplotlib.pyplot", "plot", "plot_samples")
    if ax is None:
        scale = 4.8 / max(canvas.shape)
        _, ax = plt.subplots(figsize=(max(2.0, canvas.shape[1] * scale), max(2.0, canvas.shape[0] * scale)))
    colors = plt.get_cmap(cmap).with_extremes(bad=(0.35, 0.5, 0.75))  # the gaps (NaN) in blue
    ax.imshow(canvas, cmap=colors, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{num} of {rows.shape[0]} draws", fontsize="small")
    return ax.figure
