"""The Pyro (PyTorch) backend of ebm_ppl."""

from .ops import ops
from .tracing import compile_model, as_data
from .param_store import restore_params, store_params, snapshot_params, restore_snapshot
from .optim import make_optimizer
from .parallel import make_placement

__all__ = ["ops", "compile_model", "as_data", "restore_params", "store_params", "snapshot_params", "restore_snapshot",
           "make_optimizer", "make_placement"]
