"""task.cuda_graphs on the CPU (CI has no GPU): the graphed training step trains exactly as the plain one, makes no host
synchronisation (the captured form's fused, tensor-lr optimiser step included), traces into one graph without breaks,
resumes exactly, and falls back in one line where graphs do not fit. The capture itself needs a CUDA GPU:
benchmarks/gpu.sh times it there."""
from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from c3exp.errors import NonFiniteLossError
from c3exp.training.graphs import DeviceLearningRates, StepGraphs, capturable_options
from c3exp.training.train import train
from tests.conftest import TINY_DIGITS, run_config, without_timing

#: ResNet-20 + C3 on the digits held "on the device" (the CPU), 4 training and 2 validation batches an epoch
GRAPHED = TINY_DIGITS + ["model=resnet20", "attn=c3", "data.on_device=true", "trainer.limit_train_batches=4",
                         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
aten = torch.ops.aten
#: ops that make the host wait for a device: a scalar read (item, bool, int, float) or an output sized by the data
WAITING_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
               aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default}
#: indexing by a boolean mask: its result's size (or the positions written) is the mask's count of true values
MASK_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
WAITING_METHODS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
                   torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}


class HostWaits(TorchDispatchMode):
    """Records every op or tensor method inside the block that would make the host wait for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        outer = self

        class Methods(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in WAITING_METHODS:
                    outer.seen.append(func.__name__)
                return func(*args, **(kwargs or {}))

        self.methods = Methods()

    def __enter__(self):
        self.methods.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.methods.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        masks = func in MASK_INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1])
        if func in WAITING_OPS or masks:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_detector_sees_each_kind_of_host_wait():
    x = torch.ones(3)
    for wait in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x.tolist(), lambda: x[x > 0], lambda: x.clone().index_put_((x > 0,), torch.zeros(())),
                 lambda: int(x.sum()), lambda: x.nonzero()):
        with HostWaits() as waits:
            wait()
        assert waits.seen, wait


class WatchSteps(L.Callback):
    """Runs every training and validation step under HostWaits; the config builds it (callbacks.watch), the test reads
    `latest`."""

    latest: WatchSteps | None = None

    def __init__(self) -> None:
        self.waits, self.graphs = HostWaits(), None
        WatchSteps.latest = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.graphs is None:
            self.graphs = pl_module.graphs, pl_module.eval_graphs
            for name in ("training_step", "validation_step"):
                setattr(pl_module, name, self.watched(getattr(pl_module, name)))

    def watched(self, step):
        def run(*args, **kwargs):
            with self.waits:
                return step(*args, **kwargs)

        return run


def graphed_run(tmp_path, *overrides: str) -> dict:
    return train(run_config(GRAPHED + list(overrides), tmp_path))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("options", [(), ("trainer.precision=bf16-mixed", "optim.ema_decay=0.9", "data.mixup_alpha=0.2",
                                          "optim=cosine", "optim.warmup_epochs=1")], ids=["paper", "bf16 + strong options"])
def test_graphed_steps_train_exactly_as_plain_steps_and_never_wait_for_the_device(tmp_path, options):
    graphed = graphed_run(tmp_path / "graphed", "task.cuda_graphs=true", "trainer.max_epochs=2",
                          f"+callbacks.watch._target_={__name__}.WatchSteps", *options)
    watch = WatchSteps.latest
    plain = graphed_run(tmp_path / "plain", "task.cuda_graphs=false", "trainer.max_epochs=2", *options)
    assert all(isinstance(graphs, StepGraphs) for graphs in watch.graphs) and watch.waits.seen == []
    weights = [torch.load(run["checkpoints"]["last"], weights_only=True)["state_dict"] for run in (graphed, plain)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    for mine, theirs in zip(without_timing(graphed["history"]), without_timing(plain["history"]), strict=True):
        assert mine.keys() == theirs.keys() and mine == pytest.approx(theirs, rel=1e-6)
    assert graphed["test_acc1"] == plain["test_acc1"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_graphed_run_resumes_exactly(tmp_path):
    straight = graphed_run(tmp_path / "straight", "task.cuda_graphs=true", "trainer.max_epochs=2")
    first = graphed_run(tmp_path / "legs", "task.cuda_graphs=true", "trainer.max_epochs=1")
    resumed = graphed_run(tmp_path / "legs", "task.cuda_graphs=true", "trainer.max_epochs=2")  # resume=auto
    assert first["epochs"] == 1 and without_timing(resumed["history"]) == without_timing(straight["history"])


def test_a_non_finite_loss_of_graphed_steps_stops_the_run_at_its_epoch_end(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite in \d+ steps of epoch 0"):
        graphed_run(tmp_path, "task.cuda_graphs=true", "trainer.max_epochs=1", "optim.optimizer.lr=1e30")
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("overrides, reason", [
    (["experiment=segmentation_shapes"], "SegmentationModule has no graphed step for its metrics (miou, macc, pixel_acc)"),
    (GRAPHED + ["trainer.gradient_clip_val=1.0"], "gradient clipping and accumulation"),
    (GRAPHED + ["trainer=ddp_sim"], "data-parallel training (2 processes)"),
])
def test_where_graphs_do_not_fit_the_run_trains_with_plain_steps_after_one_line(tmp_path, caplog, overrides, reason):
    from c3exp.tasks import build_task

    cfg = run_config([*overrides, "task.cuda_graphs=true"], tmp_path)
    module = build_task(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy="auto", logger=False, enable_progress_bar=False,
                        gradient_clip_val=cfg.trainer.get("gradient_clip_val"))
    if "trainer=ddp_sim" in overrides:
        trainer.strategy.world_size = 2  # what setup sees in each of DDP's processes
    module.trainer = trainer
    with caplog.at_level(logging.INFO, logger="c3exp.tasks.base"):
        module.setup("fit")
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("c3exp")]
    assert len(lines) == 1 and lines[0].startswith("task.cuda_graphs=true: ") and reason in lines[0], lines
    assert not module.graphed


def test_a_task_whose_metrics_are_not_the_summed_ones_steps_plainly():
    """A subclass scored otherwise (docs/extending.md's F1 task) must not report top-1 hits under its metric's name."""
    from c3exp.tasks import ClassificationModule

    class F1Classification(ClassificationModule):
        metric_modes = {"f1": "max"}

    assert ClassificationModule.has_graphed_step() and not F1Classification.has_graphed_step()


def test_the_captured_optimiser_step_reads_a_device_learning_rate_and_never_waits():
    """What a capture records on CUDA: the fused step with group['lr'] a tensor; on the CPU the same kernels run."""
    torch.manual_seed(0)
    weights = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
    twins = [w.detach().clone().requires_grad_() for w in weights]
    captured = torch.optim.SGD(weights, lr=0.1, momentum=0.9, weight_decay=1e-4, **capturable_options(torch.optim.SGD))
    plain = torch.optim.SGD(twins, lr=0.1, momentum=0.9, weight_decay=1e-4)
    rates = DeviceLearningRates(captured, torch.device("cpu"))
    for step, lr in enumerate((0.1, 0.1, 0.01)):
        for group in (*captured.param_groups, *plain.param_groups):
            group["lr"] = lr  # a scheduler's float
        for params in (weights, twins):
            for w in params:
                w.grad = torch.full_like(w, step + 1.0)
        rates.refresh()
        with HostWaits() as waits, rates.in_groups():
            captured.step()
        plain.step()
        assert waits.seen == [] and captured.param_groups[0]["lr"] == lr  # the float is back
        assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(weights, twins))


def test_optimisers_capturable_with_a_tensor_learning_rate():
    assert capturable_options(torch.optim.SGD) == {"fused": True}
    assert capturable_options(torch.optim.AdamW) == {"fused": True, "capturable": True}
    assert capturable_options(torch.optim.RMSprop) == {}


@pytest.mark.parametrize("attn", ["none", "se", "cbam", "c3"])
def test_the_graphed_forward_traces_into_one_graph(attn):
    """torch.compile(fullgraph=True) fails at any graph break: a host read, a data-dependent branch, an untraceable op."""
    from c3exp.tasks import build_task

    module = build_task(run_config(GRAPHED + [f"attn={attn}"], ".")).train()
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch._dynamo.reset()
    loss, sums = torch.compile(module.graph_forward, fullgraph=True, backend="aot_eager")(images, targets)
    loss.backward()
    assert sums.shape == (5,) and sums[1] == 4 and all(p.grad is not None for p in module.parameters())


def test_step_graphs_call_the_step_plainly_off_cuda():
    calls = []
    graphs = StepGraphs(lambda x: calls.append(x) or x * 2, warmup=0)
    assert torch.equal(graphs(torch.ones(2)), torch.full((2,), 2.0)) and len(calls) == 1 and not graphs.graphs
