"""ClassificationModule (c3exp/tasks/classification.py): the loss with label smoothing and with soft labels, train
accuracy on soft labels, test-time augmentation by flipping, and the task config's defaults."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection

import c3exp
from c3exp.errors import ConfigError
from c3exp.schema import check_settings
from c3exp.tasks import ClassificationModule, PrimaryMetric, TaskModule
from tests.conftest import assert_names_bad_setting


RECIPE = {"label_smoothing": 0.0, "tta_flip": False}  # the paper's: every task config's (test below)
SETTINGS = {**RECIPE, "primary_metric": None, "name": "classification", "channels_last": False, "compile": False,
            "cuda_graphs": False}


def classifier(net: nn.Module | None = None, **options) -> ClassificationModule:
    """Three classes; the identity network makes the batch's "images" its logits."""
    return ClassificationModule(net or nn.Identity(), num_classes=3, optimizer=torch.optim.SGD, **{**SETTINGS, **options})


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
LSE = math.log(math.exp(2) + 1 + math.exp(-1))  # logsumexp of the first row


def test_hard_labels_without_smoothing_are_the_plain_cross_entropy():
    loss, _, targets, count = classifier().model_step((LOGITS, torch.tensor([0, 1])))
    assert float(loss) == pytest.approx(((LSE - 2) + math.log(3)) / 2, rel=1e-6)
    assert targets.tolist() == [0, 1] and count == 2


def test_label_smoothing_spreads_its_share_over_all_classes():
    """eps = 0.3 over 3 classes: target (0.8, 0.1, 0.1) for label 0; -sum q log p = LSE - (0.8*2 + 0.1*0 - 0.1*1)."""
    loss = classifier(label_smoothing=0.3).model_step((LOGITS, torch.tensor([0, 1])))[0]
    # the second row's logits are equal: every target gives log 3
    assert float(loss) == pytest.approx(((LSE - 1.5) + math.log(3)) / 2, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_soft_labels_give_the_cross_entropy_with_their_probabilities_and_accuracy_on_their_argmax(smoothing):
    """Rows (0.6, 0.4, 0) and (0, 0.3, 0.7), smoothed to (1 - eps) p + eps / 3; accuracy counts classes 0 and 2 as true."""
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])
    module = classifier(label_smoothing=smoothing)
    loss, predictions, targets, count = module.model_step((LOGITS, soft))
    q = [[(1 - smoothing) * p + smoothing / 3 for p in row] for row in soft.tolist()]
    first = -(q[0][0] * (2 - LSE) + q[0][1] * (0 - LSE) + q[0][2] * (-1 - LSE))
    second = math.log(3)  # equal logits: -sum q log(1/3) whatever q
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-6)
    assert targets.tolist() == [0, 2] and count == 2
    metrics = module.metrics["train_split"]
    metrics.update(predictions, targets)  # the logits predict class 0 for both rows (the second: a tie, the first index)
    assert float(metrics.compute()["train/acc1"]) == 0.5


class FirstRow(nn.Module):
    """The "logits" of an image: its first pixel row in channel 0, which a horizontal flip reverses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :]


def test_tta_flip_averages_the_logits_of_the_image_and_its_mirror_image_outside_training():
    image = torch.zeros(1, 1, 2, 3)
    image[0, 0, 0] = torch.tensor([1.0, 2.0, 6.0])
    module = classifier(FirstRow(), tta_flip=True)
    assert module.train()(image).tolist() == [[1.0, 2.0, 6.0]]  # training: the image alone
    module.eval()
    assert module(image).tolist() == [[3.5, 2.0, 3.5]]  # (1 + 6) / 2, (2 + 2) / 2, (6 + 1) / 2
    assert module.model_step((image, torch.tensor([1])))[1].tolist() == [[3.5, 2.0, 3.5]]
    assert classifier(FirstRow()).eval()(image).tolist() == [[1.0, 2.0, 6.0]]  # off by default


@pytest.mark.parametrize("options, key", [({"label_smoothing": 1.0}, "task.label_smoothing"),
                                          ({"label_smoothing": -0.1}, "task.label_smoothing"),
                                          ({"tta_flip": "yes"}, "task.tta_flip")])
def test_bad_options_are_one_line_naming_the_key(options, key):
    with pytest.raises(ConfigError) as error:
        check_settings(options, ClassificationModule, "task.")
    assert error.value.key == key and "\n" not in str(error.value)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_the_task_configs_that_read_the_recipe_options_have_them_off(task):
    """Off unless told: plain cross-entropy and no test-time augmentation, the paper's recipe (detection: no such keys)."""
    node = c3exp.compose([f"task={task}"]).task
    assert {key: node[key] for key in RECIPE} == RECIPE


class Brier(TaskModule):
    """A task of its own on the classification config (task._target_=...), whose loss reads neither option."""

    metric_modes = {"mse": "min"}
    default_primary = PrimaryMetric("val/mse", "min")

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()}, prefix=prefix)


@pytest.mark.parametrize("option", [{"label_smoothing": 0.1}, {"tta_flip": True}])
def test_a_task_that_does_not_read_an_option_refuses_it_on(option):
    assert Brier(nn.Identity(), num_classes=3, optimizer=torch.optim.SGD, **SETTINGS)
    with pytest.raises(ConfigError) as error:
        Brier(nn.Identity(), num_classes=3, optimizer=torch.optim.SGD, **{**SETTINGS, **option})
    ((key, value),) = option.items()
    assert_names_bad_setting(str(error.value), f"task.{key}", value)
    assert error.value.allowed.endswith(": Brier does not read it")
