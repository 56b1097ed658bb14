"""PseudoLikelihood (issue 22): Besag's Σ_d log p(x_d | x_−d), each conditional exact.

Checked against the exact objective computed in numpy (float64): the loss and gradient of
one update on the 3x3 Ising model, a 3-state Potts model, an RBM's free energy (its binary
hidden layer summed out) and a conditional CRF; the fitted parameters against the exact
maximum-pseudo-likelihood estimate found by scipy's L-BFGS (slow); refusals, resume,
Trainer minibatches, Monitor and NumPyro ``devices=``.
"""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ebm_ppl
from models import (CRF_LABELS, X_ISING, _store, crf_features, crf_model, crf_pack, crf_sample, crf_true_theta,
                    flip_objective, gaussian_model, hidden_permutation_diff, ising_flip_features, ising_log_unnorm,
                    ising_model, lbfgs, random_rbm, rbm_flip_objective, rbm_log_marginal, rbm_model_at,
                    rbm_penalized_model, small_rbm_truth_and_data)

HERE = os.path.dirname(os.path.abspath(__file__))
_rng = np.random.default_rng(11)
J0, H0 = _rng.uniform(-0.5, 0.5, 12), _rng.uniform(-0.3, 0.3, 9)


def _theta(fw, params, names=("J", "h")):
    return np.concatenate([fw.to_numpy(params[k]).astype(np.float64).ravel() for k in names])


def _one_step(fw, model, data, estimator=None, **kw):
    """One SGD(1) update: (loss, gradient = θ0 − θ1, result)."""
    r = ebm_ppl.fit_unnormalized(model, data, estimator=estimator or ebm_ppl.PseudoLikelihood(),
                                 optimizer=fw.sgd(1.0), num_steps=1, progress_bar=False, **kw)
    return float(r.history["loss"][0]), r


def test_settings_repr_and_registry():
    assert repr(ebm_ppl.PseudoLikelihood()) == "PseudoLikelihood()"
    assert repr(ebm_ppl.PseudoLikelihood(chunk_size=100)) == "PseudoLikelihood(chunk_size=100)"
    assert ebm_ppl.estimators.base.REGISTRY["PseudoLikelihood"] is ebm_ppl.PseudoLikelihood
    assert ebm_ppl.PseudoLikelihood.needs_sampler is False
    for bad in (0, -3, 1.5, True, "10"):
        with pytest.raises(ValueError, match="chunk_size"):
            ebm_ppl.PseudoLikelihood(chunk_size=bad)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_ising_loss_and_gradient_are_exact(fw):
    """One update from random parameters: the loss is the exact negative mean
    pseudo-log-likelihood and the gradient its exact gradient, in one chunk of coordinates
    and in five (``chunk_size``: two coordinates a call, the last chunk half empty)."""
    theta0 = np.concatenate([J0, H0])
    want, grad = flip_objective(theta0, ising_flip_features(X_ISING), "pl")
    for chunk_size in (None, 2 * len(X_ISING)):
        fw.clear()
        loss, r = _one_step(fw, ising_model(fw, J0, H0), fw.array(X_ISING), ebm_ppl.PseudoLikelihood(chunk_size))
        assert loss == pytest.approx(want, abs=2e-5)
        # float32 sums over 20000 rows (18000 variants): a few 1e-5 of rounding (measured 3.4e-5)
        np.testing.assert_allclose(theta0 - _theta(fw, r.params), grad, atol=1e-4)
        assert r.chains == {} and np.isnan(r.history["negative_log_density"][0])
        base = 9 * np.log(0.5)
        assert r.history["positive_log_density"][0] == pytest.approx(
            np.mean(ising_log_unnorm(X_ISING, J0, H0)) + base, abs=1e-4)


# A 3-state Potts model on a ring of 4 sites: K = 3 values a coordinate, two alternatives each.
POTTS_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0)]
W_POTTS = np.random.default_rng(7).uniform(-0.8, 0.8, (4, 3, 3))


def potts_model(fw):
    def potts(x):
        W = fw.param("W", fw.array(W_POTTS))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Categorical(fw.array(np.ones(3) / 3)).expand([4]).to_event(1), obs=x)
            ebm_ppl.factor("pairs", sum(W[e][x[..., i], x[..., j]] for e, (i, j) in enumerate(POTTS_EDGES)))

    return potts


def _potts_features(x):
    """(n, 36): indicators of each edge's pair of states; log p̃ = features · W."""
    out = np.zeros((len(x), 4, 3, 3))
    for e, (i, j) in enumerate(POTTS_EDGES):
        out[np.arange(len(x)), e, x[:, i], x[:, j]] = 1.0
    return out.reshape(len(x), -1)


