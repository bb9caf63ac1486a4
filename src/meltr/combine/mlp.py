"""AuxiLearn's non-linear auxiliary network: a small MLP over the loss vector."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from meltr.combine.base import COMBINERS, LossCombiner


@COMBINERS.register("mlp")
class MLPCombiner(LossCombiner):
    """``M(l) = softplus(f(l)) [+ l_0]`` with ``f`` an MLP over the loss vector.

    In the spirit of AuxiLearn's ``NonlinearHyperNet`` (Navon et al., ICLR 2021): fully connected layers with ReLU
    over the T losses of a sample, a softplus output so that the combined loss stays positive, and an optional
    skip connection that adds the primary loss so that training starts close to single-task fine-tuning.

    Args:
        tasks: task order.
        primary_task: the primary task (default: the first).
        hidden: widths of the hidden layers.
        skip_primary: add ``l_0`` to the output.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        primary_task: str | None = None,
        hidden: Sequence[int] = (32, 32),
        skip_primary: bool = True,
    ) -> None:
        super().__init__(tasks, primary_task)
        widths = [self.num_tasks, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)
        self.skip_primary = skip_primary

    def combine(self, losses: Tensor) -> Tensor:
        out = F.softplus(self.net(losses.to(self.net[0].weight.dtype))).squeeze(-1).to(losses.dtype)
        if self.skip_primary:
            out = out + losses[..., self.primary_index]
        return out
