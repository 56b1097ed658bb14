"""Pyro handlers used while a traced model runs: the light log-density messenger (conditions
latents, substitutes parameters, sums log-probabilities per example), the tensor swap for a
module's own parameters, and the site recorder that explains a failed first run."""

import torch
import pyro.distributions as dist
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from .param_store import stored_unconstrained


def _is_factor(site):
    return isinstance(site["fn"], dist.Unit) or site["infer"].get("is_auxiliary", False)


class _LogDensityMessenger(Messenger):
    """One light handler instead of trace + condition + substitute: conditions the latent
    sites, substitutes parameters, and sums each sample site's log-probability per example
    as the model runs (no Trace object is built): ``total`` is log p̃, ``base`` the part
    from the sites' distributions (factors excluded)."""

    def __init__(self, latents, params, plate_name, num_chains, skip=(), record=None):
        super().__init__()
        self.latents, self.params = latents, params
        self.plate_name, self.num_chains = plate_name, num_chains
        self.skip, self.record = skip, record  # sites left out of the total; name -> log-prob
        self.total = self.base = 0.0
        self.swap, self.swap_entered = _SwapTensors(), False

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        if self.swap_entered:
            self.swap.__exit__(*exc)
            self.swap_entered = False
        return out

    def _pyro_param(self, msg):
        if self.params is None or msg["name"] not in self.params:
            return
        value = self.params[msg["name"]]
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if isinstance(init, torch.nn.Parameter):
            # a module's own parameter (pyro.module, an nn.Parameter of a PyroModule): the
            # module computes with that tensor, not with what pyro.param returns, so every
            # use of it is replaced while the model runs (and pyro.module's
            # update_module_params, seeing its own tensor back, leaves the module alone)
            if not self.swap.swap:  # entered at the first module parameter only
                self.swap.__enter__()
                self.swap_entered = True
            self.swap.swap[id(init)] = (init, value)
            stored = stored_unconstrained(msg["name"])
            if stored is not None:
                self.swap.swap[id(stored)] = (stored, value)
            return
        msg["value"] = value

    def _pyro_sample(self, msg):
        value = self.latents.get(msg["name"])
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg):
            return
        lp = msg["fn"].log_prob(msg["value"])
        mask = msg["mask"]
        if mask is not None and mask is not True:
            lp = lp * mask if mask is not False else lp * 0
        if msg["scale"] != 1.0:
            lp = msg["scale"] * lp
        lp = _per_example(lp, msg, self.plate_name, self.num_chains)
        if self.record is not None:
            self.record[msg["name"]] = lp
        if msg["name"] in self.skip:
            return
        self.total = self.total + lp
        if not _is_factor(msg):
            self.base = self.base + lp


class _SwapTensors(TorchFunctionMode):
    """Replaces given tensors (by identity) in every torch operation: a module's parameters
    by the values a call substitutes for them."""

    def __init__(self):
        super().__init__()
        self.swap = {}  # id -> (tensor, replacement); the tensor is kept so its id stays unique

    def _replace(self, a):
        hit = self.swap.get(id(a)) if isinstance(a, torch.Tensor) else None
        return a if hit is None or hit[0] is not a else hit[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.swap:
            args, kwargs = tree_map(self._replace, (tuple(args), kwargs or {}))
        return func(*args, **(kwargs or {}))


class _Recorder(Messenger):
    """Records sample sites as they happen, so a model that fails part-way can be explained."""

    def __init__(self):
        super().__init__()
        self.sites = []

    def _pyro_post_sample(self, msg):
        self.sites.append(msg)


def _per_example(lp, site, plate_name, num_chains):
    lp = torch.as_tensor(lp)
    if lp.dim() == 0:
        return lp
    frame = next((f for f in site["cond_indep_stack"] if f.name == plate_name), None)
    if frame is not None and frame.dim is not None and lp.dim() >= -frame.dim:
        lp = lp.movedim(frame.dim, 0)
    elif lp.shape[0] != num_chains:
        return lp.sum()
    return lp.reshape((lp.shape[0], -1)).sum(-1)


class _AncestralDraws(Messenger):
    """Draw every site of ``transforms`` (site name -> its bijection from unconstrained
    space), observed ones included, from its distribution given the values drawn before
    it (torch's global generator): a joint draw from the model's base measure, the one
    that ``log_density_parts``' log base is the density of. A site whose distribution has
    no sampler (an improper base such as ``ImproperUniform``) is drawn uniformly in (-2, 2)
    in unconstrained space, like Pyro's ``init_to_uniform``."""

    def __init__(self, transforms, device):
        super().__init__()
        self.transforms, self.device = transforms, device

    def _pyro_sample(self, msg):
        if msg["name"] not in self.transforms or site_is_subsample(msg):
            return
        fn = msg["fn"]
        try:
            value = fn.sample()
        except NotImplementedError:  # an improper base
            shape = fn.batch_shape + fn.event_shape
            value = self.transforms[msg["name"]](torch.rand(shape, device=self.device) * 4 - 2)
        msg["value"], msg["is_observed"] = value.detach(), False