def potts_pl(w, x):
    """The negative mean pseudo-log-likelihood and its gradient (numpy, enumerating each
    coordinate's 3 values)."""
    f0 = _potts_features(x)
    value, grad = 0.0, -4 * f0.mean(0)
    for d in range(4):
        feats = []
        for k in range(3):
            xk = x.copy()
            xk[:, d] = k
            feats.append(_potts_features(xk))
        ld = np.stack([f @ w for f in feats])  # (3, n)
        log_norm = np.logaddexp.reduce(ld, axis=0)
        value += np.mean(log_norm - f0 @ w)
        p = np.exp(ld - log_norm)
        grad += sum(p[k][:, None] * feats[k] for k in range(3)).mean(0)
    return value, grad


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_potts_three_values_loss_and_gradient_are_exact(fw):
    states = np.array(list(itertools.product(range(3), repeat=4)))
    x = states[np.random.default_rng(3).integers(len(states), size=300)]
    want, grad = potts_pl(W_POTTS.ravel(), x)
    loss, r = _one_step(fw, potts_model(fw), fw.array(x, dtype=np.int64))
    assert loss == pytest.approx(want, abs=2e-5)
    np.testing.assert_allclose(W_POTTS.ravel() - _theta(fw, r.params, ("W",)), grad, atol=2e-5)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_rbm_free_energy_loss_and_gradient_are_exact(fw):
    """An RBM's binary hidden layer is summed out: the objective is the pseudo-likelihood of
    the free energy log Σ_h p̃(v, h), its gradient ∇θ log p̃(v, E[h | v])."""
    W, b, c = random_rbm(6, 3, seed=5)
    _, x = small_rbm_truth_and_data(400)
    theta0 = np.concatenate([W.ravel(), b, c])
    want, grad = rbm_flip_objective(theta0, x, 3, "pl")
    loss, r = _one_step(fw, rbm_model_at(fw, W, b, c), fw.array(x))
    assert loss == pytest.approx(want, abs=2e-5)
    np.testing.assert_allclose(theta0 - _theta(fw, r.params, ("W", "b", "c")), grad, atol=2e-5)
    # positive_log_density: the mean free energy, base measures included (as log_likelihood's log p̃(v))
    assert r.history["positive_log_density"][0] == pytest.approx(np.mean(rbm_log_marginal(x, W, b, c)), abs=1e-4)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_conditional_crf_loss_and_gradient_are_exact(fw):
    """covariates=: Σ_d log p(y_d | y_−d, x), the inputs carried with each row."""
    x, y = crf_sample(crf_true_theta(), 300, seed=2)
    dF = np.stack([crf_features(np.where(np.eye(CRF_LABELS)[d] > 0, 1 - y, y), x) - crf_features(y, x)
                   for d in range(CRF_LABELS)])
    want, grad = flip_objective(np.zeros(dF.shape[-1]), dF, "pl")
    loss, r = _one_step(fw, crf_model(fw), {"x": fw.array(x), "y": fw.array(y)}, covariates=("x",))
    assert loss == pytest.approx(want, abs=2e-5)
    p = {k: fw.to_numpy(v).astype(np.float64) for k, v in r.params.items()}
    np.testing.assert_allclose(-crf_pack(p["W"], p["b"], p["P"]), grad, atol=2e-5)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_trainer_batch_and_monitor(fw):
    """Trainer.update on an explicit minibatch gives that batch's exact loss; Monitor's own
    pseudo-likelihood of the training set after update t equals minus the loss of update
    t + 1 (full batch). (Minibatched fits: test_resume_continues_exactly.)"""
    trainer = ebm_ppl.Trainer(ising_model(fw, J0, H0), ebm_ppl.PseudoLikelihood(), optimizer=fw.sgd(0.1),
                              batch_size=64)
    state = trainer.init(fw.array(X_ISING))
    _, stats = trainer.update(state, fw.array(X_ISING[100:164]))
    want, _ = flip_objective(np.concatenate([J0, H0]), ising_flip_features(X_ISING[100:164]), "pl")
    assert stats["loss"] == pytest.approx(want, abs=2e-5)
    fw.clear()
    r = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=ebm_ppl.PseudoLikelihood(),
                                 optimizer=fw.adam(0.05), num_steps=5, progress_bar=False,
                                 monitor=ebm_ppl.Monitor(every=4, data=fw.array(X_ISING), pseudo_likelihood=True,
                                                         diagnostics=False))
    pll = r.history["pseudo_log_likelihood"]
    assert np.isnan(pll[:3]).all() and np.isnan(pll[4])
    assert pll[3] == pytest.approx(-r.history["loss"][4], abs=1e-4)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_resume_continues_exactly(fw, tmp_path):
    """37 + 43 minibatch updates, resumed from a checkpoint saved and loaded in between
    (mid-epoch), == one fit of 80, bit for bit (history, parameters)."""
    kw = dict(estimator=ebm_ppl.PseudoLikelihood(), optimizer=fw.adam(0.05), progress_bar=False, rng_seed=3,
              batch_size=150)
    first = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), num_steps=37, **kw)
    ebm_ppl.save(first, tmp_path / "first.ebm")
    resumed = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), num_steps=43,
                                       resume=ebm_ppl.load(tmp_path / "first.ebm"), **kw)
    fw.clear()
    if fw.name == "pyro":  # torch optimizers hold state
        kw["optimizer"] = fw.adam(0.05)
    whole = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), num_steps=80, **kw)
    assert set(whole.history) == set(resumed.history)
    for name, values in whole.history.items():
        np.testing.assert_array_equal(resumed.history[name], values[37:], err_msg=name)
    for name in ("J", "h"):
        np.testing.assert_array_equal(fw.to_numpy(resumed.params[name]), fw.to_numpy(whole.params[name]))
    assert resumed.state.num_updates == 80 and resumed.chains == {}


