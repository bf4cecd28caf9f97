"""A converted Nemotron-style model on the GPU: prefill on the sparse path, decode dense, generate works."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.ffn import dispatch

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers")


class MaskedReLU2(torch.nn.Module):
    def forward(self, h):
        y2 = ref.squared_relu(h)
        return ref.masked_activation(y2)


def test_converted_nemotron_prefill_is_sparse_and_close_to_the_masked_model():
    cfg = transformers.NemotronConfig(vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.NemotronForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
    original = transformers.NemotronForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
    original.load_state_dict(model.state_dict())
    for layer in original.model.layers:
        layer.mlp.act_fn = MaskedReLU2()
    act24.convert(model)
    ids = torch.randint(3, 1000, (1, 2048), device="cuda")
    old = dispatch.sparse_threshold()
    dispatch.set_sparse_threshold(2048 * 256 * 1024)  # prefill of 2048 tokens sparse, decode (1 token) dense
    calls = []
    from act24.ffn import fast_forward

    real = fast_forward.sparse_forward
    fast_forward.sparse_forward = lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k)
    try:
        with torch.inference_mode():
            got, expected = model(ids).logits.float(), original(ids).logits.float()
            out = model.generate(ids[:, :2048], max_new_tokens=4, do_sample=False, pad_token_id=0)
    finally:
        fast_forward.sparse_forward = real
        dispatch.set_sparse_threshold(old)
    assert calls and all(t == 2048 for t in calls)  # prefill sparse; the 1-token decode steps dense
    assert ((got - expected).norm() / expected.norm()).item() < 2e-2
    assert out.shape == (1, 2052)


def test_an_unknown_mlp_class_in_bfloat16_on_the_gpu_is_probed_there_and_runs_sparse():
    class OwnMLP(torch.nn.Module):  # no known class: recognised by its output on a probe, on the GPU in bf16
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256)

        def forward(self, x):
            return self.c_proj(torch.nn.functional.relu(self.c_fc(x)).square())

    torch.manual_seed(0)
    model = torch.nn.Sequential(OwnMLP()).cuda().to(torch.bfloat16).eval()
    x = torch.randn(2048, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        h = model[0].c_fc(x)
        expected = model[0].c_proj(ref.masked_activation(ref.squared_relu(h))).float()
    report = act24.convert(model)
    assert [c.kind for c in report.converted] == ["OwnMLP"] and isinstance(model[0], act24.SquaredReLUMLP)
    old = dispatch.sparse_threshold()
    dispatch.set_sparse_threshold(0)
    try:
        with torch.inference_mode():
            got = model(x).float()
    finally:
        dispatch.set_sparse_threshold(old)
    assert ((got - expected).norm() / expected.norm()).item() < 2e-2
