"""A fixed reference workload timed between benchmark runs: how fast the machine was right then.

On a shared CI runner the same model's median can move by 30% or more between two runs because
the machine got busier (measured on the 2-core dev/CI VM). Timing a fixed, tiny ONNX Runtime
model right after every model run gives a paired sample of the machine's speed at that moment;
`check` divides the model's latency by it, so a busier machine cancels out and a slower model
does not (see gate.compare_latency).
"""

from __future__ import annotations

import time

import numpy as np

PROBE_SHAPE = (1, 32, 24, 24)
PROBE_LAYERS = 3


def _probe_model() -> bytes:
    """Three 3x3 convolutions + ReLU on 32x24x24, fixed weights, built in memory (~0.25 ms on one x86 core)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(PROBE_LAYERS):
        c = PROBE_SHAPE[1]
        w = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "edgekit_speed_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(PROBE_SHAPE))],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class SpeedProbe:
    """Call it to run and time the reference workload once; `samples` holds the times (ms)."""

    def __init__(self, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        # no spin-waiting after a probe run: spinning threads would steal the cores from the model's
        # next timed run (measured: EfficientNet-Lite0 on 2 cores went from 5.6 to 14.5 ms p50)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:  # the same thread count as the model, so both feel the same contention
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(_probe_model(), so, providers=["CPUExecutionProvider"])
        self._feed = {"x": np.random.default_rng(1).standard_normal(PROBE_SHAPE).astype(np.float32)}
        self.samples: list[float] = []
        for _ in range(5):  # warm-up: first runs allocate
            self._session.run(None, self._feed)

    def __call__(self) -> None:
        t0 = time.perf_counter()
        self._session.run(None, self._feed)
        self.samples.append((time.perf_counter() - t0) * 1e3)
