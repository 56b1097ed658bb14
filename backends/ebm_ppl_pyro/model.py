"""The Pyro backend's model compilation, re-exported from the modules that hold it:
:mod:`.tracing` (trace -> ``ModelInfo``), :mod:`.functions` (the traced model's functions),
:mod:`.capture` (captured graphs), :mod:`.graph_passes` (their rewrites), :mod:`.handlers`
(messengers) and :mod:`.param_store`."""

from .capture import _GRAPHS, _GRAPHS_SIZE, _Captured, _CapturedGrad, _CapturedWeighted
from .functions import _Functions
from .graph_passes import _simplify
from .param_store import restore_params, restore_snapshot, snapshot_params, store_params
from .tracing import as_data, compile_model

__all__ = ["compile_model", "as_data", "restore_params", "store_params", "snapshot_params", "restore_snapshot"]
