import numpy as np
import pytest
import torch

import attnviz
from attnviz.image import ImageError

from .conftest import CLASSES, TINY_SIZE, noise_image


@pytest.fixture
def sa_model(tiny_env):
    return attnviz.load_model("tiny_sa_resnet18")


def test_analysis_of_each_kind(tiny_env, jpeg_file):
    se = attnviz.analyze(jpeg_file, "tiny_se_resnet18")
    assert len(se.se) == 8 and se.se["layer4.1.se.gate"].shape == (64,)
    cbam = attnviz.analyze(jpeg_file, "tiny_cbam_resnet18")
    assert cbam.cbam_channel["layer1.0.cbam.channel.gate"].shape == (8,)
    assert cbam.cbam_spatial["layer1.0.cbam.spatial.gate"].shape == (TINY_SIZE // 4, TINY_SIZE // 4)
    sa = attnviz.analyze(jpeg_file, "tiny_sa_resnet18", size=128)
    assert sa.self_attn["layer2.1.attn.softmax"].shape == (2, 256, 256)
    assert sa.self_attn["layer3.1.attn.softmax"].shape == (4, 64, 64)
    assert sa.self_attn_grid == {"layer2.1.attn.softmax": (16, 16), "layer3.1.attn.softmax": (8, 8)}
    plain = attnviz.analyze(jpeg_file, "tiny_resnet18")
    assert not (plain.se or plain.cbam_channel or plain.self_attn)


def test_top_k_is_sorted_and_named(tiny_env, jpeg_file):
    a = attnviz.analyze(jpeg_file, "tiny_resnet18")
    top = a.top_k(3)
    assert sorted(n for n, _ in top) == sorted(CLASSES)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5


def test_query_on_a_non_square_image_returns_the_row_of_the_cell_under_the_pixel(sa_model):
    # 160 x 48 image at a 64 px input: layer2 is 8 x 8, so a cell is 20 px wide and 6 px high.
    a = attnviz.analyze(noise_image(160, 48), sa_model)
    layer = "layer2.1.attn.softmax"
    attn = a.self_attn[layer]
    h, w = a.self_attn_grid[layer]
    assert (h, w) == (8, 8)
    for x, y, row, col in [(0, 0, 0, 0), (19, 5, 0, 0), (20, 0, 0, 1), (0, 6, 1, 0), (159, 47, 7, 7),
                           (105, 13, 2, 5), (45, 40, 6, 2)]:
        q = a.query(layer, x, y)
        assert q.shape == (2, h, w)
        torch.testing.assert_close(q, attn[:, row * w + col, :].reshape(2, h, w))
        torch.testing.assert_close(q.sum((1, 2)), torch.ones(2))
    # x moves only the column, y only the row
    assert a.cell(layer, 150, 2) == (0, 7) and a.cell(layer, 2, 45) == (7, 0)


def test_to_image_maps_back_onto_the_original(sa_model):
    a = attnviz.analyze(noise_image(160, 48), sa_model)
    q = a.query("layer3.1.attn.softmax", 10, 10)
    up = a.to_image(q.mean(0))
    assert up.shape == (48, 160)
    assert np.isclose(up[0, 0], q.mean(0)[0, 0].item()) and np.isclose(up[47, 159], q.mean(0)[-1, -1].item())


def test_image_modes_and_paths(sa_model, tmp_path):
    p = tmp_path / "x.png"
    noise_image(30, 50).convert("P").save(p)
    a = attnviz.analyze(str(p), sa_model)
    assert a.image.mode == "RGB" and a.image_size == (30, 50)


def test_bad_inputs(sa_model, tmp_path):
    p = tmp_path / "fake.jpg"
    p.write_text("not an image")
    with pytest.raises(ImageError):
        attnviz.analyze(p, sa_model)
    with pytest.raises(ValueError, match="training mode"):
        attnviz.analyze(noise_image(8, 8), sa_model.train())
    sa_model.eval()
    with pytest.raises(KeyError, match="layer2.1.attn.softmax"):
        attnviz.analyze(noise_image(8, 8), sa_model).query("layer9", 0, 0)


def test_a_plain_module_without_metadata_works():
    model = attnviz.build_model("se_resnet18", width=8, num_classes=4).eval()
    a = attnviz.analyze(noise_image(40, 40), model, size=64)
    assert a.top_k(1)[0][0].startswith("class ") and len(a.se) == 8
