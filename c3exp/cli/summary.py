"""Parameters and MACs of a configured network, and the paper's Table 1 beside ours.

Takes the training command's overrides and composes the same config, builds the network and prints a
per-part table (stem, stages, head, total), last line `params=<int> macs=<int>`, without training or
writing anything. table=paper prints the paper's Table 1 (ResNet-20/56/110 and WRN x none/SE/CBAM/C3),
ours beside theirs; table=zoo every attention block with its default config on ResNet-20/56/110 (CIFAR-100,
32 px) and ResNet-50 (ImageNet, 224 px), beside the ResNet-50 figures of each block's own paper.
MACs are torch's FLOP counter over one image (convolutions, linear layers, matrix products) / 2.
  model=NAME   {model}
  attn=NAME    {attn}; attn.placement=..., attn.options.*=...
  data=NAME    sets the classes and the input size: {data}
  KEY=VALUE    any other override of the training command, e.g. model.depth=32 attn.stages=[2,3]

example: c3exp summary model=resnet56 attn=c3
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from omegaconf import DictConfig

from c3exp.cli.options import command, help_text, option, parse
from c3exp.config import compose, group_choices
from c3exp.paper import PAPER_ATTNS, PAPER_MODELS, TABLE1, ZOO_ADDED_PARAMS, ZOO_DATA, ZOO_IMAGENET, ZOO_MODEL


@dataclass
class Options:
    table: Literal["paper", "zoo"] | None = option("a table of many networks instead of one", None)


# C3 is counted two ways: as the paper counted it (the A-wide MLPs run on every tile) and as the
# default attn=c3 trains (the official resize path, messages passed in the hidden space).
C3_PAPER = ("attn.options.resize=tile", "attn.options.fold_messages=false")
C3_DEFAULT = ("attn.options.resize=interpolate", "attn.options.fold_messages=true")
PAPER_COLUMNS = {"params": ("params_m", 3, 2), "macs": ("flops_m", 1, 1)}  # -> (TABLE1 field, our digits, its digits)


def model_summary(cfg: DictConfig) -> str:
    """Per-part table (stem, stages, head, total), then `params=<int> macs=<int>` as the last line."""
    from c3exp.models import build_model
    from c3exp.report.markdown import markdown_table
    from c3exp.utils.complexity import count_macs, count_params, data_input_shape, part_costs

    model = build_model(cfg)
    shape = data_input_shape(cfg.data)
    costs = part_costs(model, shape)
    params, macs = count_params(model), count_macs(model, shape)
    rows = [(c.name, f"{c.params:,}", f"{c.macs:,}") for c in costs] + [("total", f"{params:,}", f"{macs:,}")]
    attn = cfg.attn.name if cfg.attn.name == "none" else f"{cfg.attn.name} ({cfg.attn.placement})"
    title = f"{cfg.model.name} + attention {attn}, {cfg.data.num_classes} classes, input {'x'.join(map(str, shape[1:]))}"
    return "\n".join([title, "", markdown_table(("part", "params", "MACs"), rows), "", f"params={params} macs={macs}"])


def complexity(model: str, attn: str, data: str, overrides: Sequence[str]) -> dict[str, int]:
    """{params, macs} of `model` with `attn` for `data` and training overrides (torch loads here, never for --help)."""
    from c3exp.models import build_model
    from c3exp.utils.complexity import model_complexity

    cfg = compose([f"model={model}", f"attn={attn}", f"data={data}", *overrides])
    return model_complexity(build_model(cfg), cfg.data)


def paper_table(overrides: Sequence[str]) -> str:
    """Table 1 layout (models x attention), ours / paper (relative difference), params and MACs."""
    from c3exp.report.markdown import markdown_table

    def text(found: dict[str, int], model: str, attn: str, key: str) -> str:
        (figure, *digits), paper = PAPER_COLUMNS[key], TABLE1.get((model, attn))
        return _compare(found[key] / 1e6, paper and getattr(paper, figure), *digits)

    cells = {(model, attn): complexity(model, attn, "cifar100", [*(C3_PAPER if attn == "c3" else ()), *overrides])
             for model in PAPER_MODELS for attn in PAPER_ATTNS}  # CIFAR-100: 100 classes, 32x32
    resized = {model: complexity(model, "c3", "cifar100", [*C3_DEFAULT, *overrides]) for model in PAPER_MODELS}
    headers = ("model", *PAPER_ATTNS.values())
    params_rows = [(label, *(text(cells[model, attn], model, attn, "params") for attn in PAPER_ATTNS))
                   for model, label in PAPER_MODELS.items()]
    macs_rows = [(label, *(text(cells[model, attn], model, attn, "macs") for attn in PAPER_ATTNS),
                  text(resized[model], model, "c3", "macs")) for model, label in PAPER_MODELS.items()]
    return "\n".join([
        "Table 1 (CIFAR-100, 100 classes, 32x32): ours / paper (relative difference); '-': no paper figure.",
        "",
        "Parameters (M)",
        "",
        markdown_table(headers, params_rows),
        "",
        "MACs (M) per image beside the paper's FLOPs (M); + C3 = the paper's counting (resize=tile:",
        "4 tiles per 2x map; fold_messages=false: A-wide messages)",
        "",
        markdown_table((*headers, "+ C3 (default attn=c3)"), macs_rows),
        "",
        "MACs: convolutions, linear layers and matrix products (torch FlopCounterMode / 2). The paper's",
        "FLOPs (thop) also count BN and ReLU, about 2% more. The default C3 (last column) runs on",
        "2x-downsampled maps, as the official training code does, and passes its messages in the A/r-wide",
        "hidden space: the same function as the paper's, at under an eighth of the tiled block's MACs.",
    ])


ZOO_CIFAR_MODELS = ("resnet20", "resnet56", "resnet110")


def zoo_table(overrides: Sequence[str]) -> str:
    """Parameters and MACs of every block on the CIFAR ResNets and ResNet-50, the papers' ResNet-50 figures beside."""
    from c3exp.attention import ATTENTION_NAMES
    from c3exp.report.markdown import markdown_table

    networks = [*((model, "cifar100") for model in ZOO_CIFAR_MODELS), (ZOO_MODEL, ZOO_DATA)]
    counts = {(model, attn): complexity(model, attn, data, overrides)
              for model, data in networks for attn in ATTENTION_NAMES}  # every block at its config's defaults
    params_rows, macs_rows = [], []
    for attn in ATTENTION_NAMES:
        ours, paper = counts[ZOO_MODEL, attn], ZOO_IMAGENET.get(attn)
        added = f"{ours['params'] - counts[ZOO_MODEL, 'none']['params']:+,}"
        added += f" / {ZOO_ADDED_PARAMS[attn]:+,}" if attn in ZOO_ADDED_PARAMS else ""
        params_rows.append((attn, *(f"{counts[model, attn]['params'] / 1e6:.3f}" for model in ZOO_CIFAR_MODELS),
                            _compare(ours["params"] / 1e6, paper and paper.params_m, 3, 2), added))
        macs_rows.append((attn, *(f"{counts[model, attn]['macs'] / 1e6:.1f}" for model in ZOO_CIFAR_MODELS),
                          _compare(ours["macs"] / 1e6, paper and paper.flops_m, 1, 0)))
    models = tuple(PAPER_MODELS[model] for model in ZOO_CIFAR_MODELS)
    return "\n".join([
        "The attention zoo: every block with its conf/attn defaults (placement included), on the CIFAR ResNets",
        "(CIFAR-100: 100 classes, 32x32) and torchvision's ResNet-50 (ImageNet: 1000 classes, 224x224). ResNet-50:",
        "ours / its paper's figure (relative difference); '-': no ResNet-50 figure in that paper.",
        "",
        "Parameters (M)",
        "",
        markdown_table(("attn", *models, "ResNet-50", "added to ResNet-50 (ours / paper)"), params_rows),
        "",
        "MACs (M) per image; the papers' ResNet-50 FLOPs (M) beside ours",
        "",
        markdown_table(("attn", *models, "ResNet-50"), macs_rows),
        "",
        "torchvision's ResNet-50 (v1.5: stride 2 in the 3x3 convolution) has 4.09 GMACs where the papers' ResNet-50",
        "(stride 2 in the first 1x1) has 3.86 GFLOPs; the parameters are the same. se is the C3 paper's baseline",
        "(reduction 8, no FC biases): with attn.options.reduction=16 it adds 2,514,944, and the SE paper's FC biases",
        "16,048 more (28.088M). ECA's paper counts its released per-stage kernels 3/5/5/7 (80); the adaptive rule",
        "gives 86. BENCHMARKS.md explains the other differences.",
    ])


def _compare(ours: float, paper: float | None, digits: int, paper_digits: int) -> str:
    if paper is None:
        return f"{ours:.{digits}f} / -"
    return f"{ours:.{digits}f} / {paper:.{paper_digits}f} ({(ours - paper) / paper:+.1%})"


def run(args: list[str]) -> str:
    """Print (and return) the summary: one network's table, or table=paper|zoo."""
    options, overrides = parse(Options, args, overrides=True)
    tables = {"paper": paper_table, "zoo": zoo_table}
    text = tables[options.table](overrides) if options.table else model_summary(compose(overrides))
    print(text)
    return text


def main(argv: Sequence[str] | None = None) -> str | None:
    choices = {group: ", ".join(group_choices(group)) for group in ("model", "attn", "data")}
    return command(argv, lambda: help_text("summary", __doc__.format(**choices), Options), run)
