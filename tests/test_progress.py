"""The progress bar of fit_unnormalized: epochs when given num_epochs, a compiling phase,
the surrogate loss, the acceptance rate only where the sampler has one, the monitor's latest
values kept between evaluations; and no tqdm warning on import in a notebook without
ipywidgets. The bar is recorded through tqdm's own calls (no timers)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import ebm_ppl
import ebm_ppl._progress as progress
from models import ising_model, ising_sample, tilted_normal_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
X = ising_sample(np.full(12, 0.3), np.zeros(9), 300, seed=3)
HELD_OUT = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)


@pytest.fixture
def bars(monkeypatch):
    """The bars fit_unnormalized makes, each recording its postfixes and its final count."""
    made = []

    class Recording(progress.tqdm):
        def __init__(self, *args, **kwargs):
            self.postfixes, self.closed = [], None
            super().__init__(*args, **kwargs)
            self.first_desc = self.desc
            made.append(self)

        def set_postfix_str(self, s="", refresh=True):
            self.postfixes.append(s)
            super().set_postfix_str(s, refresh=refresh)

        def close(self):
            if self.closed is None:
                self.closed = {"n": self.n, "total": self.total, "unit": self.unit, "desc": self.desc}
            super().close()

    monkeypatch.setattr(progress, "tqdm", Recording)
    return made


def test_bar_counts_epochs_or_updates_after_a_compiling_phase(fw, bars):
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_epochs=3, batch_size=100)
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=7, batch_size=100)
    assert [b.first_desc for b in bars] == ["compiling", "compiling"]
    assert bars[0].closed == {"n": 3, "total": 3, "unit": "epoch", "desc": "fit_unnormalized"}
    assert bars[1].closed == {"n": 7, "total": 7, "unit": "update", "desc": "fit_unnormalized"}
    assert all(s.startswith("surrogate=") for b in bars for s in b.postfixes)


def test_monitor_values_stay_on_the_bar_between_evaluations(fw, bars):
    monitor = ebm_ppl.Monitor(every=10, data=fw.array(HELD_OUT), diagnostic_steps=8)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=30, batch_size=100, monitor=monitor)
    (bar,) = bars
    shown = bar.postfixes
    first = next(i for i, s in enumerate(shown) if "log_likelihood=" in s)
    assert all("log_likelihood=" in s and "rhat=" in s for s in shown[first:])
    # the chunk after the evaluation at update 10 (before the one at 20) still shows its value
    assert "surrogate=" in shown[first + 1]
    assert f"log_likelihood={result.history['log_likelihood'][9]:.4g}" in shown[first + 1]


def test_acceptance_rate_shown_only_where_the_sampler_has_one(fw, bars):
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=6, batch_size=100)  # Gibbs: NaN
    x = fw.array(np.random.default_rng(5).normal(0, 0.7, 200))
    ebm_ppl.fit_unnormalized(tilted_normal_model(fw), x, num_steps=6)  # MALA
    gibbs, mala = bars
    assert gibbs.postfixes and not any("acc=" in s for s in gibbs.postfixes)
    assert mala.postfixes and all("acc=" in s for s in mala.postfixes)


def test_import_in_a_notebook_without_ipywidgets_prints_no_warning():
    """``import ebm_ppl`` as Jupyter would run it (ipykernel loaded) with ipywidgets absent:
    no warning, the console bar chosen; ``tqdm.auto`` itself warns there (the check bites)."""
    script = """
import importlib, sys, types, warnings
sys.modules["ipywidgets"] = None  # absent, even where installed
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
ipython = types.ModuleType("IPython")
ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()
sys.modules["IPython"] = ipython
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import ebm_ppl
    import ebm_ppl._progress
assert not seen, [str(w.message) for w in seen]
import tqdm.std
assert ebm_ppl._progress.tqdm is tqdm.std.tqdm
for name in ("tqdm.auto", "tqdm.autonotebook"):
    sys.modules.pop(name, None)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    importlib.import_module("tqdm.autonotebook")
assert any("IProgress" in str(w.message) for w in seen), [str(w.message) for w in seen]
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "backends")]))
    out = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok" and out.stderr == "", out.stderr[-3000:]
