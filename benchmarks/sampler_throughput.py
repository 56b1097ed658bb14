"""Sampler throughput (chain-sweeps per second) against hand-written sweeps.

Checkerboard block Gibbs on an L x L Ising lattice (open boundary, random couplings):
``ebm_ppl.samplers.BlockGibbs`` (and single-site ``Gibbs``) on a Pyro / NumPyro model
versus the same checkerboard update written by hand in torch and in ``jax.jit``, which
uses the lattice structure (a spin's conditional is a sigmoid of its neighbours' sum).
BlockGibbs knows nothing of the structure: a block of n binary coordinates costs one
log-density call on (1 + n) C rows, so the ratio measures the price of generality.

Run: ``PYTHONPATH=.:backends python benchmarks/sampler_throughput.py [--size 8] [--chains 100]``
Prints one line per comparison: ``<backend> <sampler>: ebm_ppl X sweeps/s, hand Y, ratio X/Y``.
"""

import argparse
import time

import numpy as np

import ebm_ppl
from ebm_ppl._problem import Problem, run_kernel
from ebm_ppl.backend import get_backend
from ebm_ppl.samplers import build_kernel


def lattice(size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.4, 0.4, (size, size - 1)), rng.uniform(-0.4, 0.4, (size - 1, size))


def ising_model(fw, size, j_row, j_col):
    def model(x):
        jr, jc = fw.param("J_row", j_row), fw.param("J_col", j_col)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([size * size]).to_event(1), obs=x)
            s = (2 * x - 1).reshape((x.shape[0], size, size))
            pairs = (s[:, :, :-1] * s[:, :, 1:] * jr).sum((-1, -2)) + (s[:, :-1] * s[:, 1:] * jc).sum((-1, -2))
            ebm_ppl.factor("pairs", pairs)

    return model


def ebm_rate(backend, sampler, size, num_chains, num_sweeps, j_row, j_col):
    import types
    if backend == "pyro":
        import pyro, pyro.distributions as dist, torch
        fw = types.SimpleNamespace(param=pyro.param, plate=pyro.plate, sample=pyro.sample, dist=dist)
        jr, jc, example = torch.tensor(j_row, dtype=torch.float32), torch.tensor(j_col, dtype=torch.float32), torch.zeros(1, size * size)
    else:
        import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        fw = types.SimpleNamespace(param=numpyro.param, plate=numpyro.plate, sample=numpyro.sample, dist=dist)
        jr, jc, example = jnp.asarray(j_row, jnp.float32), jnp.asarray(j_col, jnp.float32), jnp.zeros((1, size * size))
    be = get_backend(backend)
    info = be.compile_model(ising_model(fw, size, jr, jc), be.as_data(example), (), {}, params={"J_row": jr, "J_col": jc})
    problem, ops = Problem(be.ops, info), be.ops
    kernel = build_kernel(sampler, ops, list(info.sites.values()))
    key = ops.seed(0, example)
    position = problem.init_position(key, num_chains, "base")
    aux = kernel.init(position)
    run = ops.make_sample_runner(kernel, problem.logdensity_fn(info.init_params), run_kernel)
    position, aux = run(key, position, aux, num_sweeps)  # compile / warm up
    _block(position)
    start = time.perf_counter()
    position, aux = run(key, position, aux, num_sweeps)
    _block(position)
    return num_chains * num_sweeps / (time.perf_counter() - start)


def _block(position):
    for v in position.values():
        if hasattr(v, "block_until_ready"):
            v.block_until_ready()


def checkerboard(size):
    return (np.add.outer(np.arange(size), np.arange(size)) % 2 == 0)


def torch_rate(size, num_chains, num_sweeps, j_row, j_col):
    import torch
    jr, jc = torch.tensor(j_row, dtype=torch.float32), torch.tensor(j_col, dtype=torch.float32)
    even = torch.tensor(checkerboard(size))
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 2, (num_chains, size, size), generator=g).float() * 2 - 1

    def field(s):
        f = torch.zeros_like(s)
        f[:, :, :-1] += jr * s[:, :, 1:]
        f[:, :, 1:] += jr * s[:, :, :-1]
        f[:, :-1] += jc * s[:, 1:]
        f[:, 1:] += jc * s[:, :-1]
        return f

    def sweep(s):
        for mask in (even, ~even):
            up = torch.rand(s.shape, generator=g) < torch.sigmoid(2 * field(s))
            s = torch.where(mask, up.float() * 2 - 1, s)
        return s

    for _ in range(num_sweeps):
        s = sweep(s)
    start = time.perf_counter()
    for _ in range(num_sweeps):
        s = sweep(s)
    return num_chains * num_sweeps / (time.perf_counter() - start)


def jax_rate(size, num_chains, num_sweeps, j_row, j_col):
    import jax
    import jax.numpy as jnp
    jr, jc, even = jnp.asarray(j_row, jnp.float32), jnp.asarray(j_col, jnp.float32), jnp.asarray(checkerboard(size))

    def field(s):
        f = jnp.zeros_like(s)
        f = f.at[:, :, :-1].add(jr * s[:, :, 1:]).at[:, :, 1:].add(jr * s[:, :, :-1])
        return f.at[:, :-1].add(jc * s[:, 1:]).at[:, 1:].add(jc * s[:, :-1])

    @jax.jit
    def run(key, s):
        def body(i, carry):
            s, key = carry
            for mask in (even, ~even):
                key, sub = jax.random.split(key)
                up = jax.random.uniform(sub, s.shape) < jax.nn.sigmoid(2 * field(s))
                s = jnp.where(mask, up * 2.0 - 1, s)
            return s, key
        return jax.lax.fori_loop(0, num_sweeps, body, (s, key))[0]

    key = jax.random.PRNGKey(0)
    s = jnp.where(jax.random.uniform(key, (num_chains, size, size)) < 0.5, 1.0, -1.0)
    run(key, s).block_until_ready()
    start = time.perf_counter()
    run(key, s).block_until_ready()
    return num_chains * num_sweeps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--backends", default="pyro,numpyro")
    args = parser.parse_args()
    j_row, j_col = lattice(args.size)
    even = checkerboard(args.size).reshape(-1)
    samplers = {"BlockGibbs": ebm_ppl.samplers.BlockGibbs([{"x": even}, {"x": ~even}]),
                "Gibbs": ebm_ppl.samplers.Gibbs()}
    for backend in args.backends.split(","):
        hand = (torch_rate if backend == "pyro" else jax_rate)(args.size, args.chains, args.sweeps, j_row, j_col)
        for name, sampler in samplers.items():
            rate = ebm_rate(backend, sampler, args.size, args.chains, args.sweeps, j_row, j_col)
            print(f"{backend} {name} vs hand-written checkerboard ({args.size}x{args.size}, {args.chains} chains): "
                  f"ebm_ppl {rate:.0f} chain-sweeps/s, hand {hand:.0f}, ratio {rate / hand:.4f}", flush=True)


if __name__ == "__main__":
    main()
