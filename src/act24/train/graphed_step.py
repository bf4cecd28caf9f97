"""The training step replayed from a CUDA graph: forward, backward, clipping and the optimizer step
captured once per FFN mode (dense warm-up, then 2:4) and replayed on new batches.

A replay skips the step's host work: Python and kernel launches, which dominate small models
(docs/performance.md). Needs a capturable optimizer with a
tensor learning rate (set before each replay) and gradients left unset before the capture, so
that the captured backward writes them instead of accumulating into them.
"""

from __future__ import annotations

import torch

EAGER_STEPS = 2  # real steps run eagerly after each mode change, before the capture: they compile
# kernels, search cuSPARSELt algorithms and fill the token-grouping cache, none of which may run
# inside a capture


def train_step_body(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, autocast: dict,
                    x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, backward, clipping and the optimizer step (the same eagerly and in a graph); the loss."""
    with torch.autocast(**autocast):
        _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


class GraphedStep:
    """Runs training steps for one model and optimizer; `step(x, y, mode, stats)` returns the loss
    tensor (updated by every replay: read it only when needed, each read waits for the GPU).

    One graph per FFN mode and statistics flag: steps that log read the FFN statistics, which the
    other steps skip (in dense mode they cost as much as the FFN), so those get their own graph.
    A replay runs no Python: the FFNs' `last_stats` read the tensors the capture left in place
    (valid until a forward outside the graph tracks statistics), and stats hooks are not called.
    Each graph keeps its own memory pool: activation memory twice over, fine for the small models
    graphs are for.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, autocast: dict):
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip
        # autocast's cast-weight cache would keep tensors from the capture: the docs' rule for graphs
        self.autocast = {**autocast, "cache_enabled": False}
        self.mode = None
        self.graphs: dict[bool, tuple] = {}  # stats -> (graph, static x, static y, static loss)
        self.eager_left = 0

    def _body(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step_body(self.model, self.optimizer, self.grad_clip, self.autocast, x, y)

    def step(self, x: torch.Tensor, y: torch.Tensor, mode, stats: bool) -> torch.Tensor:
        """One step; the FFNs' track_stats must already be `stats`."""
        if mode != self.mode:  # a new FFN mode runs other kernels: drop the graphs, warm up again
            self.mode, self.graphs, self.eager_left = mode, {}, EAGER_STEPS
            self.optimizer.zero_grad(set_to_none=True)  # the old graphs' gradients are not ours to add to
        if self.eager_left:
            self.eager_left -= 1
            # on a side stream, as capture requires of the work before it
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._body(x, y)
                self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if stats not in self.graphs:
            # the capture must see no gradients, so that its backward writes them (an earlier graph
            # keeps writing its own, at the addresses it captured)
            self.optimizer.zero_grad(set_to_none=True)
            static_x, static_y, graph = x.clone(), y.clone(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_loss = self._body(static_x, static_y)
            self.graphs[stats] = (graph, static_x, static_y, static_loss)
            graph.replay()  # the capture recorded this step's work without running it
            return static_loss
        graph, static_x, static_y, static_loss = self.graphs[stats]
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return static_loss
