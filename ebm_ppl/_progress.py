"""The progress bar of ``fit_unnormalized``: epochs (or updates), a compiling phase, the
surrogate loss, the acceptance rate where there is one, and the latest monitor values.

The bar is tqdm's notebook bar only where ipywidgets can be imported, else its console bar:
``tqdm.auto`` in a notebook without ipywidgets warns ("IProgress not found") on import.
"""

import importlib.util

import numpy as np

__all__ = ["FitBar"]


def _tqdm_class():
    """``tqdm.auto.tqdm`` where ipywidgets is installed, else ``tqdm.std.tqdm`` (no warning)."""
    try:
        widgets = importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # a broken or blocked ipywidgets
        widgets = False
    if widgets:
        from tqdm.auto import tqdm as cls
    else:
        from tqdm.std import tqdm as cls
    return cls


tqdm = _tqdm_class()

DESC = "fit_unnormalized"
_EPOCH_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} epochs "
                 "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


class FitBar:
    """The bar of one call of ``fit_unnormalized``.

    It counts epochs when the call was given ``num_epochs`` (fractions of one between
    chunks), else updates. Until the first chunk of updates has run its description is
    ``"compiling"`` (tracing / jit compilation happen then); its clock restarts after that
    chunk, so the rate and the time left exclude compilation. After each chunk it shows
    ``surrogate``, the last update's surrogate loss (not a log-likelihood), and ``acc``,
    the chunk's mean acceptance rate, only where the sampler has one (not for Gibbs moves,
    whose rate is NaN); a monitor's latest values stay on it until the next evaluation.
    """

    def __init__(self, enabled, total_updates, num_epochs=None):
        self.per_epoch = total_updates // num_epochs if num_epochs else None
        self.updates = 0
        self.compiling = True
        self.chunk_values, self.monitor_values = {}, {}
        self.bar = tqdm(total=num_epochs if num_epochs else total_updates, disable=not enabled, leave=False,
                        desc="compiling", unit="epoch" if num_epochs else "update",
                        bar_format=_EPOCH_FORMAT if num_epochs else None)

    def _position(self):
        return self.updates / self.per_epoch if self.per_epoch else self.updates

    def _set_postfix(self, refresh):
        items = {**self.chunk_values, **self.monitor_values}
        self.bar.set_postfix_str(", ".join(f"{k}={v}" for k, v in items.items()), refresh=refresh)

    def chunk(self, stats):
        """Advance by one chunk of updates: ``stats`` the chunk's statistics (loss first,
        acceptance rate fourth, one entry per update)."""
        n = len(stats[0])
        if n:
            self.chunk_values = {"surrogate": f"{float(stats[0][-1]):.4g}"}
            acc = np.asarray(stats[3], dtype=float)
            acc = acc[np.isfinite(acc)]
            if acc.size:
                self.chunk_values["acc"] = f"{float(np.mean(acc)):.3g}"
        self.updates += n
        position = self._position()
        bar = self.bar
        if self.compiling:  # the first chunk held the compilation: restart the clock after it
            self.compiling = False
            bar.set_description_str(DESC, refresh=False)
            bar.reset(total=bar.total)
            bar.initial = bar.n = bar.last_print_n = position
            self._set_postfix(refresh=True)
            return
        self._set_postfix(refresh=False)
        bar.update(position - bar.n)
        bar.n = position  # exactly (no float drift): the last chunk ends at the total

    def show_monitor(self, values):
        """Show a monitor evaluation's values (they stay until the next evaluation)."""
        self.monitor_values = {k: f"{float(v):.4g}" for k, v in values.items()}
        self._set_postfix(refresh=True)

    def close(self):
        self.bar.close()
