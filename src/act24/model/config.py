"""Model configuration: plain dataclasses and named presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

FFN_KINDS = ("relu2-sparse", "relu2", "swiglu")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    hidden: int = 512  # Squared-ReLU hidden size; SwiGLU gets 2/3 of it (same parameter count)
    ffn: str = "relu2-sparse"
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "seq_len", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                flag = " (--seq-len)" if name == "seq_len" else ""
                raise ValueError(f"{name}{flag} must be a positive int, got {value!r}")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head size d_model/n_heads = {self.d_model // self.n_heads} must be even for RoPE")
        if self.hidden % 64:
            raise ValueError(f"hidden must be a multiple of 64 (2:4 groups and the GPU packer), got {self.hidden}")

    @property
    def swiglu_hidden(self) -> int:
        """SwiGLU has 3 matrices to ReLU²'s 2: 2/3 of the hidden size matches parameters (rounded to 64)."""
        return max(64, round(2 * self.hidden / 3 / 64) * 64)


PRESETS: dict[str, ModelConfig] = {
    # a couple of minutes on a laptop CPU
    "tiny": ModelConfig(d_model=128, n_layers=4, n_heads=4, seq_len=128, hidden=512),
    "25m": ModelConfig(d_model=512, n_layers=8, n_heads=8, seq_len=1024, hidden=2048),
    # GPT-2 small's width; 18 layers, not 12, because a byte vocabulary has almost no embedding weights
    "125m": ModelConfig(d_model=768, n_layers=18, n_heads=12, seq_len=1024, hidden=3072),
    "1b": ModelConfig(d_model=2048, n_layers=24, n_heads=16, seq_len=4096, hidden=8192),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
