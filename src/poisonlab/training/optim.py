"""torch.optim's optimizers without the ``torch._dynamo`` import they trigger (~1.8 s a process).

Every ``torch.optim`` optimizer imports ``torch._dynamo`` the first time one is built: ``add_param_group``,
``state_dict``, ``load_state_dict`` and ``zero_grad`` are wrapped by ``torch._disable_dynamo``, which
imports it on first call, and ``step`` by ``_use_grad_for_differentiable``, which imports it at every
call to mark graph breaks. Both wrappers matter only under ``torch.compile``, which poisonlab does not use.
For the embedded main job's ~140 small torch jobs the import was as long as ``import torch`` itself, half
of a training job's start-up (benchmarks/README.md, "A job's start-up").

``eager(cls)`` is ``cls`` with those methods unwrapped (``inspect.unwrap``: torch's own code, the
wrappers' ``__wrapped__``), and ``step`` run under ``torch.no_grad`` as the wrapper does for a
non-differentiable optimizer. Updates, state dicts and checkpoints are torch's, bit for bit
(tests/test_training.py); under ``torch.compile`` use torch.optim's classes.
"""

from __future__ import annotations

import functools
import inspect

import torch

# The methods torch wraps for torch.compile, defined on Optimizer and inherited by every optimizer.
_BASE_METHODS = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    raw_step = inspect.unwrap(cls.step)

    @functools.wraps(raw_step)
    def step(self, *args, **kwargs):
        with torch.no_grad():
            return raw_step(self, *args, **kwargs)

    methods = {name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in _BASE_METHODS}
    return type(cls.__name__, (cls,), {**methods, "step": step, "__module__": __name__,
                                       "__doc__": f"torch.optim.{cls.__name__}, without torch._dynamo."})


SGD = eager(torch.optim.SGD)
Adam = eager(torch.optim.Adam)
AdamW = eager(torch.optim.AdamW)
LBFGS = eager(torch.optim.LBFGS)
