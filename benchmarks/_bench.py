"""Shared helpers of the benchmark scripts: timing, memory, data, and the models.

Every contender is timed the same way: steady-state seconds per epoch, as the median of
``runs`` measurements; compilation and other one-off costs are reported apart. The
contenders take turns, one run each per round, and each ratio is the median of the
per-round ratios, so that slow spells of a shared machine hit both sides of a ratio.

ebm_ppl fits are timed by difference: ``fit(1 + k epochs) - fit(1 epoch)``, divided by
``k``, so that what each call of ``fit_unnormalized`` pays once (tracing the model,
probing its structure, JAX compilation) cancels; the one-off cost is ``fit(1 epoch)``
minus one steady epoch. Hand-written loops are timed directly, epoch by epoch, after a
warm-up epoch that compiles them.
"""

import os
import statistics
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # see README: torch's intra-op threads hurt small tensors

__all__ = ["pin_cores", "jax_epochs", "epoch_timer", "fit_timer", "paired", "ratio", "rss_mib", "peak_rss_mib", "binarized_digits",
           "synthetic_binary", "rbm_model", "Timing"]


def pin_cores(num):
    """Run this process (and every thread it starts later) on ``num`` of the CPU cores it may
    use (Linux; a no-op elsewhere or for ``num`` <= 0); returns the cores.

    ``OMP_NUM_THREADS=1`` makes torch single-threaded but not XLA: JAX's CPU client runs
    independent operations of a program side by side and YNNPACK splits matrix products over
    a thread pool of its own, both sized by the cores the process may use. Pinned to one
    core before JAX starts, every contender runs on one core, and the CPU time of the
    measurement equals its wall time."""
    if num <= 0 or not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))[-num:]
    os.sched_setaffinity(0, cores)
    return cores


class Timing:
    """Seconds per epoch (median of runs) and the one-off cost, with all runs kept."""

    def __init__(self, runs, one_off=0.0):
        self.runs = list(runs)
        self.per_epoch = statistics.median(self.runs)
        self.one_off = one_off

    def __repr__(self):
        return f"{self.per_epoch * 1e3:.2f} ms/epoch (one-off {self.one_off:.2f} s)"


def jax_epochs(update, carry, num_data, batch):
    """A hand-written JAX epoch: a jitted ``lax.scan`` of ``update(carry, batch_indices)``
    over a fresh permutation (``carry[-1]`` is the key). Returns ``(run, block)`` for
    :func:`epoch_timer`: ``run()`` does one epoch."""
    import jax

    @jax.jit
    def epoch(carry):
        key, sub = jax.random.split(carry[-1])
        perm = jax.random.permutation(sub, num_data)[: (num_data // batch) * batch].reshape((-1, batch))
        carry, _ = jax.lax.scan(update, carry[:-1] + (key,), perm)
        return carry

    state = [carry]

    def run():
        state[0] = epoch(state[0])
        return state[0]

    return run, jax.block_until_ready


def epoch_timer(run_epoch, epochs_per_run, block=lambda out: out):
    """A function timing ``epochs_per_run`` calls of ``run_epoch()`` -> seconds per epoch
    (the first call warms up / compiles, untimed)."""
    block(run_epoch())

    def timed():
        start = time.perf_counter()
        for _ in range(epochs_per_run):
            out = run_epoch()
        block(out)
        return (time.perf_counter() - start) / epochs_per_run, 0.0

    return timed


def fit_timer(fit, extra_epochs):
    """A function timing ``fit`` by difference -> (seconds per epoch, one-off seconds)."""
    start = time.perf_counter()
    fit(1)  # imports, tracing, compilation (kept for later calls where the backend caches it)
    first = time.perf_counter() - start

    def timed():
        start = time.perf_counter()
        fit(1)
        short = time.perf_counter() - start
        start = time.perf_counter()
        fit(1 + extra_epochs)
        long = time.perf_counter() - start
        per_epoch = (long - short) / extra_epochs
        return per_epoch, max(short - per_epoch, first - per_epoch)

    return timed


def paired(timers, runs):
    """Run every timer once per round, ``runs`` rounds (so slow spells of a shared machine hit
    all contenders alike): ``{label: Timing}``, and per-round ratios come from the same round."""
    raw = {label: [] for label in timers}
    for _ in range(runs):
        for label, timer in timers.items():
            raw[label].append(timer())
    out = {}
    for label, values in raw.items():
        out[label] = Timing([v[0] for v in values], statistics.median([v[1] for v in values]))
    return out


def ratio(timings, num, den):
    """Median over rounds of the per-round ratio ``num / den`` (seconds per epoch)."""
    return statistics.median(a / b for a, b in zip(timings[num].runs, timings[den].runs))


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib():
    """Resident memory of this process now (MiB; Linux)."""
    return _status("VmRSS:")


def peak_rss_mib():
    """Peak resident memory of this process so far (MiB; Linux)."""
    return _status("VmHWM:")


def binarized_digits(num=1700):
    """scikit-learn's 8x8 digits, pixels > 8 of 16 set to 1 (float32, ``num`` rows)."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    return x[:num]


def synthetic_binary(num, dim, num_prototypes=20, flip=0.1, seed=0):
    """Binary data: noisy copies of random prototypes (each bit flipped with ``flip``)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((num_prototypes, dim)) < 0.3
    x = protos[rng.integers(num_prototypes, size=num)] ^ (rng.random((num, dim)) < flip)
    return x.astype(np.float32)


def rbm_model(backend, num_visible, num_hidden, seed=1):
    """A Bernoulli RBM with an explicit latent site ``h``, log p̃ = vᵀWh + bᵀv + cᵀh."""
    import ebm_ppl

    W_init = (0.01 * np.random.default_rng(seed).normal(size=(num_visible, num_hidden))).astype(np.float32)
    if backend == "pyro":
        import pyro
        import pyro.distributions as dist
        import torch

        param, plate, sample = pyro.param, pyro.plate, pyro.sample
        W0, b0, c0 = torch.tensor(W_init), torch.zeros(num_visible), torch.zeros(num_hidden)
    else:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        param, plate, sample = numpyro.param, numpyro.plate, numpyro.sample
        W0, b0, c0 = jnp.asarray(W_init), jnp.zeros(num_visible), jnp.zeros(num_hidden)

    def rbm(v):
        W, b, c = param("W", W0), param("b", b0), param("c", c0)
        with plate("data", v.shape[0]):
            v = sample("v", dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = sample("h", dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return rbm, W_init