# ---- refusals: raised at set-up, before anything changes
def _binary_latent_model(fw, form):
    """6 visible units and latent sites that PseudoLikelihood cannot sum out."""
    def model(v):
        W = fw.param("W", fw.array(0.1 * np.ones((6, 3))))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([6]).to_event(1), obs=v)
            if form == "continuous":
                z = fw.sample("z", fw.dist.Normal(0.0, 1.0).expand([3]).to_event(1))
                ebm_ppl.factor("f", ((v @ W) * z).sum(-1))
            elif form == "two_layers":
                h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([3]).to_event(1))
                g = fw.sample("g", fw.dist.Bernoulli(0.5).expand([3]).to_event(1))
                ebm_ppl.factor("f", ((v @ W) * h).sum(-1) + (h * g).sum(-1))
            else:  # h ** 3 equals h at 0 and 1, but is not affine in between
                h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([3]).to_event(1))
                ebm_ppl.factor("f", ((v @ W) * h**3).sum(-1))

    return model


def _refused(fw, previous, model, data, match, estimator=None, **kw):
    """The fit raises NotImplementedError naming ``match``; ``previous``'s parameters, the
    Pyro param store and the caller's data are unchanged."""
    before = {k: fw.to_numpy(v).copy() for k, v in previous.params.items()}
    store = _store(fw)
    data_before = fw.to_numpy(data).copy()
    with pytest.raises(NotImplementedError, match=match):
        ebm_ppl.fit_unnormalized(model, data, estimator=estimator or ebm_ppl.PseudoLikelihood(), num_steps=2,
                                 progress_bar=False, **kw)
    for k, v in before.items():
        np.testing.assert_array_equal(fw.to_numpy(previous.params[k]), v)
    for k, v in store.items():
        np.testing.assert_array_equal(_store(fw)[k], v)
    np.testing.assert_array_equal(fw.to_numpy(data), data_before)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_refusals_change_nothing(fw):
    previous = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING[:200]),
                                        estimator=ebm_ppl.PseudoLikelihood(), num_steps=2, progress_bar=False)
    v = fw.array(X_ISING[:50, :6])
    _refused(fw, previous, gaussian_model(fw), fw.array(np.random.default_rng(0).normal(size=50)),
             r"(?i)PseudoLikelihood: observed site 'x' has support .*real.*continuous")
    _refused(fw, previous, _binary_latent_model(fw, "continuous"), v, r"PseudoLikelihood: latent site 'z'")
    _refused(fw, previous, _binary_latent_model(fw, "two_layers"), v, r"latent sites \['h', 'g'\]")
    _refused(fw, previous, _binary_latent_model(fw, "cubic"), v, r"latent site 'h'.*affine")
    assert previous.state.num_updates == 2


# ---- accuracy against the exact maximum-pseudo-likelihood estimate (L-BFGS in numpy)
@pytest.fixture(scope="module")
def ising_max_pl():
    dF = ising_flip_features(X_ISING)
    theta, value = lbfgs(flip_objective, np.zeros(21), dF, "pl")
    return theta, value, dF


