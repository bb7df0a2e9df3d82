"""The CBAM authors' ResNet-50 checkpoint (issue 36): a checkpoint written here in their exact
key layout, from a copy of their module structure (github.com/Jongchan/attention-module,
MODELS/cbam.py and MODELS/model_resnet.py, trimmed to what ImageNet CBAM uses), loads as
``cbam:resnet50``; its logits are theirs, and every captured gate equals their formula
recomputed from their modules' own inputs and parameters. Random weights, one 224 px input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnviz
from attnviz.capture import capture
from attnviz.loading import build_like
from attnviz.weights import WeightsError

from .conftest import noise_image, one_line, randomise_bn

# --- the authors' modules, as in their repository (names are what their checkpoint's keys are made of) -------------


class BasicConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, relu=True, bn=True, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
                              bias=bias)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ChannelGate(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16):
        super().__init__()
        self.mlp = nn.Sequential(Flatten(), nn.Linear(gate_channels, gate_channels // reduction_ratio), nn.ReLU(),
                                 nn.Linear(gate_channels // reduction_ratio, gate_channels))

    def forward(self, x):
        avg = self.mlp(F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3))))
        mx = self.mlp(F.max_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3))))
        return x * torch.sigmoid(avg + mx).unsqueeze(2).unsqueeze(3).expand_as(x)


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, 7, stride=1, padding=3, relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, reduction=16):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.cbam = CBAM(planes * 4, reduction)

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = self.cbam(out)
        out += residual
        return self.relu(out)


class AuthorsResNet(nn.Module):
    """Their ``ResNet(Bottleneck, [3, 4, 6, 3], "ImageNet", 1000, "CBAM")``."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000, reduction=16):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.avgpool = nn.AvgPool2d(7)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, layers[0], 1, reduction)
        self.layer2 = self._make_layer(128, layers[1], 2, reduction)
        self.layer3 = self._make_layer(256, layers[2], 2, reduction)
        self.layer4 = self._make_layer(512, layers[3], 2, reduction)
        self.fc = nn.Linear(512 * 4, num_classes)

    def _make_layer(self, planes, blocks, stride, reduction):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, reduction)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, reduction=reduction) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


# --- the tests ------------------------------------------------------------------------------------------------------


def _authors_model(**kwargs) -> AuthorsResNet:
    torch.manual_seed(0)
    model = randomise_bn(AuthorsResNet(**kwargs))  # every gate and branch matters
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model


@pytest.fixture(scope="module")
def authors() -> AuthorsResNet:
    return _authors_model()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(model: nn.Module, path, *, module_prefix: bool = True, wrapped: bool = True, old_torch: bool = True):
    """As the authors' training script saved it: DataParallel's ``module.``, a dict with
    ``epoch``, ``arch``, ``best_prec1``; ``old_torch``: no ``num_batches_tracked`` (PyTorch < 0.4.1)."""
    state = {("module." if module_prefix else "") + k: v for k, v in model.state_dict().items()
             if not (old_torch and k.endswith("num_batches_tracked"))}
    torch.save({"epoch": 100, "arch": "resnet", "state_dict": state, "best_prec1": torch.tensor(77.622)}
               if wrapped else state, path)
    return path


def _input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 224, 224)


