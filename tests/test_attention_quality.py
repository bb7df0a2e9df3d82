import math

import pytest
import torch

from attnviz.attention_quality import (
    AttentionQuality,
    entropy_ratio,
    head_quality,
    image_dependence,
    query_dependence,
)


def _random_attention(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 2).softmax(-1)


def test_uniform_rows_have_entropy_one_and_no_query_dependence():
    attn = torch.full((3, 49, 49), 1 / 49)
    torch.testing.assert_close(entropy_ratio(attn), torch.ones(3))
    torch.testing.assert_close(query_dependence(attn), torch.zeros(3), atol=1e-6, rtol=0)
    assert all(q.near_uniform for q in head_quality(attn))


def test_one_hot_rows_at_different_keys_are_fully_query_dependent_with_zero_entropy():
    attn = torch.eye(16).roll(3, dims=1).expand(2, 16, 16)  # query i looks only at key i + 3
    torch.testing.assert_close(query_dependence(attn), torch.ones(2))
    torch.testing.assert_close(entropy_ratio(attn), torch.zeros(2))
    assert not any(q.near_uniform for q in head_quality(attn))


def test_identical_rows_across_images_have_no_image_dependence():
    attn = _random_attention(2, 25, 25)
    torch.testing.assert_close(image_dependence([attn, attn.clone(), attn.clone()]), torch.zeros(2),
                               atol=1e-6, rtol=0)
    # Two images whose every row looks at different keys: fully image-dependent.
    a, b = torch.eye(25).expand(1, 25, 25), torch.eye(25).roll(1, dims=1).expand(1, 25, 25)
    torch.testing.assert_close(image_dependence([a, b]), torch.ones(1))


def test_entropy_is_the_definition_row_by_row():
    attn = _random_attention(2, 9, 9)
    by_hand = torch.tensor([[-sum(p * math.log(p) for p in row.tolist()) / math.log(9) for row in head]
                            for head in attn]).mean(-1)
    torch.testing.assert_close(entropy_ratio(attn), by_hand.float())


def test_pair_means_equal_explicit_means_over_every_pair():
    attn = _random_attention(2, 12, 12)
    cos = torch.nn.functional.cosine_similarity
    by_hand = torch.tensor([sum(1 - cos(attn[h, i], attn[h, j], dim=0) for i in range(12) for j in range(12) if i != j)
                            / (12 * 11) for h in range(2)])
    torch.testing.assert_close(query_dependence(attn), by_hand, atol=1e-5, rtol=1e-5)

    images = [_random_attention(2, 12, 12, seed=s) for s in range(4)]
    by_hand = torch.tensor([sum(1 - cos(images[a][h, i], images[b][h, i], dim=0)
                                for a in range(4) for b in range(4) if a != b for i in range(12)) / (4 * 3 * 12)
                            for h in range(2)])
    torch.testing.assert_close(image_dependence(images), by_hand, atol=1e-5, rtol=1e-5)


def test_the_meter_accumulates_the_same_figures_over_images():
    images = [{"l2": _random_attention(2, 16, 16, seed=s), "l3": _random_attention(4, 4, 4, seed=10 + s)}
              for s in range(3)]
    meter = AttentionQuality()
    for attns in images:
        meter.add(attns)
    result = meter.result()
    assert meter.images == 3 and list(result) == ["l2", "l3"]
    for layer, heads in result.items():
        stack = [attns[layer] for attns in images]
        entropy = torch.stack([entropy_ratio(a) for a in stack]).mean(0)
        query = torch.stack([query_dependence(a) for a in stack]).mean(0)
        image = image_dependence(stack)
        for h, q in enumerate(heads):
            assert q.entropy == pytest.approx(float(entropy[h]), abs=1e-6)
            assert q.query_dependence == pytest.approx(float(query[h]), abs=1e-6)
            assert q.image_dependence == pytest.approx(float(image[h]), abs=1e-6)


def test_the_meter_needs_two_images_for_image_dependence_and_one_size():
    meter = AttentionQuality()
    meter.add({"l": _random_attention(1, 4, 4)})
    assert meter.result()["l"][0].image_dependence is None
    with pytest.raises(ValueError, match="one input size"):
        meter.add({"l": _random_attention(1, 9, 9)})
    with pytest.raises(ValueError, match="at least 2 images"):
        image_dependence([_random_attention(1, 4, 4)])


def test_measuring_decoded_batches_equals_measuring_each_image_through_analyze():
    from attnviz.attention_stats import measure, measure_batches
    from attnviz.image import squash, to_uint8_tensor
    from attnviz.weights import IMAGENET_MEAN, IMAGENET_STD

    from .conftest import TINY_SIZE, noise_image, tiny_model

    model = tiny_model("sa_resnet18")
    images = [noise_image(64 + 8 * i, 48, seed=i) for i in range(5)]
    one_by_one = measure(images, model, size=TINY_SIZE).result()
    decoded = torch.stack([to_uint8_tensor(squash(im, TINY_SIZE)) for im in images])
    batched = measure_batches(model, decoded, IMAGENET_MEAN, IMAGENET_STD, batch_size=2).result()
    assert list(batched) == list(one_by_one) == ["layer2.1.attn.softmax", "layer3.1.attn.softmax"]
    for layer, heads in one_by_one.items():
        for a, b in zip(heads, batched[layer]):
            assert a.to_json() == pytest.approx(b.to_json(), abs=1e-5)