@pytest.mark.slow
def test_fit_reaches_the_exact_maximum_pseudo_likelihood(fw, ising_max_pl):
    """Full batch, Adam with a decaying step: the fitted mean pseudo-log-likelihood within
    1e-3 nats/example of the exact maximum's, parameters within 0.03 (issue 22, acceptance 1)."""
    theta, best, dF = ising_max_pl
    r = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=ebm_ppl.PseudoLikelihood(),
                                 optimizer=fw.adam_decay(0.05, 0.99), num_steps=600, progress_bar=False)
    fitted = _theta(fw, r.params)
    assert flip_objective(fitted, dF, "pl")[0] - best < 1e-3
    assert np.abs(fitted - theta).max() < 0.03


@pytest.mark.slow
def test_rbm_fit_reaches_the_exact_maximum_pseudo_likelihood_of_the_free_energy(fw):
    """A 6 x 3 RBM (hidden layer summed out) fitted to 3000 rows: within 1e-4 nats/example of
    the exact penalized maximum pseudo-likelihood of the free energy (L-BFGS from the same
    start), parameters within 0.03 up to relabelling the hidden units."""
    lam = 30.0
    _, x = small_rbm_truth_and_data()
    W0 = 0.01 * np.random.default_rng(1).normal(size=(6, 3))
    theta, best = lbfgs(rbm_flip_objective, np.concatenate([W0.ravel(), np.zeros(9)]), x, 3, "pl", lam)
    r = ebm_ppl.fit_unnormalized(rbm_penalized_model(fw, W0, lam), fw.array(x), estimator=ebm_ppl.PseudoLikelihood(),
                                 optimizer=fw.adam_decay(0.05, 0.998), num_steps=2000, progress_bar=False)
    fitted = _theta(fw, r.params, ("W", "b", "c"))
    assert rbm_flip_objective(fitted, x, 3, "pl", lam)[0] - best < 1e-4
    assert hidden_permutation_diff(fitted, theta, 6, 3) < 0.03


_SHARDED = """
import os, sys, json
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, {here!r})
import numpy as np, jax, ebm_ppl
from ebm_ppl.testing.frameworks import framework
from models import ising_model, X_ISING
fw = framework("numpyro")
out = {{}}
for name in ("PseudoLikelihood", "RatioMatching"):
    fits = [ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING[:800]), estimator=getattr(ebm_ppl, name)(),
                                     optimizer=fw.adam(0.05), num_steps=20, batch_size=200, progress_bar=False,
                                     devices=d) for d in (None, 4)]
    out[name] = max(float(np.abs(np.asarray(fits[0].params[k]) - np.asarray(fits[1].params[k])).max()) for k in "Jh")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_numpyro_devices_fit_equals_one_device_fit():
    """devices=4 (simulated CPU devices, in a subprocess): the batch's rows split over the
    devices give the one-device fit (PseudoLikelihood and RatioMatching)."""
    pytest.importorskip("numpyro")
    root = os.path.dirname(HERE)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "backends"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _SHARDED.format(here=HERE)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(out.stdout.strip().splitlines()[-1])
    for name, diff in diffs.items():
        assert diff < 1e-5, (name, diff)


_RANK = """
import os, sys
import numpy as np, torch.distributed as dist, ebm_ppl
from ebm_ppl.testing.frameworks import framework
sys.path.insert(0, {here!r})
from models import ising_model, X_ISING
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if world > 1:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
fw = framework("pyro")
res = {{}}
for name in ("PseudoLikelihood", "RatioMatching"):
    fw.clear()
    r = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=getattr(ebm_ppl, name)(),
                                 optimizer=fw.adam(0.05), num_steps=20, batch_size=200, progress_bar=False)
    res[name] = np.concatenate([fw.to_numpy(r.params[k]) for k in "Jh"])
np.savez(out, **res)
if world > 1:
    dist.barrier()
    dist.destroy_process_group()
"""


@pytest.mark.slow
def test_pyro_two_gloo_ranks_equal_one_process(tmp_path):
    """torch.distributed (2 gloo ranks, each half of every minibatch): both ranks end with the
    same parameters, the one-process fit's up to float rounding."""
    pytest.importorskip("pyro")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    root = os.path.dirname(HERE)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "backends"), env.get("PYTHONPATH", "")])
    script = _RANK.format(here=HERE)
    runs = [(0, 2), (1, 2), (0, 1)]
    outs = [str(tmp_path / f"out{i}.npz") for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r), str(w), port, o], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for (r, w), o in zip(runs, outs)]
    logs = [p.communicate()[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    r0, r1, one = (np.load(o) for o in outs)
    for name in ("PseudoLikelihood", "RatioMatching"):
        np.testing.assert_array_equal(r0[name], r1[name])
        np.testing.assert_allclose(r0[name], one[name], atol=1e-5)
