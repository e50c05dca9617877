"""Recovering a pruned model without labels: BatchNorm re-estimation and knowledge distillation.

Pruning removes channels, so the activations every BatchNorm normalises change; its running
statistics are re-measured on calibration data. Distillation then trains the pruned model to
reproduce the unpruned one's outputs (KL on logits, MSE elsewhere) on unlabelled data, on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.core.progress import progress_iter


@dataclass(frozen=True)
class RecoveryOptions:
    epochs: int = 0  # distillation epochs (0 = BN re-estimation only)
    lr: float = 5e-4
    batch_size: int = 16
    temperature: float = 1.0
    ce_weight: float = 0.0  # cross-entropy on labels added to the distillation loss
    max_samples: int = 1024  # samples held in memory for calibration / distillation


class Batches:
    """Samples of a DataSource stacked into tensors (at most max_samples, so memory stays bounded)."""

    def __init__(self, data, specs, max_samples: int, description: str = "loading data"):
        import torch

        names = [s.name for s in specs]
        arrays: dict[str, list] = {n: [] for n in names}
        labels = []
        total = min(len(data), max_samples)
        for i, sample in enumerate(progress_iter(data, total=total, description=description)):
            if i >= max_samples:
                break
            for n in names:
                arrays[n].append(sample.feed[n])
            labels.append(sample.label)
        self.inputs = [torch.from_numpy(np.concatenate(arrays[n])) for n in names]
        self.labels = torch.tensor(labels) if labels and all(x is not None for x in labels) else None
        self.count = len(labels)

    def __len__(self) -> int:
        return self.count

    def iterate(self, batch_size: int, shuffle: bool = False, seed: int = 0, min_size: int = 1,
                with_index: bool = False):
        """(inputs tuple, labels or None[, sample indices]) per batch; a last batch smaller than
        min_size is dropped."""
        import torch

        order = torch.randperm(self.count, generator=torch.Generator().manual_seed(seed)) if shuffle else None
        for start in range(0, self.count, batch_size):
            idx = torch.arange(start, min(start + batch_size, self.count)) if order is None \
                else order[start:start + batch_size]
            if len(idx) < min_size:
                return
            inputs = tuple(t[idx] for t in self.inputs)
            labels = self.labels[idx] if self.labels is not None else None
            yield (inputs, labels, idx) if with_index else (inputs, labels)

    def steps(self, batch_size: int) -> int:
        return -(-self.count // batch_size)


def reestimate_batchnorm(model, batches: Batches, batch_size: int = 16) -> int:
    """Reset every BatchNorm's running statistics and re-measure them; returns the layer count."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an EMA dominated by the last
        m.train()
    try:
        with torch.no_grad():
            # a batch of one has no variance to measure
            for inputs, _ in progress_iter(batches.iterate(batch_size, min_size=2), total=batches.steps(batch_size),
                                           description="re-estimating BatchNorm"):
                model(*inputs)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.eval()
    return len(bns)


