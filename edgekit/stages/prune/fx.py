"""Make a `torch.export` program prunable: its conv/linear/batch-norm calls become nn.Modules again.

A loaded `.pt2` runs as an fx graph of functional aten ops reading raw parameters; torch-pruning
finds layers through nn.Module hooks, so it would see no layer at all (and `.eval()` is refused).
Rebuilding a plain GraphModule whose weighted ops call real modules lets the dependency graph,
BN re-estimation and distillation work on a `.pt2` exactly as on the user's own model.
"""

from __future__ import annotations

from edgekit.core.errors import InvalidInputError

_CONV_ARGS = ("stride", "padding", "dilation", "groups")


def is_exported_module(model) -> bool:
    """True for the module of a loaded `.pt2` (an fx graph of aten ops)."""
    import torch

    return isinstance(model, torch.fx.GraphModule) and any(
        n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in model.graph.nodes
    )


def modules_from_exported(gm, source: str = ".pt2"):
    """A torch.fx.GraphModule equivalent to `gm` whose weighted ops are nn.Conv/Linear/BatchNorm."""
    import torch
    from torch import fx, nn

    aten = torch.ops.aten
    builders = {
        aten.conv1d.default: _conv(nn.Conv1d), aten.conv2d.default: _conv(nn.Conv2d),
        aten.conv3d.default: _conv(nn.Conv3d), aten.linear.default: _linear,
        aten.batch_norm.default: _batch_norm,
    }
    root = nn.Module()
    graph = fx.Graph()
    graph._codegen = gm.graph._codegen  # keeps the pytree in/out handling of the exported signature
    env: dict = {}
    converted: set = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target.startswith("_guards"):
            continue  # input guards of the original export; the re-export writes its own
        build = builders.get(node.target) if node.op == "call_function" else None
        if build is not None and node.args[1].op == "get_attr":
            weight_path = node.args[1].target
            module = build(gm, node)
            name = _unique_name(root, weight_path.rpartition(".")[0] or node.name)
            _set_submodule(root, name, module)
            converted.update(a.target for a in node.args[1:] if isinstance(a, fx.Node) and a.op == "get_attr")
            env[node] = graph.call_module(name, (env[node.args[0]],))
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    _check_leftover_parameters(gm, graph, converted, source)
    for node in list(graph.nodes):  # parameters now owned by modules, unused buffers
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    for node in graph.nodes:  # constants and buffers the remaining ops still read
        if node.op == "get_attr" and not _has_attr(root, node.target):
            _set_attr(root, node.target, _get_attr(gm, node.target))
    graph.lint()
    out = fx.GraphModule(root, graph)
    out.eval()
    return out


def _conv(cls):
    def build(gm, node):
        import torch

        weight = _get_attr(gm, node.args[1].target)
        bias = _maybe_attr(gm, node.args[2] if len(node.args) > 2 else None)
        given = dict(zip(_CONV_ARGS, node.args[3:]))
        given.update({k: v for k, v in node.kwargs.items() if k in _CONV_ARGS})
        groups = int(given.get("groups", 1))
        if isinstance(given.get("padding"), str):
            raise InvalidInputError(f"conv padding '{given['padding']}' in a .pt2 is not supported for pruning")
        module = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), bias=bias is not None,
                     stride=given.get("stride", 1), padding=given.get("padding", 0),
                     dilation=given.get("dilation", 1), groups=groups)
        module.weight = torch.nn.Parameter(weight.detach().clone())
        if bias is not None:
            module.bias = torch.nn.Parameter(bias.detach().clone())
        return module

    return build


def _linear(gm, node):
    import torch

    weight = _get_attr(gm, node.args[1].target)
    bias = _maybe_attr(gm, node.args[2] if len(node.args) > 2 else None)
    module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight = torch.nn.Parameter(weight.detach().clone())
    if bias is not None:
        module.bias = torch.nn.Parameter(bias.detach().clone())
    return module


def _batch_norm(gm, node):
    import torch

    # aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    weight, bias, mean, var = (_maybe_attr(gm, a) for a in node.args[1:5])
    momentum, eps = float(node.args[6]), float(node.args[7])
    if mean is None:
        raise InvalidInputError("a batch norm without running statistics in the .pt2 cannot be pruned")
    val = node.meta.get("val")
    rank = len(val.shape) if val is not None else 4
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 5: torch.nn.BatchNorm3d}.get(rank, torch.nn.BatchNorm2d)
    module = cls(mean.shape[0], eps=eps, momentum=momentum, affine=weight is not None)
    with torch.no_grad():
        module.running_mean.copy_(mean)
        module.running_var.copy_(var)
        if weight is not None:
            module.weight.copy_(weight)
            module.bias.copy_(bias)
    return module


def _check_leftover_parameters(gm, graph, converted: set, source: str) -> None:
    """Any parameter still read by an op we did not convert would be pruned blindly: refuse."""
    params = {name for name, _ in gm.named_parameters()}
    for node in graph.nodes:
        if node.op != "get_attr" or node.target in converted or node.target not in params:
            continue
        users = [u for u in node.users if u.op != "output"]
        if users:
            op = getattr(users[0].target, "__name__", str(users[0].target))
            raise InvalidInputError(
                f"{source} uses parameter '{node.target}' in op {op}, which edgekit cannot prune in an exported graph",
                hint="prune the original PyTorch model (file.py:factory with --weights) instead of the .pt2",
            )


def _maybe_attr(gm, arg):
    return _get_attr(gm, arg.target) if arg is not None and getattr(arg, "op", None) == "get_attr" else None


def _get_attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _has_attr(obj, path: str) -> bool:
    try:
        _get_attr(obj, path)
        return True
    except AttributeError:
        return False


def _set_attr(root, path: str, value) -> None:
    import torch

    parent_path, _, leaf = path.rpartition(".")
    parent = _ensure_parent(root, parent_path)
    if isinstance(value, torch.nn.Parameter):
        parent.register_parameter(leaf, value)
    elif isinstance(value, torch.Tensor):
        parent.register_buffer(leaf, value)
    else:
        setattr(parent, leaf, value)


def _set_submodule(root, path: str, module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    _ensure_parent(root, parent_path).add_module(leaf, module)


def _ensure_parent(root, path: str):
    import torch

    obj = root
    for part in filter(None, path.split(".")):
        if not hasattr(obj, part):
            obj.add_module(part, torch.nn.Module())
        obj = getattr(obj, part)
    return obj


def _unique_name(root, name: str) -> str:
    candidate, i = name, 1
    while _has_attr(root, candidate):
        candidate, i = f"{name}_{i}", i + 1
    return candidate
