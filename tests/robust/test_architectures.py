"""The architecture registry: names to freshly built classifiers."""

from __future__ import annotations

import pytest
import torch

from core.robust.datasets.loading import load_digits
from core.robust.errors import InvalidConfig, ModelLoadError
from core.robust.models.architectures import build_architecture, list_architectures


@pytest.mark.parametrize(
    ("name", "input_shape"),
    [
        ("builtin:digits_cnn", (1, 8, 8)),
        ("builtin:digits_cnn", (3, 5, 7)),
        ("builtin:mlp", (1, 8, 8)),
        ("builtin:small_cnn", (3, 32, 32)),
        ("builtin:small_cnn", (1, 8, 8)),
        ("timm:test_resnet", (3, 32, 32)),  # BatchNorm
        ("timm:test_convnext", (3, 32, 32)),  # LayerNorm
        ("timm:test_efficientnet", (3, 32, 32)),
        ("timm:test_vit", (3, 32, 32)),  # patch embedding
        ("timm:test_resnet", (1, 28, 28)),  # in_chans follows the input
        ("timm:vit_tiny_patch16_224", (3, 32, 32)),  # refuses 32x32 unless built with img_size
    ],
)
def test_architecture_gives_logits_for_its_input_shape(
    name: str, input_shape: tuple[int, int, int]
) -> None:
    net = build_architecture(name, input_shape=input_shape, num_classes=7).eval()
    with torch.no_grad():
        logits = net(torch.rand(2, *input_shape))
    assert logits.shape == (2, 7)


def test_torchvision_resnet18_builds_for_cifar_shape() -> None:
    net = build_architecture("torchvision:resnet18", input_shape=(3, 32, 32), num_classes=10)
    with torch.no_grad():
        logits = net.eval()(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def test_unknown_name_is_refused_with_what_is_available() -> None:
    with pytest.raises(ModelLoadError) as caught:
        build_architecture("builtin:resnet9000", input_shape=(1, 8, 8), num_classes=10)
    message = str(caught.value)
    assert "builtin:digits_cnn" in message
    assert "torchvision:<name>" in message
    assert "timm:<name>" in message


def test_unknown_torchvision_name_suggests_close_match() -> None:
    with pytest.raises(ModelLoadError, match="torchvision:resnet18"):
        build_architecture("torchvision:resnet81", input_shape=(3, 32, 32), num_classes=10)


def test_torchvision_detection_model_is_refused_as_not_classification() -> None:
    with pytest.raises(ModelLoadError, match="not a classification model"):
        build_architecture(
            "torchvision:fasterrcnn_resnet50_fpn", input_shape=(3, 32, 32), num_classes=10
        )


def test_digits_cnn_needs_two_by_two_inputs() -> None:
    with pytest.raises(ModelLoadError, match="at least 2x2"):
        build_architecture("builtin:digits_cnn", input_shape=(1, 1, 8), num_classes=10)


def test_malformed_input_shape_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="input_shape"):
        build_architecture("builtin:mlp", input_shape=(8, 8), num_classes=10)  # type: ignore[arg-type]


def test_list_architectures_has_builtins_and_only_torchvision_classifiers() -> None:
    names = list_architectures()
    assert {"builtin:digits_cnn", "builtin:mlp", "builtin:small_cnn"} <= set(names)
    assert "torchvision:resnet18" in names
    assert "torchvision:fasterrcnn_resnet50_fpn" not in names


# ---------------------------------------------------------------- timm


def test_timm_vit_is_built_for_the_input_size_not_its_default() -> None:
    net = build_architecture("timm:test_vit", input_shape=(3, 32, 32), num_classes=10)
    # 32x32 in 16x16 patches is 4 tokens, plus the class token; timm's default (160) gives 101.
    assert net.pos_embed.shape[1] == 1 + 4  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("model_name", "size"),
    [("test_convnext", {}), ("test_vit", {"img_size": 32})],  # as a user builds each for 32x32
)
def test_timm_state_dict_loads_strictly_and_gives_the_same_outputs(
    model_name: str, size: dict[str, int]
) -> None:
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model(model_name, pretrained=False, num_classes=10, **size)
    ours = build_architecture(f"timm:{model_name}", input_shape=(3, 32, 32), num_classes=10)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.eval()(images), theirs.eval()(images))


def test_unknown_timm_name_names_close_matches() -> None:
    with pytest.raises(ModelLoadError) as caught:
        build_architecture("timm:resnet19", input_shape=(3, 32, 32), num_classes=10)
    message = str(caught.value)
    assert message.startswith("unknown timm model 'resnet19'; close: ")
    assert "resnet18" in message


def test_timm_name_with_a_pretrained_tag_is_refused_naming_the_base_model() -> None:
    with pytest.raises(ModelLoadError, match="use timm:resnet18"):
        build_architecture("timm:resnet18.a1_in1k", input_shape=(3, 32, 32), num_classes=10)


def test_list_architectures_has_timm_models() -> None:
    names = list_architectures()
    assert {"timm:resnet18", "timm:test_vit", "timm:convnext_atto"} <= set(names)
    assert not any(name.startswith("timm:") and "." in name for name in names)


def test_digits_cnn_trains_past_95_percent_on_digits_in_seconds() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    net = build_architecture("builtin:digits_cnn", input_shape=(1, 8, 8), num_classes=10)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        for images, labels in digits.train.batches(64, generator=generator):
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    images, labels = digits.test_tensors()
    with torch.no_grad():
        accuracy = (net.eval()(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95
