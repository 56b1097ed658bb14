"""NumPyro ``devices=`` on 4 simulated CPU devices, run by tests/test_parallel.py in a
subprocess (XLA_FLAGS must be set before jax is imported): prints one JSON line with the
largest differences between sharded and one-device results, the shardings seen and the
errors that bad settings raise."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework
from models import ising_model, ising_sample

fw = make_framework("numpyro")
rng = np.random.default_rng(0)
X = jnp.asarray(ising_sample(rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9), 400, seed=0))
G = jnp.asarray(rng.normal(1.0, 1.0, (400, 3)), jnp.float32)


def gaussian(x):  # a continuous model: the default sampler is MALA with an adapted step size
    mu = numpyro.param("mu", jnp.zeros(3))
    with numpyro.plate("data", x.shape[0]):
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), (3,)), obs=x)
        ebm_ppl.factor("q", -0.5 * ((x - mu) ** 2).sum(-1))


def fit(model, data, estimator, devices, num_steps=30, batch_size=100):
    return ebm_ppl.fit_unnormalized(model, data, estimator=estimator, optimizer=fw.adam(0.05), num_steps=num_steps,
                                    batch_size=batch_size, progress_bar=False, devices=devices)


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


def error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return f"{type(e).__name__}: {e}"
    return None


ONLY_ERRORS = sys.argv[1:] == ["errors"]  # the bad-settings part alone (fast)
out = {"num_devices": jax.device_count(), "fits": {}}
params = {"J": jnp.full(12, 0.2), "h": jnp.zeros(9)}
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("chains",))
cases = {
    "PCD": (ising_model(fw), X, ebm_ppl.PCD(num_chains=64, num_steps=2), 4),
    "PCD-mesh": (ising_model(fw), X, ebm_ppl.PCD(num_chains=64, num_steps=2), mesh),
    "CD": (ising_model(fw), X, ebm_ppl.CD(num_steps=2), jax.devices()[:2]),
    "PT": (ising_model(fw), X, ebm_ppl.PT(num_chains=16, num_temperatures=3), 4),
    "ReplayBuffer": (ising_model(fw), X, ebm_ppl.ReplayBuffer(buffer_size=64, num_chains=16, num_steps=2), 4),
    "FPCD": (ising_model(fw), X, ebm_ppl.FPCD(num_chains=16), 2),
    "PCD-MALA": (gaussian, G, ebm_ppl.PCD(num_chains=32), 4),
}
for name, (model, data, estimator, devices) in ([] if ONLY_ERRORS else cases.items()):
    one, many = fit(model, data, estimator, None), fit(model, data, estimator, devices)
    out["fits"][name] = {
        "params": max_diff(one.params, many.params),
        "chains": max_diff(one.chains, many.chains),
        "loss": float(np.nanmax(np.abs(one.history["loss"] - many.history["loss"]))),
        "state_spec": str(jax.tree_util.tree_leaves(many.state.estimator_state)[0].sharding.spec),
        "chains_spec": str(many.chains["x"].sharding.spec),
        "chains_devices": len(many.chains["x"].sharding.device_set),
    }
# resuming a sharded fit equals one sharded call
if not ONLY_ERRORS:
    whole = fit(ising_model(fw), X, ebm_ppl.PCD(num_chains=64), 4, num_steps=20)
    half = fit(ising_model(fw), X, ebm_ppl.PCD(num_chains=64), 4, num_steps=10)
    half = ebm_ppl.fit_unnormalized(ising_model(fw), X, estimator=ebm_ppl.PCD(num_chains=64), optimizer=fw.adam(0.05),
                                    num_steps=10, batch_size=100, progress_bar=False, devices=4, resume=half)
    out["resume"] = max_diff(whole.params, half.params)

    one = ebm_ppl.sample(ising_model(fw), params, X[:1], num_samples=200, num_chains=40, num_warmup=10)
    many = ebm_ppl.sample(ising_model(fw), params, X[:1], num_samples=200, num_chains=40, num_warmup=10, devices=4)
    out["sample"] = max_diff(one, many)
    one = ebm_ppl.log_partition(ising_model(fw), params, X, method="ais", num_chains=64, num_temperatures=50)
    many = ebm_ppl.log_partition(ising_model(fw), params, X, method="ais", num_chains=64, num_temperatures=50, devices=4)
    out["ais"] = [float(one.estimate), float(many.estimate), float(one.stderr)]

model = ising_model(fw)
out["errors"] = {
    "too_many_devices": error(lambda: fit(model, X, ebm_ppl.PCD(num_chains=64), 5)),
    "chains_not_divisible": error(lambda: fit(model, X, ebm_ppl.PCD(num_chains=30), 4)),
    "buffer_not_divisible": error(lambda: fit(model, X, ebm_ppl.ReplayBuffer(buffer_size=66, num_chains=16), 4)),
    "batch_not_divisible": error(lambda: fit(model, X, ebm_ppl.PCD(num_chains=64), 4, batch_size=50)),
    "bad_type": error(lambda: fit(model, X, ebm_ppl.PCD(num_chains=64), "gpu")),
    "duplicate": error(lambda: fit(model, X, ebm_ppl.PCD(num_chains=64), [jax.devices()[0]] * 2)),
    "sample_not_divisible": error(lambda: ebm_ppl.sample(model, params, X[:1], num_chains=30, devices=4)),
    "ais_not_divisible": error(lambda: ebm_ppl.log_partition(model, params, X, method="ais", num_chains=30,
                                                             devices=4)),
}
print(json.dumps(out))
