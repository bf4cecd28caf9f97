"""act24.convert on tiny random transformers models (no downloads) and on act24's own model."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.integrations.conversion import KNOWN_MLPS
from act24.model import DecoderLM, ModelConfig

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tiny_models():
    yield "nemotron", transformers.NemotronForCausalLM(transformers.NemotronConfig(**TINY))
    yield "arcee", transformers.ArceeForCausalLM(transformers.ArceeConfig(**TINY))
    yield "persimmon", transformers.PersimmonForCausalLM(
        transformers.PersimmonConfig(**{k: v for k, v in TINY.items() if k != "num_key_value_heads"}))
    yield "nanochat", transformers.NanoChatForCausalLM(transformers.NanoChatConfig(**TINY))
    if hasattr(transformers, "Jais2ForCausalLM"):  # transformers >= 5.25
        yield "jais2", transformers.Jais2ForCausalLM(transformers.Jais2Config(**TINY))




def build(name):
    torch.manual_seed(0)
    return dict(tiny_models())[name].eval()


class MaskedReLU2(torch.nn.Module):
    """The activation the sparse model applies: relu² under the token-wise 2:4 mask."""

    def forward(self, h):
        y2 = ref.squared_relu(h)
        return ref.masked_activation(y2)


def mlps(model):
    return [m for m in model.modules() if type(m).__name__ in KNOWN_MLPS]


@pytest.mark.parametrize("name", ["nemotron", "arcee", "persimmon", "nanochat", "jais2"])
def test_convert_keeps_keys_and_matches_the_masked_model(name):
    if name == "jais2" and not hasattr(transformers, "Jais2ForCausalLM"):
        pytest.skip("this transformers has no Jais2 model")
    model = build(name)
    original = build(name)
    keys = list(model.state_dict())
    report = act24.convert(model)
    assert len(report.converted) == 2 and not mlps(model)
    assert all(isinstance(model.get_submodule(c.path), act24.SquaredReLUMLP) for c in report.converted)
    assert list(model.state_dict()) == keys
    model.load_state_dict(original.state_dict(), strict=True)  # round trip both ways
    original.load_state_dict(model.state_dict(), strict=True)

    for mlp in mlps(original):
        act_name = KNOWN_MLPS[type(mlp).__name__][2]
        setattr(mlp, act_name, MaskedReLU2())
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        expected, got = original(ids).logits, model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    out = model.generate(ids[:1, :5], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out, original.generate(ids[:1, :5], max_new_tokens=6, do_sample=False, pad_token_id=0))


def test_dense_mode_after_convert_is_the_original_model():
    model, original = build("nemotron"), build("nemotron")
    act24.convert(model, sparse=False)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=0)


def test_converted_model_trains():
    model = build("persimmon").train()  # Persimmon's MLP has biases
    act24.convert(model, perm_seed=1)
    ids = torch.randint(0, 97, (2, 8))
    model(ids, labels=ids).loss.backward()
    mlp = model.get_submodule("model.layers.0.mlp")
    assert mlp.dense_h_to_4h.bias.grad is not None and torch.isfinite(mlp.dense_h_to_4h.weight.grad).all()


def test_report_lists_and_refuses_gated_and_other_activations():
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    with pytest.raises(ValueError, match="gated MLP"):
        act24.convert(llama)
    gelu = transformers.NemotronForCausalLM(transformers.NemotronConfig(**TINY, hidden_act="gelu"))
    with pytest.raises(ValueError, match="activation GELUActivation is not Squared ReLU"):
        act24.convert(gelu)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        act24.convert("not a model")


def test_filter_and_report_text():
    model = build("nemotron")
    report = act24.convert(model, filter_fn=lambda m, path: ".0." in path + ".")
    assert [c.path for c in report.converted] == ["model.layers.0.mlp"]
    assert "converted model.layers.0.mlp (NemotronMLP, d=32, hidden=128)" in str(report)
    with pytest.raises(ValueError, match="filter_fn rejected"):
        act24.convert(build("nemotron"), filter_fn=lambda m, path: False)


def test_converting_again_reconfigures():
    model = build("nemotron")
    act24.convert(model, sparse=False)
    report = act24.convert(model, sparse=True, dense_fraction=0.1)
    assert report.converted and all(c.reconfigured for c in report.converted)
    assert str(report).splitlines()[1].startswith("  reconfigured model.layers.0.mlp (SquaredReLUMLP")
    assert all(m.sparse and m.dense_fraction == 0.1 for m in model.modules() if isinstance(m, act24.SquaredReLUMLP))


def test_own_model_is_switched_to_sparse_and_swiglu_is_refused():
    lm = DecoderLM(ModelConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=2, hidden=64, seq_len=16))
    report = act24.convert(lm, dense_fraction=0.1)
    assert len(report.converted) == 2 and all(f.sparse and f.dense_fraction == 0.1 for f in lm.ffn_modules())
    swiglu = DecoderLM(ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, hidden=64, seq_len=16,
                                   ffn="swiglu"))
    with pytest.raises(ValueError, match="blocks.0.ffn \\(SwiGLU\\): gated"):
        act24.convert(swiglu)


def test_nemotron_h_converts_dense_and_shared_expert_mlps_and_reports_the_experts():
    cfg = transformers.NemotronHConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, hybrid_override_pattern="E*-", n_routed_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=64, moe_shared_expert_intermediate_size=128, mamba_num_heads=4, mamba_head_dim=16,
        ssm_state_size=16, n_groups=1)
    report = act24.convert(transformers.NemotronHForCausalLM(cfg))
    assert {c.path for c in report.converted} == {"model.layers.0.mixer.shared_experts", "model.layers.2.mixer"}
    experts = [s for s in report.skipped if s.path == "model.layers.0.mixer.experts"]
    assert experts and "mixture-of-experts" in experts[0].reason


def test_linear_subclasses_and_hooked_layers_are_left_alone():
    class LoRALinear(torch.nn.Linear):
        pass

    model = build("nemotron")
    mlp0, mlp1 = model.model.layers[0].mlp, model.model.layers[1].mlp
    lora = LoRALinear(32, 128, bias=False)
    lora.weight.data.copy_(mlp0.up_proj.weight)
    mlp0.up_proj = lora
    mlp1.down_proj.register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError) as err:
        act24.convert(model)
    assert "'up_proj' is LoRALinear, not a plain nn.Linear" in str(err.value)
    assert "'down_proj' has hooks" in str(err.value)


def test_hooked_mlps_and_mlps_with_buffers_are_left_alone():
    model = build("nemotron")
    model.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    model.model.layers[1].mlp.register_buffer("scale", torch.ones(1))
    with pytest.raises(ValueError) as err:
        act24.convert(model)
    assert "hooks (offloading, adapters, probes) that replacing it would drop" in str(err.value)
    assert "buffers outside the two Linear layers would be lost: ['scale']" in str(err.value)


def test_known_mlps_with_hooked_parts_or_wrapped_forwards_are_left_alone():
    model = build("nemotron")
    first, second = model.model.layers[0].mlp, model.model.layers[1].mlp
    first.act_fn.register_forward_hook(lambda *a: None)  # an activation probe that would stop firing
    second.forward = lambda x: type(second).forward(second, x)
    with pytest.raises(ValueError) as err:
        act24.convert(model)
    assert "model.layers.0.mlp (NemotronMLP): 'act_fn' has hooks" in str(err.value)
    assert "model.layers.1.mlp (NemotronMLP): its forward is replaced on the instance" in str(err.value)
    model = build("nemotron")
    model.model.layers[0].mlp.down_proj.register_full_backward_hook(lambda *a: None)
    report = act24.convert(model)
    assert [s.reason for s in report.skipped] == ["'down_proj' has hooks (offloading, adapters, probes) that the "
                                                  "fused FFN would bypass"]


def test_an_error_during_convert_leaves_the_model_as_it_was():
    model = build("nemotron")

    def filter_fn(module, path):
        if path == "model.layers.1.mlp":
            raise RuntimeError("filter failed")
        return True

    with pytest.raises(RuntimeError, match="filter failed"):
        act24.convert(model, filter_fn=filter_fn)
    assert len(mlps(model)) == 2


def test_a_shared_mlp_is_replaced_at_every_path_by_one_module():
    model = build("nemotron")
    shared = model.model.layers[0].mlp
    model.model.layers[1].mlp = shared
    report = act24.convert(model)
    assert [c.path for c in report.converted] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert model.model.layers[0].mlp is model.model.layers[1].mlp
    assert isinstance(model.model.layers[1].mlp, act24.SquaredReLUMLP) and not mlps(model)


def test_the_model_itself_being_an_mlp_is_explained():
    with pytest.raises(ValueError, match="model itself is a NemotronMLP, which convert cannot replace in place"):
        act24.convert(build("nemotron").model.layers[0].mlp)


def test_options_are_checked_and_seeds_applied():
    model = build("nemotron")
    with pytest.raises(ValueError, match="dense_fraction must be in \\[0, 1\\]"):
        act24.convert(model, dense_fraction=2.0)
    with pytest.raises(TypeError, match="sparse must be a bool"):
        act24.convert(model, sparse="no")
    with pytest.raises(TypeError, match="dense_fraction must be a number in \\[0, 1\\], got '0.1'"):
        act24.convert(model, dense_fraction="0.1")
    with pytest.raises(TypeError, match="perm_seed must be an int or None"):
        act24.convert(model, perm_seed=1.5)
    assert mlps(model)  # nothing was changed by the refused calls
    import numpy as np

    act24.convert(build("nemotron"), dense_fraction=np.float32(0.05))  # numpy scalars are numbers
    act24.convert(model, perm_seed=10)
    assert [model.model.layers[i].mlp.perm_seed for i in range(2)] == [10, 11]
    lm = DecoderLM(ModelConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=2, hidden=64, seq_len=16))
    act24.convert(lm, perm_seed=5)
    assert [f.perm_seed for f in lm.ffn_modules()] == [5, 6]


def _newer_model(name, build_fn):
    if not hasattr(transformers, name):
        pytest.skip(f"this transformers has no {name}")
    torch.manual_seed(0)
    return build_fn().eval()


@pytest.mark.parametrize("name", ["Cosmos3EdgeTextModel", "NeoMMEModel"])
def test_newer_transformers_text_models_convert_and_match_the_masked_model(name):
    config = {"Cosmos3EdgeTextModel": lambda: transformers.Cosmos3EdgeTextConfig(**TINY),
              "NeoMMEModel": lambda: transformers.NeoMMEConfig(
                  **{k: v for k, v in TINY.items() if k != "max_position_embeddings"})}[name]
    model = _newer_model(name, lambda: getattr(transformers, name)(config()))
    original = _newer_model(name, lambda: getattr(transformers, name)(config()))
    keys = list(model.state_dict())
    assert len(act24.convert(model).converted) == 2 and not mlps(model)
    assert list(model.state_dict()) == keys
    for mlp in mlps(original):
        setattr(mlp, KNOWN_MLPS[type(mlp).__name__][2], MaskedReLU2())
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).last_hidden_state, original(ids).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)


def test_ergo_converts_its_dense_layers_and_explains_its_shared_expert():
    config = lambda: transformers.ErgoConfig(  # noqa: E731
        **TINY, first_dense_intermediate_size=128, moe_intermediate_size=64, shared_intermediate_size=64,
        num_experts=4, num_experts_per_tok=2, mlp_layer_types=["dense", "sparse"])
    model = _newer_model("ErgoForCausalLM", lambda: transformers.ErgoForCausalLM(config()))
    report = act24.convert(model)
    assert [(c.path, c.kind) for c in report.converted] == [("model.layers.0.mlp", "ErgoMLP")]
    reasons = {s.path: s.reason for s in report.skipped}
    assert "mixture-of-experts" in reasons["model.layers.1.mlp"]
    assert "outside the two Linear layers would be lost: ['norm.weight']" in reasons["model.layers.1.mlp.shared_experts"]


class NanoGPTMLP(torch.nn.Module):
    """An MLP of no known class: recognised by its two Linear layers and what it computes."""

    def __init__(self, d=16, hidden=64, dropout=0.0, act=lambda h: torch.nn.functional.relu(h).square()):
        super().__init__()
        self.c_fc, self.c_proj = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)
        self.dropout = torch.nn.Dropout(dropout)
        self.act = act

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Blocks(torch.nn.Module):
    def __init__(self, *mlps):
        super().__init__()
        self.layers = torch.nn.ModuleList(mlps)


def test_an_unknown_mlp_class_is_converted_by_what_it_computes():
    torch.manual_seed(0)
    model, original = Blocks(NanoGPTMLP(), NanoGPTMLP(hidden=16)), Blocks(NanoGPTMLP(), NanoGPTMLP(hidden=16))
    original.load_state_dict(model.state_dict())
    keys = list(model.state_dict())
    rng = torch.get_rng_state()
    report = act24.convert(model)
    assert torch.equal(torch.get_rng_state(), rng)  # the probe draws from its own generator
    assert [(c.path, c.d, c.hidden) for c in report.converted] == [("layers.0", 16, 64), ("layers.1", 16, 16)]
    assert list(model.state_dict()) == keys
    x = torch.randn(3, 5, 16)
    for converted, mlp in zip(model.layers, original.layers):
        assert (converted.up_name, converted.down_name) == ("c_fc", "c_proj")
        mlp.act = MaskedReLU2()
        with torch.no_grad():
            torch.testing.assert_close(converted(x), mlp(x), rtol=1e-5, atol=1e-6)


def test_a_square_mlp_defined_down_first_is_read_the_right_way_round():
    class DownFirstMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.up = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

        def forward(self, x):
            return self.down(torch.relu(self.up(x)) ** 2)

    torch.manual_seed(0)
    model = Blocks(DownFirstMLP())
    report = act24.convert(model)
    assert report.converted and (model.layers[0].up_name, model.layers[0].down_name) == ("up", "down")


def test_a_down_first_mlp_is_checked_on_its_real_up_layer():
    class DownFirstMLP(torch.nn.Module):
        def __init__(self, hidden):
            super().__init__()
            self.c_proj, self.c_fc = torch.nn.Linear(hidden, 16), torch.nn.Linear(16, hidden)

        def forward(self, x):
            return self.c_proj(torch.relu(self.c_fc(x)) ** 2)

    torch.manual_seed(0)
    model = Blocks(DownFirstMLP(64), DownFirstMLP(30))
    report = act24.convert(model)
    assert [(c.path, c.d, c.hidden) for c in report.converted] == [("layers.0", 16, 64)]
    assert (model.layers[0].up_name, model.layers[0].down_name) == ("c_fc", "c_proj")
    assert [(s.path, s.reason) for s in report.skipped] == [("layers.1", "hidden size 30 is not a multiple of 4 (2:4 groups)")]
    assert isinstance(model.layers[1], DownFirstMLP)


def test_unknown_mlps_that_compute_or_hold_something_else_are_explained():
    class ScaledMLP(NanoGPTMLP):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Softplus()  # parameter-free, unused by forward, but not known to be harmless

    class TwoArgumentMLP(NanoGPTMLP):
        def forward(self, x, gate):
            return super().forward(x) * gate

    torch.manual_seed(0)
    model = Blocks(NanoGPTMLP(dropout=0.1), NanoGPTMLP(act=torch.nn.functional.gelu), ScaledMLP(), TwoArgumentMLP(),
                   NanoGPTMLP(act=torch.relu), NanoGPTMLP(hidden=30))
    with pytest.raises(ValueError) as err:
        act24.convert(model)
    message = str(err.value)
    assert "layers.0 (NanoGPTMLP): dropout ['dropout'] would be lost" in message
    assert "layers.1 (NanoGPTMLP): not a known Squared-ReLU MLP class, and its output on a probe is not " \
           "down(relu(up(x))**2) with 'c_fc' and 'c_proj' as up and down, either way round" in message
    assert "layers.2 (ScaledMLP): submodules that are not Squared ReLU and that the act24 module would drop: " \
           "'scale' (Softplus)" in message
    assert "layers.3 (TwoArgumentMLP): its forward takes (x, gate), not a single input" in message
    assert "layers.4 (NanoGPTMLP): not a known Squared-ReLU MLP class, and its output" in message  # plain ReLU
    assert "layers.5 (NanoGPTMLP): hidden size 30 is not a multiple of 4" in message
    assert all(isinstance(m, NanoGPTMLP) for m in model.layers)  # nothing replaced


def test_an_unknown_mlp_in_bfloat16_is_probed_in_its_dtype():
    torch.manual_seed(0)
    model = Blocks(NanoGPTMLP().bfloat16())
    assert act24.convert(model).converted[0].kind == "NanoGPTMLP"
    assert model.layers[0].c_fc.weight.dtype == torch.bfloat16


def test_unknown_mlps_that_differ_only_sometimes_are_not_converted():
    class TrainOnlyScaledMLP(NanoGPTMLP):
        def forward(self, x):
            return super().forward(x) * (1.01 if self.training else 1.0)

    class OnePercentOffMLP(NanoGPTMLP):  # within bf16's default tolerance
        def forward(self, x):
            return super().forward(x) * 1.01

    class ClampedMLP(NanoGPTMLP):  # equal on small inputs: only the 16x probe reaches the clamp
        def __init__(self):
            super().__init__(act=lambda h: torch.nn.functional.relu(h).square().clamp(max=50))

    class DropoutInForwardMLP(NanoGPTMLP):  # draws from the global RNG while probed in train mode
        def forward(self, x):
            return torch.nn.functional.dropout(super().forward(x), 0.1, self.training)

    class RaisingMLP(NanoGPTMLP):
        def forward(self, x):
            raise ValueError("needs an attention mask")

    class WrappedMLP(NanoGPTMLP):
        def __init__(self):
            super().__init__()
            self.forward = lambda x: NanoGPTMLP.forward(self, x)

    hooked = NanoGPTMLP(act=torch.nn.Identity())
    hooked.act.register_forward_hook(lambda module, args, out: torch.relu(out) ** 2)

    torch.manual_seed(0)
    model = Blocks(TrainOnlyScaledMLP(), OnePercentOffMLP().bfloat16(), ClampedMLP(), DropoutInForwardMLP(),
                   WrappedMLP(), hooked, RaisingMLP()).eval()
    clamped, small = model.layers[2], torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(clamped(small), clamped.c_proj(torch.relu(clamped.c_fc(small)) ** 2))
    model.layers[1].train()
    rng, modes = torch.get_rng_state(), [m.training for m in model.modules()]
    with pytest.raises(ValueError) as err:
        act24.convert(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes and any(modes) and not all(modes)  # probed in both
    message = str(err.value)
    for i in range(4):
        assert f"layers.{i} ({type(model.layers[i]).__name__}): not a known Squared-ReLU MLP class, and its output" \
            in message
    assert "layers.4 (WrappedMLP): its forward is replaced on the instance" in message
    assert "layers.5 (NanoGPTMLP): 'act' has hooks" in message
    assert "layers.6 (RaisingMLP): not a known Squared-ReLU MLP class, and its forward raised ValueError (needs an " \
           "attention mask) on a probe, not giving down(relu(up(x))**2)" in message
    assert not any(isinstance(m, act24.SquaredReLUMLP) for m in model.modules())
