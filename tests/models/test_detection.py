"""Faster R-CNN on c3exp's backbones (c3exp/models/detection.py): the feature pyramid and its anchors, frozen
stages and BN that spare the attention blocks, C3 on images of any size."""
from __future__ import annotations

import pytest
import torch

import c3exp
from c3exp.errors import ConfigError
from c3exp.tasks import build_network


def detector(*overrides: str):
    return build_network(c3exp.compose(["task=detection", "data=shapes_detection", "model=resnet20", *overrides]))


def test_the_pyramid_has_one_anchor_size_per_level_from_the_strides():
    net = detector("task.net.fpn_channels=16", "task.net.representation_size=32")
    assert net.backbone.strides() == [1, 2, 4, 8]  # CIFAR ResNet stages at strides 1, 2, 4 and the extra pool level
    assert net.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))
    two = detector("task.net.stages=[1,2]", "task.net.anchor_sizes=[12,24,48]", "task.net.fpn_channels=16")
    assert two.backbone.strides() == [2, 4, 8] and two.rpn.anchor_generator.sizes == ((12,), (24,), (48,))
    with pytest.raises(ConfigError, match="task.net.anchor_sizes.*3 positive sizes"):
        detector("task.net.stages=[1,2]", "task.net.anchor_sizes=[12,24]")


def test_trainable_stages_and_frozen_bn_spare_the_attention_blocks():
    net = detector("attn=se", "task.net.trainable_stages=1", "task.net.frozen_bn=true")
    body = net.backbone.body
    frozen = [body.stem, body.stage0, body.stage1]
    attention = {id(p) for m in body.modules() if getattr(m, "is_attention", False) for p in m.parameters()}
    assert attention and all(p.requires_grad for m in body.modules() if getattr(m, "is_attention", False)
                             for p in m.parameters())
    assert not any(p.requires_grad for part in frozen for p in part.parameters() if id(p) not in attention)
    norms = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not p.requires_grad for m in norms for p in m.parameters())
    assert all(p.requires_grad for m in body.stage2.modules() if not isinstance(m, torch.nn.BatchNorm2d)
               for p in m.parameters(recurse=False))
    net.train()  # Lightning's fit: the frozen BN still normalises with its stored statistics
    assert net.backbone.training and not any(m.training for m in norms)
    with pytest.raises(ConfigError, match="task.net.trainable_stages"):
        detector("task.net.trainable_stages=5")


def test_frozen_bn_keeps_the_attention_that_follows_it_in_a_torchvision_backbone():
    """torchvision networks apply block attention by a forward hook on the BN before it: freezing keeps that BN."""
    net = detector("model=resnet18", "attn=se", "task.net.frozen_bn=true", "task.net.fpn_channels=16",
                   "task.net.representation_size=32").eval()
    calls = []
    blocks = [m for m in net.backbone.body.modules() if getattr(m, "is_attention", False)]
    for block in blocks:
        block.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        net([torch.rand(3, 64, 64)])
    assert len(blocks) == 8 and len(calls) == 8  # one SE block per basic block of ResNet-18, each run once


def test_unknown_detector_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"task.net.detector.rpn_typo.*FasterRCNN"):
        detector("+task.net.detector.rpn_typo=1")
    with pytest.raises(ConfigError, match=r"task.net.fpn_width"):
        detector("+task.net.fpn_width=1")


def test_c3_detects_on_images_of_several_sizes_that_are_no_multiple_of_its_blocks():
    """One batch of a 70x50 and a 64x64 image: maps of 70x50, 35x25, 18x13 against C3's 32x32 blocks."""
    torch.manual_seed(0)
    net = detector("attn=c3", "task.net.fpn_channels=16", "task.net.representation_size=32",
                   "data.min_size=50", "data.max_size=70")
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([2])}]
    losses = net(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values())
    net.eval()
    with torch.no_grad():
        detections = net(images)
    assert [tuple(d["boxes"].shape[1:]) for d in detections] == [(4,), (4,)]
    assert all((d["boxes"][:, 2] <= 70).all() and (d["boxes"][:, 3] <= 64).all() for d in detections)
