"""Throughput of a PCD fit of the 784 x 500 Bernoulli RBM against the number of devices
(NumPyro, ``fit_unnormalized(devices=)``) or ranks (Pyro, torch.distributed with gloo on
CPU / NCCL on GPU), with the speed-up over one device / rank.

The fit: ``PCD(num_chains=--chains, num_steps=1)`` with ``BlockGibbs(["h", "v"])`` and Adam
on ``--data`` synthetic binary examples, minibatches of ``--batch``. Timed by difference,
``fit(1 + k epochs) - fit(1 epoch)``, so compilation and tracing cancel; the median of
``--runs`` runs. Reported: updates/s and chain-sweeps/s (chains x Gibbs sweeps per second,
summed over devices/ranks).

On a CPU-only machine NumPyro's devices are simulated
(``--xla_force_host_platform_device_count``): they share the machine's cores, so the
speed-up is bounded by the number of free cores (and XLA's CPU backend already uses
several threads for one device). Run:
``python benchmarks/scaling.py [--backends numpyro,pyro] [--devices 1,2] [--size large|toy]``.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_NUM_THREADS", "1")

SIZES = {"large": dict(visible=784, hidden=500, chains=1000, batch=500, data=2000),
         "toy": dict(visible=16, hidden=8, chains=8, batch=8, data=32)}


def make_fit(backend, cfg, devices):

    import ebm_ppl
    from _bench import rbm_model, synthetic_binary

    x = synthetic_binary(cfg["data"], cfg["visible"])
    model, _ = rbm_model(backend, cfg["visible"], cfg["hidden"])
    if backend == "pyro":
        import pyro
        import torch

        data, make_opt = torch.as_tensor(x), lambda: pyro.optim.Adam({"lr": 1e-3})
    else:
        import jax.numpy as jnp
        import optax

        adam = optax.adam(1e-3)
        data, make_opt = jnp.asarray(x), lambda: adam

    def fit(num_epochs):
        if backend == "pyro":
            pyro.clear_param_store()
        kw = {} if backend == "pyro" else {"devices": devices}
        result = ebm_ppl.fit_unnormalized(
            model, data, ebm_ppl.PCD(num_chains=cfg["chains"], num_steps=1), ebm_ppl.samplers.BlockGibbs(["h", "v"]),
            optimizer=make_opt(), num_epochs=num_epochs, batch_size=cfg["batch"], progress_bar=False, **kw)
        if backend == "numpyro":
            import jax

            jax.block_until_ready(result.params)
        return result

    return fit


def time_fit(fit, epochs, runs):
    fit(1)  # compile
    per_epoch = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fit(1)
        t1 = time.perf_counter()
        fit(1 + epochs)
        t2 = time.perf_counter()
        per_epoch.append(max((t2 - t1) - (t1 - t0), 1e-9) / epochs)
    return statistics.median(per_epoch)


def report(backend, n, cfg, sec):
    updates = cfg["data"] // cfg["batch"]
    return dict(backend=backend, devices=n, sec_per_epoch=sec, updates_per_s=updates / sec,
                chain_sweeps_per_s=updates * cfg["chains"] / sec)


def numpyro_rows(cfg, counts, epochs, runs):
    import jax

    rows = []
    for n in counts:
        if n > jax.device_count():
            print(f"numpyro: {n} devices asked, {jax.device_count()} exist; skipped", file=sys.stderr)
            continue
        rows.append(report("numpyro", n, cfg, time_fit(make_fit("numpyro", cfg, n if n > 1 else None), epochs, runs)))
    return rows


def pyro_worker(rank, world, port, cfg, epochs, runs):
    import torch.distributed as dist

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sec = time_fit(make_fit("pyro", cfg, None), epochs, runs)
    finally:
        if world > 1:
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(report("pyro", world, cfg, sec)))


def pyro_rows(args, cfg, counts):
    rows = []
    for world in counts:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", f"{r},{world},{port}", "--size", args.size,
                                   "--epochs", str(args.epochs), "--runs", str(args.runs)],
                                  stdout=subprocess.PIPE, text=True) for r in range(world)]
        outs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"pyro with {world} ranks failed")
        rows.append(json.loads(outs[0].strip().splitlines()[-1]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="numpyro,pyro")
    parser.add_argument("--devices", default="1,2", help="device / rank counts to time")
    parser.add_argument("--size", default="large", choices=sorted(SIZES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = SIZES[args.size]
    if args.worker:
        rank, world, port = map(int, args.worker.split(","))
        return pyro_worker(rank, world, port, cfg, args.epochs, args.runs)
    counts = [int(c) for c in args.devices.split(",")]
    backends = args.backends.split(",")
    if "numpyro" in backends:  # before jax is imported: simulated CPU devices (no effect on GPUs)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={max(counts)}")
    print(f"784x500 RBM scaling, size={args.size} {cfg}, {os.cpu_count()} CPUs")
    for backend in backends:
        rows = numpyro_rows(cfg, counts, args.epochs, args.runs) if backend == "numpyro" else pyro_rows(args, cfg, counts)
        base = rows[0]["sec_per_epoch"] if rows else None
        for r in rows:
            print(f"{backend:8s} {r['devices']} {'devices' if backend == 'numpyro' else 'ranks  '}: "
                  f"{r['sec_per_epoch'] * 1e3:9.1f} ms/epoch  {r['updates_per_s']:8.2f} updates/s  "
                  f"{r['chain_sweeps_per_s']:10.0f} chain-sweeps/s  speed-up {base / r['sec_per_epoch']:.2f}x")


if __name__ == "__main__":
    main()
