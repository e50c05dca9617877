"""Channel pruning with torch-pruning's dependency graph, model statistics and 2:4 weight sparsity.

torch-pruning groups every layer coupled to a channel (residual adds, concats, depthwise convs,
BatchNorm), so a pruned channel disappears from all of them at once and the model still runs.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass

from edgekit.core.errors import InvalidInputError, TargetUnavailableError

CRITERIA = ("l1", "l2", "bn-scale", "taylor")
PATTERNS = ("2:4",)


@dataclass(frozen=True)
class PruneSpec:
    """What to remove: ratio of channels per layer (or across the model with global_ranking)."""

    ratio: float = 0.0
    criterion: str = "l2"
    global_ranking: bool = False
    ignore: tuple[str, ...] = ()  # module-name globs never pruned
    round_to: int | None = None  # keep channel counts multiples of this
    pattern: str | None = None  # "2:4" semi-structured weight sparsity
    max_layer_ratio: float = 0.9  # global ranking never empties a layer beyond this

    def __post_init__(self):
        if not 0.0 <= self.ratio < 1.0:
            raise InvalidInputError(f"pruning ratio {self.ratio} is out of range", hint="use 0 < RATIO < 1, e.g. 0.3")
        if self.criterion not in CRITERIA:
            raise InvalidInputError(f"unknown criterion '{self.criterion}'", hint=f"one of {', '.join(CRITERIA)}")
        if self.pattern is not None and self.pattern not in PATTERNS:
            raise InvalidInputError(f"unknown sparsity pattern '{self.pattern}'", hint="supported: 2:4")
        if self.round_to is not None and self.round_to < 1:
            raise InvalidInputError(f"--round-to {self.round_to} must be a positive channel count")
        if self.ratio == 0 and self.pattern is None:
            raise InvalidInputError("nothing to prune", hint="give --ratio (e.g. 0.3) and/or --pattern 2:4")


def import_torch_pruning():
    try:
        import torch_pruning
    except ImportError as e:
        raise TargetUnavailableError("structured pruning needs torch-pruning",
                                     hint="pip install 'edgekit[prune]'") from e
    return torch_pruning


def example_inputs(specs, batch: int = 1) -> tuple:
    import torch

    from edgekit.core.tensors import random_feed

    feed = random_feed([s.with_batch(batch) for s in specs])
    return tuple(torch.from_numpy(feed[s.name]) for s in specs)


def prune_channels(model, specs, spec: PruneSpec, gradients=None) -> list[str]:
    """Remove channels in place; returns the names of layers kept whole as the model's contract.

    `gradients(model)` accumulates .grad on the weights first (Taylor importance needs them).
    """
    import torch

    tp = import_torch_pruning()
    example = example_inputs(specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about every op it treats as element-wise
        contract = output_layers(model, example)
        ignored = contract + matching_modules(model, spec.ignore)
        if spec.criterion == "taylor":
            if gradients is None:
                raise InvalidInputError("the taylor criterion needs data", hint="pass --calib DATA or --distill DATA")
            model.zero_grad()
            gradients(model)
        pruner = _pruner_class(tp)(
            model, example, _importance(tp, spec.criterion), pruning_ratio=spec.ratio,
            global_pruning=spec.global_ranking, ignored_layers=[m for _, m in ignored],
            round_to=spec.round_to, max_pruning_ratio=spec.max_layer_ratio if spec.global_ranking else 1.0,
        )
        pruner.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model(*example)  # fails here, not later in export, if a coupled op was missed
    return [name for name, _ in contract]


def _importance(tp, criterion: str):
    imp = tp.importance
    return {
        "l1": lambda: imp.MagnitudeImportance(p=1),
        "l2": lambda: imp.MagnitudeImportance(p=2),
        "bn-scale": lambda: imp.BNScaleImportance(),
        "taylor": lambda: imp.TaylorImportance(),
    }[criterion]()


def _pruner_class(tp):
    class NearestRoundingPruner(tp.pruner.BasePruner):
        """Rounds kept channels to the NEAREST multiple, never below one multiple: torch-pruning
        rounds down, so 32 channels at 30% with round_to=8 would lose half of them."""

        def _round_to(self, n_pruned, current_channels, round_to):
            keep = current_channels - n_pruned
            keep = max(round_to, int(round(keep / round_to)) * round_to)
            return max(current_channels - keep, 0)

    return NearestRoundingPruner


def output_layers(model, example) -> list[tuple[str, object]]:
    """Conv/linear layers whose output channels reach a model output through no other such layer.

    Pruning them would change an output shape (the classifier, detection heads...), so they are
    always kept whole.
    """
    import torch

    tp = import_torch_pruning()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    names = {m: n for n, m in model.named_modules()}
    roots = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    found, seen = [], set()
    stack = [node for node in graph.module2node.values() if not node.outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, roots):
            found.append((names.get(node.module, "?"), node.module))
            continue
        stack.extend(node.inputs)
    return sorted(found, key=lambda item: item[0])


def matching_modules(model, patterns: tuple[str, ...]) -> list[tuple[str, object]]:
    """Modules whose qualified name matches any glob; a pattern matching nothing is an error."""
    found = []
    named = [(n, m) for n, m in model.named_modules() if n]
    for pattern in patterns:
        hits = [(n, m) for n, m in named if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            sample = ", ".join(n for n, _ in named[:6])
            raise InvalidInputError(f"--ignore '{pattern}' matches no layer", hint=f"layer names look like: {sample}")
        found += hits
    return found


def layer_widths(model) -> dict[str, int]:
    """Output channels / features of every conv and linear layer, by qualified name."""
    import torch

    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            widths[name] = int(m.out_channels)
        elif isinstance(m, torch.nn.Linear):
            widths[name] = int(m.out_features)
    return widths


def count_params_macs(model, specs) -> tuple[int, int]:
    """Parameters, and multiply-accumulates of conv/linear layers at batch 1 (as onnx_model counts)."""
    import torch

    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        per_sample = output[0].numel() if output.dim() > 1 else output.numel()
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            macs += per_sample * (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        else:
            macs += per_sample * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(*example_inputs(specs))
    finally:
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters()), int(macs)


def sparsify_2_4(model, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Zero the 2 smallest of every 4 consecutive input-channel weights (TensorRT's sparse layout).

    Returns masks by layer name so fine-tuning can keep the pattern. Layers whose input channels
    per group are not a multiple of 4 (an RGB stem, depthwise convs) stay dense, as TensorRT would.
    """
    import torch

    masks = {}
    for name, m in model.named_modules():
        if name in skip or not isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            continue
        w = m.weight.data
        if w.shape[1] % 4 or w.shape[1] < 4:
            continue
        # put the input channels last so groups of 4 run along them (per output channel and tap)
        moved = w.movedim(1, -1)
        groups = moved.reshape(-1, 4)
        keep = groups.abs().topk(2, dim=1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
        mask = mask.reshape(moved.shape).movedim(-1, 1).contiguous()
        m.weight.data.mul_(mask)
        masks[name] = mask
    return masks


def apply_masks(model, masks: dict) -> None:
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask)


def is_2_4_sparse(weight) -> bool:
    """Every group of 4 consecutive input channels has at least 2 zeros."""
    groups = weight.detach().movedim(1, -1).reshape(-1, 4)
    return bool(((groups == 0).sum(1) >= 2).all())
