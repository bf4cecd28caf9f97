"""The decode timer of `act24 bench prefill` credits each token to the mode it ran in."""

import time

import torch

from act24.bench import prefill
from act24.ffn.module import SquaredReLUFFNBase


def test_decode_latency_is_credited_to_the_mode_that_ran(monkeypatch):
    run = SquaredReLUFFNBase._run

    def slow_when_sparse(self, *args):
        if self.sparse:
            time.sleep(0.005)
        return run(self, *args)

    monkeypatch.setattr(SquaredReLUFFNBase, "_run", slow_when_sparse)
    model, _ = prefill.build_model("tiny", torch.device("cpu"), torch.float32)
    ids = torch.randint(3, 128, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        speed = prefill.decode_tokens_per_s(model, ids, steps=6)
    extra_s = 1 / speed["sparse"] - 1 / speed["dense"]
    # 2 layers x 5 ms per sparse token; tokens credited to the wrong mode would cancel out
    assert extra_s > 0.008, speed
