"""What a new user meets (issue 24): the README's first example runs as pasted, on both
backends; pictures (``plot_history``, ``plot_samples``) and ArviZ (``to_arviz``) are one call
away, and ``import ebm_ppl`` loads neither matplotlib nor ArviZ."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import ebm_ppl
from models import ising_model, ising_sample

ROOT = pathlib.Path(__file__).resolve().parent.parent
X = ising_sample(np.linspace(-0.5, 0.5, 12), np.full(9, 0.1), 200, seed=5)


@pytest.fixture
def plt():
    """pyplot on the Agg backend (no window, no file); every figure closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_import_loads_neither_matplotlib_nor_arviz():
    code = "import sys, ebm_ppl; print('matplotlib' in sys.modules, 'arviz' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_extras_raise_importerror_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import now fails
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r'plot_history needs matplotlib.*pip install "ebm_ppl\[plot\]"'):
        ebm_ppl.plot_history({"loss": np.arange(3.0)})
    with pytest.raises(ImportError, match=r'plot_samples needs matplotlib.*"ebm_ppl\[plot\]"'):
        ebm_ppl.plot_samples(np.zeros((2, 9)), shape=(3, 3))
    with pytest.raises(ImportError, match=r'to_arviz needs arviz.*"ebm_ppl\[arviz\]"'):
        ebm_ppl.to_arviz({"x": np.zeros((4, 9))}, num_chains=2)


def _fit_with_monitor(fw, num_steps=20):
    """A short Ising fit, 4 updates per epoch, with a monitor callable once per epoch."""
    def f(step, params, chains):
        return {"epoch_metric": float(step)}

    return ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(X), estimator=ebm_ppl.PCD(num_chains=20, num_steps=1),
        optimizer=fw.adam(0.05), num_steps=num_steps, batch_size=50, monitor=[f], progress_bar=False)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_plot_history_draws_every_curve_and_skips_nan_gaps(fw, plt):
    result = _fit_with_monitor(fw)
    metric = result.history["epoch_metric"]
    assert np.isnan(metric).sum() > 0 and np.isfinite(metric).sum() == 5  # NaN between evaluations
    fig = ebm_ppl.plot_history(result)
    labels = [a.get_ylabel() for a in fig.axes]
    assert labels[:2] == ["surrogate loss", r"mean log $\tilde{p}$"]
    assert "epoch_metric" in labels and len(labels) == len(set(labels))
    lines = {line.get_label(): line for a in fig.axes for line in a.get_lines()}
    assert {"loss", "positive_log_density", "negative_log_density", "epoch_metric"} <= set(lines)
    x, y = lines["epoch_metric"].get_data()
    np.testing.assert_array_equal(x, np.flatnonzero(np.isfinite(metric)) + 1)  # only the evaluations
    np.testing.assert_array_equal(y, metric[np.isfinite(metric)])
    x, y = lines["loss"].get_data()
    np.testing.assert_allclose(y, result.history["loss"])
    assert list(x) == list(range(1, 21))
    # one Axes: every selected curve on it, with a legend; a history dict is accepted too
    fig2, ax = plt.subplots()
    assert ebm_ppl.plot_history(result.history, ax=ax, keys=["loss", "epoch_metric"]) is fig2
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "epoch_metric"]
    assert ax.get_legend() is not None


def test_plot_history_refuses_what_it_cannot_draw(plt):
    with pytest.raises(ValueError, match="not among the history"):
        ebm_ppl.plot_history({"loss": np.arange(3.0)}, keys=["log_likelihood"])
    with pytest.raises(ValueError, match="no finite value"):
        ebm_ppl.plot_history({"loss": np.full(3, np.nan)})
    _, axes = plt.subplots(1, 1, squeeze=False)
    with pytest.raises(ValueError, match="2 panels"):
        ebm_ppl.plot_history({"loss": np.arange(3.0), "acceptance_rate": np.ones(3)}, ax=list(axes[0]))
    with pytest.raises(TypeError, match="FitResult"):
        ebm_ppl.plot_history([1.0, 2.0])


_DRAWS = {}


def _draws(fw):
    """200 draws of a fixed 3x3 Ising model from 4 chains (made once per backend)."""
    if fw.name not in _DRAWS:
        J, h = np.linspace(-0.5, 0.5, 12), np.full(9, 0.1)
        params = {"J": fw.array(J), "h": fw.array(h)}
        _DRAWS[fw.name] = ebm_ppl.sample(ising_model(fw, J, h), params, fw.array(X[:1]), num_samples=200,
                                         num_chains=4, num_warmup=20)
    return _DRAWS[fw.name]


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_plot_samples_tiles_the_draws(fw, plt):
    draws = _draws(fw)
    fig = ebm_ppl.plot_samples(draws, shape=(3, 3), num=16)
    (ax,) = fig.axes
    (image,) = ax.get_images()
    canvas = np.asarray(image.get_array().filled(np.nan))
    assert canvas.shape == (4 * 4 - 1, 4 * 4 - 1)  # 4 x 4 images of 3 x 3, 1-pixel gaps
    x = fw.to_numpy(draws["x"])
    np.testing.assert_array_equal(canvas[:3, :3], x[0].reshape(3, 3))
    np.testing.assert_array_equal(canvas[4:7, 8:11], x[6].reshape(3, 3))  # row 1, column 2
    assert np.isnan(canvas[3]).all() and np.isnan(canvas[:, 3]).all()
    fig2 = ebm_ppl.plot_samples(draws["x"][:30], shape=(3, 3), ncols=5)  # an array, every draw (30)
    assert fig2.axes[0].get_images()[0].get_array().shape == (6 * 4 - 1, 5 * 4 - 1)
    with pytest.raises(ValueError, match="not rows of 784"):
        ebm_ppl.plot_samples(draws)  # (28, 28) by default
    with pytest.raises(ValueError, match="pass one of them"):
        ebm_ppl.plot_samples({"a": x, "b": x}, shape=(3, 3))


