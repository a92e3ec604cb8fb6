"""``BatchEnsembleLinear`` (PyTorch port of probly's Flax layer)."""

import copy
import io

import pytest
import torch
from torch import nn

from illia_export.nn.torch import BatchEnsembleLinear


def _layer(num_members=3, in_f=4, out_f=5, bias=True, **kwargs):
    torch.manual_seed(0)
    return BatchEnsembleLinear(nn.Linear(in_f, out_f, bias=bias), num_members=num_members, **kwargs)


def _reference(layer, x):
    """Member k uses the effective weight ``kernel * (r_k s_k^T)`` on its rows [k*B, (k+1)*B)."""
    batch = x.size(0) // layer.num_members
    outs = []
    for k in range(layer.num_members):
        weight = layer.kernel * torch.outer(layer.r[k], layer.s[k])  # [in, out]
        y = x[k * batch : (k + 1) * batch] @ weight
        if layer.use_bias:
            y = y + layer.bias[k]
        outs.append(y)
    return torch.cat(outs)


@pytest.mark.parametrize("num_members, batch", [(1, 3), (3, 2), (4, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_shapes_and_member_semantics(num_members, batch, bias):
    layer = _layer(num_members, bias=bias)
    x = torch.randn(num_members * batch, 4)
    y = layer(x)
    assert y.shape == (num_members * batch, 5)
    torch.testing.assert_close(y, _reference(layer, x))


def test_parameter_shapes_follow_flax():
    layer = _layer(3)
    assert layer.kernel.shape == (4, 5)
    assert layer.r.shape == (3, 4) and layer.s.shape == (3, 5) and layer.bias.shape == (3, 5)
    assert sorted(layer.state_dict()) == ["bias", "kernel", "r", "s"]


def test_use_base_weights_copies_weight_and_bias():
    base = nn.Linear(4, 5)
    layer = BatchEnsembleLinear(base, num_members=2, use_base_weights=True)
    torch.testing.assert_close(layer.kernel, base.weight.detach().T)
    torch.testing.assert_close(layer.bias, base.bias.detach().expand(2, 5))
    with torch.no_grad():
        base.weight.add_(1.0)
    assert not torch.allclose(layer.kernel, base.weight.T)  # a copy, not a view


def test_fresh_kernel_is_lecun_normal_and_bias_zero():
    torch.manual_seed(0)
    layer = BatchEnsembleLinear(nn.Linear(400, 300), num_members=2)
    assert abs(layer.kernel.std().item() - 400**-0.5) < 0.1 * 400**-0.5
    assert torch.equal(layer.bias, torch.zeros(2, 300))


def test_normal_init_statistics():
    torch.manual_seed(0)
    layer = BatchEnsembleLinear(
        nn.Linear(500, 400), num_members=8, r_mean=1.0, r_std=0.5, s_mean=-2.0, s_std=0.1
    )
    assert abs(layer.r.mean().item() - 1.0) < 0.02 and abs(layer.r.std().item() - 0.5) < 0.02
    assert abs(layer.s.mean().item() + 2.0) < 0.01 and abs(layer.s.std().item() - 0.1) < 0.01


def test_random_sign_init():
    layer = _layer(4, init="random_sign")
    for p in (layer.r, layer.s):
        assert set(p.detach().unique().tolist()) <= {-1.0, 1.0}
    big = BatchEnsembleLinear(nn.Linear(200, 200), num_members=4, init="random_sign")
    assert abs(big.r.mean().item()) < 0.1  # both signs, about equally often


def test_generator_makes_init_reproducible():
    base = nn.Linear(4, 5)
    a = BatchEnsembleLinear(base, 3, generator=torch.Generator().manual_seed(1))
    b = BatchEnsembleLinear(base, 3, generator=torch.Generator().manual_seed(1))
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name])


def test_deterministic_and_gradients():
    layer = _layer(2)
    x = torch.randn(6, 4)
    assert torch.equal(layer(x), layer(x))
    layer(x).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_no_bias_base_layer_has_frozen_zero_bias():
    layer = _layer(2, bias=False)
    assert not layer.use_bias and not layer.bias.requires_grad
    layer(torch.randn(4, 4)).sum().backward()
    assert layer.bias.grad is None


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_script_trace_save_load():
    layer = _layer(3)
    x = torch.randn(6, 4)
    expected = layer(x)
    for module in (torch.jit.script(layer), torch.jit.trace(layer, (x,))):
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        torch.testing.assert_close(loaded(x), expected)
    scripted = torch.jit.script(layer)
    x2 = torch.randn(9, 4)  # another batch size
    torch.testing.assert_close(scripted(x2), layer(x2))


def test_deepcopy_and_state_dict_after_training_step():
    layer = _layer(2)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(4, 4)
    layer(x).pow(2).mean().backward()
    opt.step()
    twin = copy.deepcopy(layer)
    fresh = BatchEnsembleLinear(nn.Linear(4, 5), num_members=2)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(twin(x), layer(x))
    torch.testing.assert_close(fresh(x), layer(x))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="base_layer"):
        BatchEnsembleLinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="num_members"):
        BatchEnsembleLinear(nn.Linear(2, 2), num_members=0)
    with pytest.raises(ValueError, match="init"):
        BatchEnsembleLinear(nn.Linear(2, 2), init="uniform")


@pytest.mark.parametrize(
    "shape, match", [((6, 3), r"\[E\*B, 4\]"), ((6,), "4"), ((2, 3, 4), "4"), ((5, 4), "multiple")]
)
def test_wrong_input(shape, match):
    with pytest.raises(ValueError, match=match):
        _layer(3)(torch.randn(*shape))