def reestimate_batchnorm_checked(student, teacher, batches: Batches, options: RecoveryOptions,
                                 outputs: "ModelOutputs | None" = None) -> dict:
    """Re-estimate BatchNorm, keeping the new statistics only if the pruned model then matches the
    unpruned one better on that same data (label-free). A few hundred crops of a few photos can be
    less representative than the statistics a model learnt on millions of images."""
    bns = [m for m in student.modules() if isinstance(m, _batchnorm_class())]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns if m.running_mean is not None]
    outputs = outputs or ModelOutputs()
    before = mean_distillation_loss(student, teacher, batches, options, outputs)
    layers = reestimate_batchnorm(student, batches, options.batch_size)
    after = mean_distillation_loss(student, teacher, batches, options, outputs)
    kept = after <= before
    if not kept:
        for m, (mean, var) in zip((m for m in bns if m.running_mean is not None), saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    return {"layers": layers, "samples": len(batches), "loss_before": round(before, 6), "loss_after": round(after, 6),
            "kept": kept}


def _batchnorm_class():
    import torch

    return torch.nn.modules.batchnorm._BatchNorm


def outputs_of(result) -> list:
    """A model's result as a flat list of tensors (tuple, list, dict or one tensor)."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        result = list(result.values())
    flat = []
    for r in result:
        flat += outputs_of(r)
    return flat


def is_logits(t) -> bool:
    return t.dim() == 2 and t.shape[1] > 1


def distillation_loss(student_out: list, teacher_out: list, temperature: float = 1.0):
    """KL(teacher || student) on classifier logits (scaled by T^2), MSE on any other output."""
    import torch.nn.functional as F

    total = 0.0
    for s, t in zip(student_out, teacher_out):
        if is_logits(t):
            T = temperature
            total = total + F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean",
                                     log_target=True) * T * T
        else:
            total = total + F.mse_loss(s, t)
    return total


def mean_distillation_loss(student, teacher, batches: Batches, options: RecoveryOptions,
                           outputs: "ModelOutputs | None" = None) -> float:
    """The distillation loss over every sample, batch by batch as training sees it."""
    import torch

    outputs = outputs or ModelOutputs()
    student_out, teacher_out = outputs.of(student, batches), outputs.of(teacher, batches)
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(batches), options.batch_size):
            part = slice(start, start + options.batch_size)
            loss = distillation_loss([s[part] for s in student_out], [t[part] for t in teacher_out],
                                     options.temperature)
            size = student_out[0][part].shape[0]
            total += float(loss) * size
            n += size
    return total / max(n, 1)


class ModelOutputs:
    """Each model's outputs on each set of samples, computed once per state of its weights and statistics.

    Recovery compares the same two models on the same samples several times: the unpruned model never
    changes, the pruned one only when BatchNorm re-estimation or training writes to it. Measured on a sweep's
    pruned sources, those repeated forward passes were most of the job. A state is the identity and version
    counter of every parameter and buffer (each in-place write bumps a tensor's version); only the newest
    state of each model is kept.
    """

    def __init__(self, batch_size: int = 32):
        self.batch_size = batch_size
        self._memo: dict = {}  # (model id, batches id) -> (state, outputs)

    def of(self, model, batches: Batches) -> list:
        """One tensor per output, every sample in order (the model in eval mode)."""
        import itertools

        import torch

        state = tuple((id(t), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
        key = (id(model), id(batches))
        found = self._memo.get(key)
        if found is not None and found[0] == state:
            return found[1]
        model.eval()
        parts: list[list] = []
        with torch.no_grad():
            for inputs, _ in batches.iterate(self.batch_size):
                parts.append([o.detach().float() for o in outputs_of(model(*inputs))])
        result = [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
        self._memo[key] = (state, result)
        return result


def distill(student, teacher, batches: Batches, options: RecoveryOptions, masks: dict | None = None,
            outputs: "ModelOutputs | None" = None) -> dict:
    """Train the pruned model to match the unpruned one; returns the loss before and after.

    BatchNorm trains on batch statistics (with frozen statistics the un-normalised layers drift
    and the loss climbs), dropout stays off (the teacher's targets are exact), and the running
    statistics are re-estimated at the end for the weights as they finally are.
    """
    import torch
    import torch.nn.functional as F

    from edgekit.stages.prune.structure import apply_masks

    if options.ce_weight > 0 and batches.labels is None:
        raise InvalidInputError("--ce-weight needs labelled distillation data",
                                hint="use an image folder with class sub-folders, --labels, or an .npz with 'labels'")
    outputs = outputs or ModelOutputs()
    before = mean_distillation_loss(student, teacher, batches, options, outputs)
    start_state = {k: v.clone() for k, v in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=options.lr)
    steps = options.epochs * batches.steps(options.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    work = ((epoch, batch) for epoch in range(options.epochs)
            for batch in batches.iterate(options.batch_size, shuffle=True, seed=epoch, with_index=True))
    targets = outputs.of(teacher, batches)  # once: the teacher does not change
    _batchnorm_train(student)
    for _, (inputs, labels, idx) in progress_iter(work, total=steps, description="distilling"):
        target = [t[idx] for t in targets]
        out = outputs_of(student(*inputs))
        loss = distillation_loss(out, target, options.temperature)
        if options.ce_weight > 0:
            loss = loss + options.ce_weight * F.cross_entropy(out[0], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if masks:
            apply_masks(student, masks)  # keep the 2:4 pattern through fine-tuning
    student.zero_grad(set_to_none=True)
    reestimate_batchnorm(student, batches, options.batch_size)
    trained = mean_distillation_loss(student, teacher, batches, options, outputs)
    kept = trained < before
    if not kept:  # never hand back a model that matches the unpruned one worse than before
        student.load_state_dict(start_state)
        if masks:
            apply_masks(student, masks)
    with torch.no_grad():
        first, _ = next(batches.iterate(2))
        kinds = sorted({"kl" if is_logits(t) else "mse" for t in outputs_of(teacher(*first))})
    return {"epochs": options.epochs, "steps": steps, "samples": len(batches), "lr": options.lr,
            "loss": "+".join(kinds) + ("+ce" if options.ce_weight > 0 else ""),
            "loss_before": round(before, 6), "loss_after": round(trained if kept else before, 6),
            "loss_trained": round(trained, 6), "kept": kept}


def _batchnorm_train(model) -> None:
    import torch

    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()


def taylor_gradients(batches: Batches, batch_size: int = 16):
    """A function accumulating weight gradients of a label-free loss, for Taylor importance.

    The loss is cross-entropy against the labels when there are some, else against the model's
    own top-1 (a first-order estimate of how much removing a channel changes its decisions).
    """
    import torch.nn.functional as F

    def accumulate(model):
        model.eval()
        for inputs, labels in batches.iterate(batch_size):
            out = outputs_of(model(*inputs))[0]
            if not is_logits(out):
                raise InvalidInputError("the taylor criterion needs a classifier output (batch x classes)",
                                        hint="use --criterion l2 for this model")
            target = labels if labels is not None else out.detach().argmax(1)
            F.cross_entropy(out, target).backward()

    return accumulate


def predictions(model, batches: Batches, outputs: ModelOutputs | None = None) -> list[list[np.ndarray]]:
    """Per sample, per output: arrays with batch axis 1, as edgekit.stages.validate compares them."""
    outs = [o.numpy() for o in (outputs or ModelOutputs()).of(model, batches)]
    return [[o[i:i + 1] for o in outs] for i in range(len(batches))]


def reference_outputs(model, batches: Batches, outputs: ModelOutputs | None = None):
    from edgekit.stages.validate import ReferenceOutputs

    outs = predictions(model, batches, outputs)
    labels = batches.labels.tolist() if batches.labels is not None else [None] * len(batches)
    return ReferenceOutputs([f"output_{i}" for i in range(len(outs[0]))], outs, labels)
