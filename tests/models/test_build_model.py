"""build_model (c3exp/models/__init__.py) on the real Hydra configs: every network x attention x placement trains,
the uniform interface, determinism, and user errors that name their config key."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import c3exp
from c3exp.attention import ATTENTION_NAMES, sized_by_map
from c3exp.errors import ConfigError
from c3exp.models import PLACEMENTS, build_model, cifar_resnet
from c3exp.saved_config import rebuild_config
from tests.conftest import assert_names_bad_setting, attn_config, build, hydra_compose as compose

pytestmark = pytest.mark.usefixtures("one_thread")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(m, "is_attention", False)]


# ----------------------------------------------------------------------------------------------
# Every network x attention x placement trains: forward, backward, finite gradients.


# model -> (extra overrides, input size, blocks per stage)
NETWORKS = {
    "resnet20": ((), 32, (3, 3, 3)),
    "resnet32": ((), 32, (5, 5, 5)),
    "wrn": (("model.width=2",), 32, (3, 3, 3)),  # the real width is checked by the Table 1 tests
    "resnet18": (("data.num_classes=10", "data.image_size=64"), 64, (2, 2, 2, 2)),
}


# C3 on resnet18 at 64x64: blocks that divide the maps of every placement (stage inputs 16/16/8/4,
# block outputs 16/8/4/2) and are no larger than them; reduction 4 divides A = 4 of the 2x2 block.
TORCHVISION_C3_SIZES = ("attn.options.spatial_sizes=[[8,8],[8,8],[4,4],[2,2]]", "attn.options.reduction=4")


ATTENTION_CASES = [("none", "every_block")] + [(name, placement) for name in ATTENTION_NAMES[1:] for placement in PLACEMENTS]


def expected_attention_count(placement: str, blocks: tuple[int, ...]) -> int:
    per_stage = {"every_block": blocks, "every_other_block": [(count + 1) // 2 for count in blocks]}
    return sum(per_stage.get(placement, [1] * len(blocks)))


@pytest.mark.parametrize("attn,placement", ATTENTION_CASES, ids=["-".join(c) for c in ATTENTION_CASES])
@pytest.mark.parametrize("network", NETWORKS)
def test_network_trains_with_attention(network: str, attn: str, placement: str):
    extra, size, blocks = NETWORKS[network]
    overrides = [f"model={network}", f"attn={attn}", f"attn.placement={placement}", "attn.stages=null", *extra]
    if network == "resnet18" and sized_by_map(attn):
        overrides.extend(TORCHVISION_C3_SIZES)
    cfg = compose(*overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, cfg.data.num_classes)
    logits.logsumexp(dim=1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    expected = 0 if attn == "none" else expected_attention_count(placement, blocks)
    assert len(attention_modules(model)) == expected


@pytest.mark.parametrize("network", NETWORKS)
def test_uniform_interface(network: str):
    extra, size, blocks = NETWORKS[network]
    overrides = [*extra, *TORCHVISION_C3_SIZES] if network == "resnet18" else list(extra)
    model = build(f"model={network}", "attn=c3", *overrides).eval()
    assert isinstance(model.stages, nn.ModuleList) and len(model.stages) == len(blocks)
    for stage in model.stages:  # stage-input attention is the first module of its stage
        assert getattr(stage[0], "is_attention", False)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[:2] == (2, model.head[-1].in_features)
        torch.testing.assert_close(model.head(features), model(x))


def test_build_model_is_deterministic_under_a_seed():
    torch.manual_seed(3)
    first = build("attn=c3")
    torch.manual_seed(3)
    second = build("attn=c3")
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_checking_the_c3_blocks_leaves_the_seeded_network_as_the_builder_makes_it():
    attn = attn_config("c3")  # placement stage_input
    torch.manual_seed(5)
    direct = cifar_resnet(100, attn, depth=20, width=1, shortcut="projection")  # conf/model/resnet20.yaml's
    torch.manual_seed(5)
    built = build("attn=c3")  # the blocks are measured on a meta-device copy first: no random numbers drawn
    for (name, a), b in zip(direct.state_dict().items(), built.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_resume_and_eval_build_without_downloading_pretrained_weights():
    from c3exp.models import without_pretrained

    cfg = c3exp.compose(["model=resnet18", "model.weights=imagenet", "data=digits"])
    assert without_pretrained(cfg).model.weights is None and cfg.model.weights == "imagenet"
    plain = c3exp.compose(["model=resnet20", "data=digits"])
    assert without_pretrained(plain) is plain


# ----------------------------------------------------------------------------------------------
# User errors name their config key.


@pytest.mark.parametrize(
    "overrides,key",
    [
        (("model.depth=21",), "model.depth"),
        (("model=wrn", "model.depth=20"), "model.depth"),
        (("model.width=0",), "model.width"),
        (("model.shortcut=option_b",), "model.shortcut"),
        (("+model.dropout=0.3",), "model.dropout"),
        (("model=resnet18", "model.arch=vgg16"), "model.arch"),
        (("attn=se", "attn.placement=everywhere"), "attn.placement"),
        (("attn=se", "attn.name=c3"), "attn.name"),  # the name labels the block in results: SE's is se
        (("attn=se", "attn.name=sk"), "attn.name"),
        (("attn=none", "attn._target_=c3exp.attention.se.SqueezeExcite"), "attn.name"),
        (("attn=se", "attn.name=sk", "attn._target_=c3exp.attention.sk.SelectiveKernel"), "attn._target_"),
        (("model._target_=torch.nn.Identity",), "model._target_"),  # a builder takes num_classes and attn
        (("attn=se", "+attn.options.groups=2"), "attn.options.groups"),
        (("attn=se", "attn.options.reduction=5"), "attn.options.reduction"),
        (("attn=c3", "attn.options.reduction=0"), "attn.options.reduction"),
        (("attn=c3", "attn.options.spatial_sizes=[[16,16],[8,8]]"), "attn.options.spatial_sizes"),
        (("attn=c3", "attn.options.spatial_sizes=[[16,16],[16,16],[0,8]]"), "attn.options.spatial_sizes"),
        (("attn=c3", "attn.options.resize=bilinear"), "attn.options.resize"),
        (("attn=c3", "+attn.extra=1"), "attn.extra"),
        (("data.num_classes=0",), "data.num_classes"),
    ],
)
def test_bad_settings_raise_config_error_with_key(overrides: tuple[str, ...], key: str):
    with pytest.raises(ConfigError) as error:
        build(*overrides)
    assert error.value.key == key


def not_a_stage_network(num_classes: int, attn: dict | None = None) -> nn.Module:
    return nn.Linear(3, num_classes)


def test_a_builder_must_return_the_container_every_task_builds_on():
    cfg = compose("model=resnet20")
    cfg.model = {"_target_": f"{__name__}.not_a_stage_network", "name": "linear"}
    with pytest.raises(ConfigError) as error:
        build_model(cfg)
    assert_names_bad_setting(str(error.value), "model._target_", f"{__name__}.not_a_stage_network")
    assert "taking num_classes and attn that returns a c3exp.models.ResNet" in error.value.allowed


def test_an_older_checkpoint_without_the_shared_keys_rebuilds_with_the_base_configs_values():
    """Stored before model.width and model.shortcut were keys: conf/model/base/cifar_resnet.yaml's values, the same net."""
    stored = {"model": {"_target_": "c3exp.models.cifar_resnet", "name": "resnet20", "depth": 20}}
    cfg = rebuild_config({"c3exp": {"config": stored}}, "old.ckpt")
    assert (cfg.model.width, cfg.model.shortcut) == (1, "projection")
    shapes = lambda net: [(name, p.shape) for name, p in net.named_parameters()]  # noqa: E731
    assert shapes(build_model(cfg)) == shapes(build("model=resnet20"))
