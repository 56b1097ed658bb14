"""The fit: a :class:`Trainer` bound once to a data set, and :func:`fit_unnormalized`.

- :mod:`.checks`: the arguments, the data and a Trainer.update batch, checked before anything changes;
- :mod:`.step`: one parameter update as a pure function of the loop's :class:`~.step.Carry`;
- :mod:`.bind`: binding to data: the compiled model, kernels, optimizer and update (:mod:`.cache`
  keeps NumPyro's compiled updates across calls);
- :mod:`.resume`: what ``resume=`` must agree with, and the state a fit starts from;
- :mod:`.loop`: the loop around chunks of updates (minibatches, chunk sizes, stops, results);
- :mod:`.trainer`: :class:`Trainer` and :func:`fit_unnormalized`.
"""

from .trainer import Trainer, fit_unnormalized

__all__ = ["Trainer", "fit_unnormalized"]
