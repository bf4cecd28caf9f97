"""SquaredReLUMLP: act24's FFN over two existing nn.Linear layers, under their own names.

Model conversion swaps a model's MLP for this module: the Linear layers (and so the
state-dict keys, biases and any weight tying) stay exactly as they were.
"""

from __future__ import annotations

from torch import nn

from .module import SquaredReLUFFNBase


class SquaredReLUMLP(SquaredReLUFFNBase):
    """down(relu(up(x))**2) with act24's 2:4 machinery.

    up:    nn.Linear(d, hidden), stored as attribute `up_name`.
    down:  nn.Linear(hidden, d), stored as attribute `down_name`.
    The options (sparse, dense_fraction, perm_seed, track_stats) are SquaredReLUFFNBase's.
    """

    def __init__(self, up: nn.Linear, down: nn.Linear, *, up_name: str = "up_proj", down_name: str = "down_proj",
                 **options):
        for name, layer in (("up", up), ("down", down)):
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"{name} must be an nn.Linear, got {type(layer).__name__}")
        if down.in_features != up.out_features or down.out_features != up.in_features:
            raise ValueError(f"down must map hidden={up.out_features} back to d={up.in_features}, "
                             f"got nn.Linear({down.in_features}, {down.out_features})")
        if up_name == down_name:
            raise ValueError(f"up_name and down_name must differ, both are {up_name!r}")
        super().__init__(up.in_features, up.out_features, **options)
        self.up_name, self.down_name = up_name, down_name
        self.add_module(up_name, up)
        self.add_module(down_name, down)

    def ffn_weights(self):
        up, down = self._modules[self.up_name], self._modules[self.down_name]
        return up.weight, down.weight, up.bias, down.bias

    def extra_repr(self) -> str:
        return super().extra_repr() + f", up={self.up_name}, down={self.down_name}"
