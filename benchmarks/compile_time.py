"""One-off cost of the first NumPyro fit in a fresh process, and what a second fit costs.

For each benchmark model (the 64x64 RBM of ``rbm_pcd.py``, the MLP energy of
``mala_neural.py``), a fresh Python process imports everything, then times
``fit_unnormalized`` for one epoch twice: the first call traces the model, checks the
samplers' fast paths, compiles the update (XLA) and runs one epoch; the second call
finds the compiled update kept and only runs (one-off = first − second). ``jax_log_compiles``
gives the XLA compilation time of the scanned update itself.

Run: ``python benchmarks/compile_time.py``
"""

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, logging, sys, time
sys.path.insert(0, {here!r})
import jax
import jax.numpy as jnp
which = {which!r}
if which == "rbm":
    import rbm_pcd
    from _bench import binarized_digits
    fit = rbm_pcd.ebm_ppl_fit("numpyro", binarized_digits(1700), 64, 0.01, 100, 100)
else:
    import mala_neural
    fit = mala_neural.ebm_ppl_fit("numpyro", mala_neural.two_moons(), 0.05, 100, 100)
jnp.zeros(1).block_until_ready()
times = []
class Grab(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "Finished XLA compilation of jit(run)" in msg:
            times.append(float(msg.split(" in ")[-1].split()[0]))
logging.getLogger("jax").addHandler(Grab())
jax.config.update("jax_log_compiles", True)
start = time.perf_counter(); fit(1); first = time.perf_counter() - start
start = time.perf_counter(); fit(1); second = time.perf_counter() - start
print(json.dumps({{"first": first, "second": second, "xla_update": sum(times)}}))
"""


def main():
    for which, label in (("rbm", "RBM 64x64 BlockGibbs PCD-1"), ("mala", "MLP energy MALA PCD-1")):
        out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), which=which)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:28s} first fit (1 epoch) {r['first']:5.2f} s, second {r['second']:5.2f} s, "
              f"one-off {r['first'] - r['second']:5.2f} s (XLA compilation of the scanned update "
              f"{r['xla_update']:4.2f} s)", flush=True)


if __name__ == "__main__":
    main()
