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


def test_an_analysis_records_its_model_size_and_original_image(sa_model):
    a = attnviz.analyze(noise_image(300, 120), sa_model, size=96)
    meta = sa_model.attnviz_meta
    assert a.model_name == meta.name and a.meta is meta and a.size == 96 and a.image_size == (300, 120)
    bare = attnviz.build_model("resnet18", width=8, num_classes=4).eval()
    b = attnviz.analyze(noise_image(40, 40), bare)
    # no metadata: 224 px, named after its class
    assert b.size == 224 and b.meta is None and b.model_name == type(bare).__name__ == "AttnResNet"


def test_top_k_gives_five_by_default():
    model = attnviz.build_model("resnet18", width=8, num_classes=10).eval()
    a = attnviz.analyze(noise_image(40, 40), model)
    assert len(a.top_k()) == 5 and len(a.top_k(20)) == 10


def test_the_input_size_must_be_32_to_1024_px():
    model = attnviz.build_model("resnet18", width=8, num_classes=4).eval()  # no attention matrix of 128^2 cells
    for size in (32, 1024):
        assert attnviz.analyze(noise_image(40, 40), model, size=size).size == size
    for size in (31, 1025):
        with pytest.raises(ValueError, match="between 32 and 1024"):
            attnviz.analyze(noise_image(40, 40), model, size=size)


def test_the_models_own_mean_and_std_prepare_its_input(tiny_weights_dir):
    from attnviz.image import load_image, prepare
    from attnviz.weights import load_pair

    model, meta = load_pair(tiny_weights_dir / "tiny_resnet18.safetensors")
    meta.mean, meta.std = [0.1, 0.6, 0.3], [0.5, 0.2, 0.4]  # unlike ImageNet's
    model.attnviz_meta = meta
    im = noise_image(50, 40)
    a = attnviz.analyze(im, model.eval())
    with torch.inference_mode():
        expected = model(prepare(load_image(im), a.size, meta.mean, meta.std)).softmax(-1)[0]
    torch.testing.assert_close(a.probs, expected)


def test_to_image_takes_arrays_as_well_as_tensors(sa_model):
    a = attnviz.analyze(noise_image(160, 48), sa_model)
    grid = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(a.to_image(grid), a.to_image(torch.from_numpy(grid)))
    assert a.to_image(grid).shape == (48, 160)


def test_an_unknown_layer_names_the_layers_that_have_a_grid(sa_model):
    a = attnviz.analyze(noise_image(20, 20), sa_model)
    with pytest.raises(KeyError, match=r"layer2\.1\.attn\.softmax, layer3\.1\.attn\.softmax"):
        a.cell("nope", 0, 0)
    plain = attnviz.analyze(noise_image(20, 20), attnviz.build_model("resnet18", width=8, num_classes=4).eval())
    with pytest.raises(KeyError, match="this model has: none"):
        plain.cell("nope", 0, 0)
