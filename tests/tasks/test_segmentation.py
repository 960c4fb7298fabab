"""task=segmentation (c3exp/tasks/segmentation.py) end to end on the shapes scenes in VOC's layout: results,
metrics against the confusion matrix, the loss, exact resume, eval."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import c3exp
from c3exp.errors import ConfigError
from c3exp.cli.eval import evaluate
from c3exp.models.heads import HEADS
from c3exp.tasks import SegmentationModule, build_task
from c3exp.training.train import train
from tests.conftest import assert_names_bad_setting, run_config, without_timing


def segmenter(net: torch.nn.Module, classes: int = 3, **options) -> SegmentationModule:
    """A SegmentationModule with conf/task/segmentation.yaml's settings, `options` in their place."""
    task = c3exp.compose(["task=segmentation"]).task
    settings = {key: value for key, value in task.items() if key not in ("_target_", "net")}  # net: built by the test
    return SegmentationModule(net, num_classes=classes, optimizer=torch.optim.SGD, **{**settings, **options})


def tiny(root: Path) -> list[str]:
    """The shapes experiment shrunk: 24 + 12 scenes of 32 px, 3 training batches an epoch."""
    return [
        "experiment=segmentation_shapes", f"data.root={root}", "data.train_images=24", "data.val_images=12",
        "data.image_size=32", "data.crop_size=32", "data.batch_size=8", "trainer.enable_progress_bar=false",
    ]


@pytest.fixture(scope="module")
def straight(shapes_root, tmp_path_factory) -> dict:
    return train(run_config(tiny(shapes_root) + ["attn=c3", "trainer.max_epochs=2", "optim.scheduler.T_max=2"],
                            tmp_path_factory.mktemp("straight")))