def _authors_gates(model: AuthorsResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every block's channel and spatial gate by the authors' formulas, from the inputs their
    gate modules received and their own parameters (paths in attnviz's names)."""
    inputs, handles = {}, []
    for path, m in model.named_modules():
        if isinstance(m, (ChannelGate, SpatialGate)):
            handles.append(m.register_forward_hook(lambda mod, i, o, path=path: inputs.__setitem__(path, i[0])))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    gates = {}
    for path, m in model.named_modules():
        f = inputs.get(path)
        if isinstance(m, ChannelGate):  # sigmoid(MLP(avg) + MLP(max)), one MLP with biases
            fc1, fc2 = m.mlp[1], m.mlp[3]
            mlp = lambda v, fc1=fc1, fc2=fc2: F.linear(F.relu(F.linear(v, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)  # noqa: E731
            gates[path.replace("cbam.ChannelGate", "cbam.channel.gate")] = torch.sigmoid(
                mlp(f.mean((2, 3))) + mlp(f.amax((2, 3))))[:, :, None, None]
        elif isinstance(m, SpatialGate):  # sigmoid(BN(conv7x7([max_c, mean_c])))
            conv, bn = m.spatial.conv, m.spatial.bn
            pooled = torch.cat((f.amax(1, keepdim=True), f.mean(1, keepdim=True)), dim=1)
            z = F.conv2d(pooled, conv.weight, padding=3)
            z = (z - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var + bn.eps)[None, :, None, None]
            gates[path.replace("cbam.SpatialGate", "cbam.spatial.gate")] = torch.sigmoid(
                z * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])
    return gates


def test_the_authors_checkpoint_loads_and_its_gates_are_their_formula(tmp_path, authors):
    ckpt = _save(authors, tmp_path / "RESNET50_CBAM_new_name_wrap.pth")
    model = attnviz.load_model("cbam:resnet50", checkpoint=ckpt)
    assert not model.training and model.attnviz_meta.name == "cbam:resnet50"
    x = _input()
    with torch.inference_mode():
        theirs = authors(x)
        with capture(model) as maps:
            ours = model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    expected = _authors_gates(authors, x)
    assert sorted(maps) == sorted(expected) and len(expected) == 32  # 16 blocks x (channel, spatial)
    for path, gate in expected.items():
        torch.testing.assert_close(maps[path], gate, rtol=1e-5, atol=1e-5, msg=path)
    assert maps["layer1.0.cbam.channel.gate"].shape == (1, 256, 1, 1)
    assert maps["layer4.2.cbam.spatial.gate"].shape == (1, 1, 7, 7)


def test_every_layout_loads_the_same_weights(tmp_path, authors):
    x = _input()
    with torch.inference_mode():
        reference = authors(x)
    for i, kw in enumerate((dict(module_prefix=False), dict(wrapped=False), dict(old_torch=False))):
        model = attnviz.load_model("cbam:resnet50", checkpoint=_save(authors, tmp_path / f"{i}.pth", **kw))
        with torch.inference_mode():
            torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    # attnviz's own names, e.g. a state dict saved from the loaded model
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    again = attnviz.load_model("cbam:resnet50", checkpoint=tmp_path / "ours.pth")
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_every_view_and_intervention_works_on_it(tmp_path, authors):
    model = attnviz.load_model("cbam:resnet50", checkpoint=_save(authors, tmp_path / "c.pth"))
    image = noise_image(96, 64)
    a = attnviz.analyze(image, model, size=64)
    assert len(a.cbam_channel) == len(a.cbam_spatial) == 16
    assert a.top_k(1)[0][0] in model.attnviz_meta.classes and model.attnviz_meta.classes[0] == "tench"
    for what in ("gates-off", "spatial-mean"):
        r = attnviz.intervene(image, model, what, size=64)
        assert len(r.layers) == 16
    twin = build_like(model)  # Grad-CAM's private copy
    assert type(twin) is type(model) and twin.attnviz_meta is model.attnviz_meta


def test_a_checkpoint_of_another_shape_or_none_is_one_line(tmp_path):
    r8 = _save(_authors_model(reduction=8), tmp_path / "r8.pth")
    plain = {k: v for k, v in _authors_model(layers=(1, 1, 1, 1)).state_dict().items() if ".cbam." not in k}
    torch.save(plain, tmp_path / "plain.pth")
    for name, kwargs, expected in (
            ("cbam:resnet50", dict(checkpoint=r8), "is not a checkpoint of the authors' CBAM resnet50: "),
            ("cbam:resnet50", dict(checkpoint=r8), "shapes differ"),
            ("cbam:resnet50", dict(checkpoint=tmp_path / "plain.pth"), "tensors missing"),
            ("cbam:resnet50", {}, "RESNET50_CBAM_new_name_wrap.pth"),
            ("cbam:resnet18", dict(pretrained=False), "available: cbam:resnet50")):
        with pytest.raises(WeightsError) as e:
            attnviz.load_model(name, **kwargs)
        assert expected in one_line(e), (name, kwargs)