# ArviZ 0.22-0.23 announce their 1.0 rewrite with a FutureWarning on import
ARVIZ_IMPORT_WARNING = r"ignore:\s*ArviZ is undergoing a major refactor:FutureWarning"


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
@pytest.mark.filterwarnings(ARVIZ_IMPORT_WARNING)
def test_to_arviz_groups_the_draws_by_chain(fw):
    az = pytest.importorskip("arviz")
    draws = _draws(fw)
    data = ebm_ppl.to_arviz(draws, num_chains=4)
    post = np.asarray(data.posterior["x"])
    assert post.shape == (4, 50, 9)
    x = fw.to_numpy(draws["x"])
    for c in range(4):  # sample records its chains in rounds: chain c is rows c, c + 4, ...
        np.testing.assert_array_equal(post[c], x[c::4])
    summary = az.summary(data)
    assert len(summary) == 9 and np.isfinite(summary["mean"].to_numpy()).all()
    assert np.isfinite(summary["r_hat"].to_numpy()).all()
    with pytest.raises(ValueError, match="not a positive multiple of num_chains=3"):
        ebm_ppl.to_arviz(draws, num_chains=3)
    with pytest.raises(ValueError, match="num_chains must be an integer"):
        ebm_ppl.to_arviz(draws, num_chains=0)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_clipped_adam_and_its_optax_twin_take_the_same_steps():
    """The README's optax twin of ``pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999})``:
    gradients clamped element-wise to [-10, 10], learning rate 0.05 * 0.999**t at update t."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from pyro.optim.clipped_adam import ClippedAdam

    target = np.array([30.0, -20.0, 1.0, 0.0, -0.5], np.float32)  # gradients beyond the clamp
    loss = lambda w, xp: (xp.cos(w) + (w - xp.asarray(target)) ** 2).sum()
    w_t = torch.zeros(5, requires_grad=True)
    opt_t = ClippedAdam([w_t], lr=0.05, lrd=0.999)
    opt_j = optax.chain(optax.clip(10.0),
                        optax.adam(optax.exponential_decay(0.05 * 0.999, transition_steps=1, decay_rate=0.999)))
    w_j = jnp.zeros(5)
    state = opt_j.init(w_j)
    for _ in range(300):
        opt_t.zero_grad()
        loss(w_t, torch).backward()
        opt_t.step()
        updates, state = opt_j.update(jax.grad(lambda w: loss(w, jnp))(w_j), state, w_j)
        w_j = optax.apply_updates(w_j, updates)
    np.testing.assert_allclose(w_t.detach().numpy(), np.asarray(w_j), atol=1e-4)
    assert opt_t.param_groups[0]["lr"] == pytest.approx(0.05 * 0.999**300)


def _readme_blocks():
    """The README's first Pyro block, its first NumPyro block and its pictures block."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    pyro_block = blocks[0]
    numpyro_block = next(b for b in blocks if "import numpyro" in b or ", numpyro" in b)
    pictures = re.findall(r"```python\n(.*?)```", text.split("## Pictures and ArviZ", 1)[1].split("\n## ", 1)[0], re.S)
    assert "import torch" in pyro_block and "numpyro" not in pyro_block
    assert "to_arviz" in pictures[0]
    return {"pyro": pyro_block, "numpyro": numpyro_block}, pictures[0]


@pytest.mark.slow  # a full README fit, AIS and sampling in a fresh process: about a minute each
def test_readme_first_example_runs_as_pasted(backend, tmp_path):
    """The README's first example, pasted into a file (then the pictures block after it),
    runs in a fresh process under ``-W error``; its pictures land in the current folder."""
    examples, pictures = _readme_blocks()
    script = tmp_path / "example.py"
    script.write_text(examples[backend] + "\n" + pictures)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'backends'}", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    # -W error, except the FutureWarning that ArviZ 0.22-0.23 issue from their __init__
    out = subprocess.run([sys.executable, "-W", "error", "-W", "ignore::FutureWarning:arviz", str(script)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    ll = float(re.search(r"mean log-likelihood: (\S+)", out.stdout).group(1))
    assert -9 * np.log(2) < ll < 0  # better than J = h = 0, and a probability
    assert "r_hat" in out.stdout and "x[8]" in out.stdout
    assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "samples.png").stat().st_size > 0
