import pytest
import torch

from attnviz.capture import attention_modules
from attnviz.models import ARCHITECTURES, REGISTRY, build_model


def test_four_architectures_share_the_backbone():
    plain = set(build_model("resnet18").state_dict())
    for arch in ARCHITECTURES:
        keys = set(build_model(arch).state_dict())
        assert plain <= keys, arch  # same backbone, attention only adds


def test_shipped_width_is_about_2_8m_parameters():
    n = sum(p.numel() for p in build_model("resnet18", width=32).parameters())
    assert 2.7e6 < n < 2.9e6


def test_attention_placement():
    se = attention_modules(build_model("se_resnet18"))
    assert list(se) == [f"layer{s}.{b}.se.gate" for s in range(1, 5) for b in range(2)]
    cbam = attention_modules(build_model("cbam_resnet18"))
    assert "layer1.0.cbam.channel.gate" in cbam and "layer4.1.cbam.spatial.gate" in cbam and len(cbam) == 16
    sa = attention_modules(build_model("sa_resnet18"))
    assert list(sa) == ["layer2.1.attn.softmax", "layer3.1.attn.softmax"]
    assert attention_modules(build_model("resnet18")) == {}


def test_self_attention_grids_are_28_and_14_at_224px():
    model = build_model("sa_resnet18", width=8).eval()
    shapes = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: shapes.__setitem__(p, o.shape))
             for p in attention_modules(model)]
    with torch.inference_mode():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    # 2 heads at stride 8, 4 at stride 16
    assert shapes == {"layer2.1.attn.softmax": (1, 2, 784, 784), "layer3.1.attn.softmax": (1, 4, 196, 196)}


def test_attention_sits_on_the_residual_branch_before_the_addition():
    torch.manual_seed(0)
    model = build_model("se_resnet18", width=16).eval()
    block = model.layer1[0]
    torch.nn.init.ones_(block.bn2.weight)
    x = torch.randn(1, 16, 8, 8)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(block.se(branch) + x))


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match="se_resnet18"):
        build_model("vgg16")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_registered_architecture_produces_the_kinds_it_declares(arch):
    model = build_model(arch, width=8)
    assert sorted(set(attention_modules(model).values())) == sorted(REGISTRY[arch].kinds)
    assert REGISTRY[arch].name == arch and REGISTRY[arch].summary
