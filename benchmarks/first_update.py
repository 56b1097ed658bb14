"""Time to the first update: ebm_ppl's first 1-epoch NumPyro fit against the hand-written JAX loop's first call.

Each measurement is a fresh single-threaded Python process (``OMP_NUM_THREADS=1``, XLA
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, and on CPU pinned to
one core, ``--cores 1``: XLA's compiler and runtime otherwise still use every core) that imports
everything, initialises JAX (one tiny computation), then times one call:

- ``ebm_ppl``: ``fit_unnormalized`` of the 64x64 digits RBM of ``rbm_pcd.py`` for one epoch
  (PCD-1, 100 chains, ``BlockGibbs(["h", "v"])``, Adam, batch 100): tracing the model,
  the structure probes, the samplers' checks, compiling the update and running 17 updates;
- ``hand``: the same update written by hand (``rbm_pcd.jax_epoch``): building its state
  and the first call of its jitted ``lax.scan`` epoch (compiling included).

The two kinds of process take turns (``--runs`` rounds); each prints its wall and CPU
seconds (``time.process_time``, the figure that other jobs on a shared machine do not
inflate) and the number of XLA compilations. The ratio is the median of the per-round
ratios of CPU seconds.

With ``--cache DIR`` every process uses JAX's persistent compilation cache in ``DIR``
(filled first by one untimed process of each kind): the first fit of a later process.

Run: ``python benchmarks/first_update.py [--runs 3] [--what fit|sample] [--cache DIR] [--platform cpu|default] [--cores 1]``
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, logging, sys, time
sys.path.insert(0, {here!r})
import jax
import jax.numpy as jnp
import numpy as np
import rbm_pcd
from _bench import binarized_digits, rbm_model
if {cache!r}:
    jax.config.update("jax_compilation_cache_dir", {cache!r})
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jnp.zeros(1).block_until_ready()  # JAX initialised
x = binarized_digits(1700)
compiles = []
class Grab(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "Finished XLA compilation" in msg:
            compiles.append(float(msg.split(" in ")[-1].split()[0]))
logging.getLogger("jax").addHandler(Grab())
jax.config.update("jax_log_compiles", True)
which = {which!r}
if which == "ebm_ppl":
    import ebm_ppl
    fit = rbm_pcd.ebm_ppl_fit("numpyro", x, 64, 0.01, 100, 100)
    w0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fit(1).params)
elif which == "sample":
    import ebm_ppl
    model, W = rbm_model("numpyro", 64, 64)
    params = {{"W": jnp.asarray(W), "b": jnp.zeros(64), "c": jnp.zeros(64)}}
    w0, c0 = time.perf_counter(), time.process_time()
    out = ebm_ppl.sample(model, params, jnp.asarray(x[:1]), num_samples=100, num_chains=100, num_warmup=1,
                         sampler=ebm_ppl.samplers.BlockGibbs(["h", "v"]))
    jax.block_until_ready(out)
else:
    _, W = rbm_model("numpyro", 64, 64)
    w0, c0 = time.perf_counter(), time.process_time()
    run, block = rbm_pcd.jax_epoch(x, W, 0.01, 100, 100)
    block(run())
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({{"wall": wall, "cpu": cpu, "compiles": len(compiles), "xla_s": sum(compiles)}}))
"""

ENV = {"OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
       "JAX_PLATFORMS": "cpu"}


def once(which, cache="", platform="cpu"):
    """One fresh process timing ``which``: dict with wall, cpu (seconds), compiles, xla_s
    (``platform="default"``: JAX's default device, e.g. a GPU, single-threaded host)."""
    env = dict(os.environ, **(ENV if platform == "cpu" else {"OMP_NUM_THREADS": "1"}))
    out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), which=which, cache=cache)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--what", choices=("fit", "sample"), default="fit",
                        help="ebm_ppl's first 1-epoch fit, or the first call of `sample` (100 chains, one warm-up "
                             "sweep and one sweep kept)")
    parser.add_argument("--cache", default="", help="a folder for JAX's persistent compilation cache (filled by "
                                                          "an untimed process first): the time with a warm cache")
    parser.add_argument("--platform", choices=("cpu", "default"), default="cpu",
                        help="cpu (single-threaded XLA), or JAX's default device (benchmarks/gpu.sh)")
    parser.add_argument("--cores", type=int, default=1,
                        help="on --platform cpu, pin the measured processes to this many cores (0: do not pin)")
    args = parser.parse_args()
    if args.platform == "cpu":  # the child processes inherit the affinity
        from _bench import pin_cores

        print(f"cores: {pin_cores(args.cores) or 'all'}", flush=True)
    if args.cache:
        for which in ("ebm_ppl" if args.what == "fit" else "sample", "hand"):
            once(which, args.cache, args.platform)
    mine = "ebm_ppl" if args.what == "fit" else "sample"
    rows = {mine: [], "hand": []}
    for _ in range(args.runs):
        for which in rows:
            r = once(which, args.cache, args.platform)
            rows[which].append(r)
            print(f"  {which:8s} wall {r['wall']:5.2f} s  CPU {r['cpu']:5.2f} s  "
                  f"{r['compiles']:3d} XLA compiles ({r['xla_s']:4.2f} s)", flush=True)
    for which, rs in rows.items():
        print(f"{which:8s} median wall {statistics.median(r['wall'] for r in rs):5.2f} s, "
              f"CPU {statistics.median(r['cpu'] for r in rs):5.2f} s, "
              f"compiles {statistics.median(r['compiles'] for r in rs):.0f}")
    ratios = [a["cpu"] / b["cpu"] for a, b in zip(rows[mine], rows["hand"])]
    wall = [a["wall"] / b["wall"] for a, b in zip(rows[mine], rows["hand"])]
    print(f"ratio {mine} / hand-written JAX first call: CPU {statistics.median(ratios):.2f} "
          f"(per round {', '.join(f'{r:.2f}' for r in ratios)}), wall {statistics.median(wall):.2f}")


if __name__ == "__main__":
    main()
