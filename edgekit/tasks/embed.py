"""Embeddings (sentence / image encoders): cosine per sample, nearest-neighbour agreement and recall@k.

Over the whole validation set: for each sample, its nearest neighbour among the other samples in FP32
space (cosine similarity) vs in candidate space. `nn_agreement` is the share of samples whose nearest
neighbour is the same; `recall_at_k` the share whose FP32 nearest neighbour is among the candidate's k
nearest. That is what a search index built on int8 embeddings returns, which a per-sample cosine of
0.99 does not tell (a uniform shift keeps cosine and scrambles neighbours).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import Outputs, Task, check_pairs, cosines, result, rounded, shape_text, squeezed, task_metric
from edgekit.tasks.generic import output_metrics

EMBEDDING_NAMES = ("sentence_embedding", "pooler_output", "text_embeds", "image_embeds", "embedding", "embeds",
                   "pooled", "feature")
RECALL_K = (1, 5)


def embedding_output(output_shapes, output_names) -> tuple[int, bool]:
    """Index of the embedding output, and whether it is per token (1xTxD, mean-pooled over T)."""
    shapes = [squeezed(s) for s in output_shapes]
    vectors = [i for i, s in enumerate(shapes) if len(s) == 1 and (s[0] is None or s[0] >= 2)]
    tokens = [i for i, s in enumerate(shapes) if len(s) == 2 and (s[1] is None or s[1] >= 2)]
    for word in EMBEDDING_NAMES:
        for i in vectors:
            if word in output_names[i].lower():
                return i, False
    if vectors:
        return vectors[0], False
    if tokens:
        return tokens[0], True
    listed = ", ".join(f"'{n}' ({shape_text(s)})" for n, s in zip(output_names, output_shapes))
    raise InvalidInputError(f"embed: no embedding output among {listed}",
                            hint="embed reads a 1xD vector (or 1xTxD token states, mean-pooled)")


MASK_INPUT = "attention_mask"  # the Hugging Face name of the token mask a sentence encoder pools with


def token_masks(data) -> list[np.ndarray] | None:
    """Per sample, the 0/1 token mask the model was fed (`attention_mask`), or None when it has none:
    sentence-transformers mean-pools over real tokens only, and so does the embed task then."""
    masks = []
    for sample in data:
        mask = sample.feed.get(MASK_INPUT)
        if mask is None:
            return None
        masks.append(np.asarray(mask, np.float64).reshape(-1))
    return masks


def embeddings(outs: Outputs, index: int, per_token: bool, masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
    rows = [np.asarray(s[index], np.float64) for s in outs]
    if not per_token:
        return np.stack([r.reshape(-1) for r in rows])
    tokens = [r.reshape(r.shape[-2:]) for r in rows]
    if masks is None:
        return np.stack([t.mean(0) for t in tokens])
    if len(masks) != len(tokens) or any(len(m) != len(t) for m, t in zip(masks, tokens)):
        raise InvalidInputError(f"embed: {len(masks)} token masks do not fit {len(tokens)} samples of "
                                f"{len(tokens[0])} tokens")
    return np.stack([(t * m[:, None]).sum(0) / max(m.sum(), 1.0) for t, m in zip(tokens, masks)])


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k most cosine-similar other rows, nearest first."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms == 0, 1.0, norms)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbour_metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    """nn_agreement and recall@k of candidate embeddings against FP32 ones; None where it says nothing
    (nn agreement below 2 samples, recall@k unless more than k + 1 samples)."""
    n = len(ref)
    if n < 2:
        return {"nn_agreement": None, **{f"recall_at_{k}": None for k in RECALL_K}}
    ref_nn = neighbours(ref, 1)[:, 0]
    got_nn = neighbours(got, min(max(RECALL_K), n - 1))
    out = {"nn_agreement": rounded(np.mean(got_nn[:, 0] == ref_nn))}
    for k in RECALL_K:
        out[f"recall_at_{k}"] = rounded(np.mean([r in row[:k] for r, row in zip(ref_nn, got_nn)])) if k < n - 1 else None
    return out


class EmbedTask(Task):
    name = "embed"
    metric_name = "nn_agreement"

    def check(self, output_shapes, output_names) -> None:
        embedding_output(output_shapes, output_names)

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        index, per_token = embedding_output([np.shape(o) for o in reference[0]], output_names)
        masks = truth if per_token else None  # token masks (token_masks): padding is left out of the mean
        ref, got = embeddings(reference, index, per_token, masks), embeddings(candidate, index, per_token, masks)
        if ref.shape != got.shape:
            raise InvalidInputError(f"embed: output '{output_names[index]}' has {got.shape[1]} values in the "
                                    f"candidate, {ref.shape[1]} in the FP32 reference")
        cos = cosines(ref, got)
        pooled = " (mean over real tokens)" if masks is not None else " (mean over tokens)"
        metrics = {"output": output_names[index] + (pooled if per_token else ""),
                   "dimensions": int(ref.shape[1]), "cosine_mean": rounded(cos.mean()),
                   "cosine_min": rounded(cos.min()), **neighbour_metrics(ref, got)}
        value = metrics["nn_agreement"]
        metrics["outputs"] = output_metrics(reference, candidate, output_names)
        return result(self.name, task_metric(self.metric_name, value, None if value is None else 1.0, value), metrics)