def test_a_segmentation_run_reads_the_voc_layout_and_reports_its_metrics(straight, shapes_root):
    assert (shapes_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file()
    on_disk = json.loads((Path(straight["run_dir"]) / "results.json").read_text())
    assert on_disk["task"] == "segmentation" and on_disk["primary_metric"] == {"name": "val/miou", "mode": "max"}
    history = on_disk["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert on_disk["best_val_miou"] == max(row["val/miou"] for row in history)
    assert on_disk["final_val_macc"] == history[-1]["val/macc"]
    assert {"test_miou", "test_macc", "test_pixel_acc", "test_loss"} <= on_disk.keys()
    assert "best-epoch" in Path(on_disk["checkpoints"]["best"]).name


def test_resuming_a_segmentation_run_equals_the_uninterrupted_run(straight, shapes_root, tmp_path):
    args = tiny(shapes_root) + ["attn=c3", "optim.scheduler.T_max=2"]  # the first leg's schedule is the whole run's
    first = train(run_config(args + ["trainer.max_epochs=1"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=2", f"ckpt_path={first['checkpoints']['last']}"], tmp_path / "legs"))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    assert resumed["test_miou"] == straight["test_miou"] and resumed["test_loss"] == straight["test_loss"]


def test_eval_reproduces_the_test_miou(straight, shapes_root):
    metrics = evaluate(straight["checkpoints"]["last"], [f"data.root={shapes_root}"])  # data.root is never the checkpoint's
    assert metrics["test/miou"] == pytest.approx(straight["test_miou"], abs=1e-6)
    assert metrics["test/pixel_acc"] == pytest.approx(straight["test_pixel_acc"], abs=1e-6)


def confusion(preds: np.ndarray, target: np.ndarray, classes: int, ignore: int) -> np.ndarray:
    keep = target != ignore
    matrix = np.zeros((classes, classes))
    np.add.at(matrix, (target[keep], preds[keep]), 1)
    return matrix


def test_metrics_equal_the_confusion_matrix_by_hand():
    """mIoU: mean over classes seen (labelled or predicted) of TP / (TP + FP + FN); mean acc: of TP / labelled."""
    generator = torch.Generator().manual_seed(0)
    classes, ignore = 4, 255
    logits = torch.randn(3, classes, 9, 7, generator=generator)
    target = torch.randint(0, classes - 1, (3, 9, 7), generator=generator)  # class 3 never labelled
    target[:, 0] = ignore
    module = segmenter(torch.nn.Identity(), classes, ignore_index=ignore)
    metrics = module.make_metrics("val/")
    metrics.update(logits, target)
    got = {key: float(value) for key, value in metrics.compute().items()}

    matrix = confusion(logits.argmax(1).numpy(), target.numpy(), classes, ignore)
    tp, labelled, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    union = labelled + predicted - tp
    seen = union > 0
    assert got["val/miou"] == pytest.approx((tp[seen] / union[seen]).mean(), abs=1e-6)
    assert got["val/macc"] == pytest.approx((tp[labelled > 0] / labelled[labelled > 0]).mean(), abs=1e-6)
    assert got["val/pixel_acc"] == pytest.approx(tp.sum() / matrix.sum(), abs=1e-6)


def test_the_loss_skips_ignored_pixels_and_adds_the_weighted_aux_loss():
    class TwoHeads(torch.nn.Module):
        def forward(self, x):
            return {"out": x, "aux": x.flip(1)}

    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(2))
    masks[0, 0] = 255
    module = segmenter(TwoHeads(), aux_weight=0.5)
    loss = module.model_step((logits, masks))[0]
    keep = masks != 255
    log_p, log_q = logits.log_softmax(1), logits.flip(1).log_softmax(1)
    picked = lambda log: -log.gather(1, masks.clamp(max=2)[:, None])[:, 0][keep].mean()  # noqa: E731
    assert float(loss) == pytest.approx(float(picked(log_p) + 0.5 * picked(log_q)), rel=1e-5)


def test_an_unknown_head_is_one_line():
    cfg = c3exp.compose(["task=segmentation", "data=shapes", "task.net.head=unet"])
    with pytest.raises(ConfigError) as error:
        build_task(cfg, run_config={})
    assert_names_bad_setting(str(error.value), "task.net.head", "unet")
    assert ", ".join(HEADS) in error.value.allowed


@pytest.mark.parametrize("head, aux", [("deeplabv2", False), ("deeplabv3", True)])
def test_the_cli_and_build_model_give_the_same_segmentation_network(head, aux):
    # C3 blocks no larger than the stage inputs of 64 px crops at output stride 8 (16, 16, 8, 8)
    overrides = ["task=segmentation", "data=shapes", "model=resnet18", "model.output_stride=8", "attn=c3",
                 "attn.options.spatial_sizes=[[16,16],[16,16],[8,8],[8,8]]", f"task.net.head={head}",
                 f"task.net.aux_loss={str(aux).lower()}"]
    cfg = c3exp.compose(overrides)
    net = c3exp.build_network(cfg)
    module = build_task(cfg, run_config={})
    assert [(n, p.shape) for n, p in net.named_parameters()] == [(n, p.shape) for n, p in module.net.named_parameters()]
    out = net(torch.randn(2, 3, 65, 65))
    assert out["out"].shape == (2, 4, 65, 65) and ("aux" in out) == aux


class OneHead(torch.nn.Module):
    def forward(self, x):
        return {"out": x}


def test_label_smoothing_spreads_its_share_over_the_classes_of_the_labelled_pixels():
    """eps = 0.3, 3 classes: each labelled pixel's loss is -(0.8 log p_label + 0.1 sum of the other log p); void pixels none."""
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(2))
    masks[0, 0] = 255
    module = segmenter(OneHead(), label_smoothing=0.3)
    loss = module.model_step((logits, masks))[0]
    log_p = logits.log_softmax(1).permute(0, 2, 3, 1)[masks != 255]  # (labelled pixels, classes)
    labels = masks[masks != 255]
    per_pixel = [-(0.7 * row[label] + 0.1 * sum(row)) for row, label in zip(log_p.tolist(), labels.tolist())]
    assert float(loss) == pytest.approx(sum(per_pixel) / len(per_pixel), rel=1e-5)


class RampNet(torch.nn.Module):
    """Maps that depend on the pixel's column (0, 1, 2, 3 across a 4-wide image), so a flip changes them."""

    def forward(self, x):
        ramp = torch.arange(x.shape[-1], dtype=x.dtype)
        return {"out": x * ramp, "aux": x + ramp}


def test_tta_flip_averages_the_maps_of_the_image_and_the_flipped_back_maps_of_its_mirror_image():
    """Flipped back, the mirror image's maps weigh column j by 3 - j: the mean is x * 1.5 and x + 1.5."""
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(3))
    module = segmenter(RampNet(), tta_flip=True).eval()
    outputs = module(x)
    torch.testing.assert_close(outputs["out"], x * 1.5)
    torch.testing.assert_close(outputs["aux"], x + 1.5)
    torch.testing.assert_close(module.train()(x)["out"], x * torch.arange(4.0))  # never in training
