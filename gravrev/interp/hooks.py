"""Hooks on the residual stream after each block: one place to register them, none can leak.

Capture (activations), gradient projection (a blocking objective) and steering (ablation,
addition) all read or rewrite a block's residual output through `on_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

# Called with a block's residual output (B, T, d); returns a replacement, or None to keep it.
ResidFn = Callable[[torch.Tensor], torch.Tensor | None]


def blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer blocks of a GPT-2, Llama or similar causal LM, in order."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) == n
            and name.endswith(("h", "layers", "blocks"))
        ):
            return module
    raise ValueError(f"no block list of length {n} found in {type(model).__name__}")


def hidden_state(output) -> torch.Tensor:
    """A block's residual output, whether the block returns a tuple or a tensor."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output, hidden: torch.Tensor):
    """The block's output with its residual stream replaced, in the block's own form."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def on_blocks(
    model: PreTrainedModel,
    after: Mapping[int, ResidFn],
    before_first: ResidFn | None = None,
) -> Iterator[None]:
    """While inside, call after[layer] on block `layer`'s residual output (and before_first on
    block 0's input); a returned tensor replaces the stream. Every hook is removed on exit."""
    stack = blocks(model)
    handles = []
    try:
        if before_first is not None:

            def pre_hook(_module, args, kwargs):
                if args:
                    return (before_first(args[0]), *args[1:]), kwargs
                kwargs["hidden_states"] = before_first(kwargs["hidden_states"])
                return args, kwargs

            handles.append(stack[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        for layer, fn in after.items():

            def hook(_module, _inputs, output, fn=fn):
                new = fn(hidden_state(output))
                return None if new is None else replace_hidden(output, new)

            handles.append(stack[layer].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()
