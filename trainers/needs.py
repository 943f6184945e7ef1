"""What a piece of a training step (an objective, a regulariser, an augmentation) asks of the engine.

Each piece declares its `needs`; the engine decides from them alone whether the step may be replayed
as a CUDA graph (trainers/speed.py) and whether it may run under torchrun (trainers/distributed.py).
A piece that reads Python-side state without declaring it is caught where a CUDA graph would freeze
it (`CapturedStep`): the graph ends with a note and the step runs as written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """reads_state: reads Python-side state that changes from step to step (a step count, a schedule,
        Python's or NumPy's random numbers): a replayed CUDA graph would freeze it, so no graph.
    double_backward: differentiates a gradient (a gradient penalty): no CUDA graph, and not under
        torchrun, whose DistributedDataParallel cannot take a double backward.
    draws_random: draws random numbers (from torch, on the batch's device: a graph replays fresh ones)
        for each image it is given, so one pass over a joined real and generated batch would draw other
        numbers than two passes: the engine then calls the discriminator once per batch, as written.
    """

    reads_state: bool = False
    double_backward: bool = False
    draws_random: bool = False

    def graph_blockers(self) -> list[str]:
        """Why a CUDA graph may not replay a step with these needs (empty: it may)."""
        return [name for name in ("reads_state", "double_backward") if getattr(self, name)]
