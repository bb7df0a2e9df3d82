"""The shared-vs-unshared CBAM measurement, recomputed by hand on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.image import normalize
from attnviz.models import build_model
from attnviz.training.cbam_branches import branch_stats, channel_gates, weight_correlation
from attnviz.training.data import DecodedFolder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _data(n: int = 6, size: int = 40) -> DecodedFolder:
    g = torch.Generator().manual_seed(0)
    return DecodedFolder(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                         torch.zeros(n, dtype=torch.int64), ["a"])


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, width=8, num_classes=3).eval()
    for m in model.modules():  # zero-initialised last BNs would make every gate's input 0
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    return model


@pytest.mark.parametrize("arch", ["cbam_resnet18", "cbam_unshared_resnet18"])
def test_branch_correlation_and_share_are_those_of_the_two_terms_recomputed(arch):
    model, data = _model(arch), _data()
    stats = branch_stats(model, data, MEAN, STD, batch_size=4)  # two batches
    gates = channel_gates(model)
    assert list(stats) == list(gates) and len(stats) == 8
    name = "layer2.0.cbam.channel"
    inputs = []
    handle = gates[name].register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    with torch.inference_mode():
        model(normalize(data.images, MEAN, STD))
    handle.remove()
    x, gate = inputs[0], gates[name]
    mlps = (gate.mlp, gate.mlp) if gate.shared else (gate.mlp_avg, gate.mlp_max)
    with torch.inference_mode():
        avg = mlps[0](x.mean((2, 3), keepdim=True))[:, :, 0, 0].double().numpy()
        mx = mlps[1](x.amax((2, 3), keepdim=True))[:, :, 0, 0].double().numpy()
    assert stats[name].correlation == pytest.approx(np.corrcoef(avg.ravel(), mx.ravel())[0, 1], abs=1e-4)
    assert stats[name].max_share == pytest.approx(np.abs(mx).mean() / (np.abs(avg).mean() + np.abs(mx).mean()),
                                                  abs=1e-4)
    assert (stats[name].weight_correlation is None) == gate.shared
    for g in gates.values():  # every hook removed
        assert not g._forward_pre_hooks


def test_weight_correlation_ignores_the_order_of_hidden_units():
    gate = channel_gates(_model("cbam_unshared_resnet18"))["layer3.1.cbam.channel"]
    with torch.no_grad():
        perm = torch.randperm(gate.mlp_avg[0].out_channels, generator=torch.Generator().manual_seed(1))
        gate.mlp_max[0].weight.copy_(gate.mlp_avg[0].weight[perm])
        gate.mlp_max[0].bias.copy_(gate.mlp_avg[0].bias[perm])
        gate.mlp_max[2].weight.copy_(gate.mlp_avg[2].weight[:, perm])
    assert weight_correlation(gate) == pytest.approx(1.0)  # the same MLP, hidden units reordered
    with torch.no_grad():
        gate.mlp_max[2].weight.neg_()
    assert weight_correlation(gate) == pytest.approx(-1.0)


def test_a_model_without_cbam_is_refused():
    with pytest.raises(ValueError, match="no CBAM channel gates"):
        channel_gates(_model("se_resnet18"))
