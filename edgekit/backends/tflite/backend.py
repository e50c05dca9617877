"""TFLite / LiteRT target: .tflite from PyTorch (litert-torch) or ONNX (onnx2tf), int8/fp16, LiteRT runner.

- compile: `.pt2` -> litert-torch (no TensorFlow), ONNX -> onnx2tf (extra `tflite-onnx`);
  fp16 casts the weights. int8 needs calibration data, so it goes through `quantize`.
- quantize: the float .tflite, then ai-edge-quantizer static int8 with edgekit's calibration and
  bias correction (tflite/quant.py). Float I/O unless `int8_io` (profile option / --int8-io).
- runner: ai-edge-litert's Interpreter (XNNPACK), or tflite-runtime; NCHW in and out.
Every runtime library is imported inside functions, so `import edgekit` needs none of them.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from edgekit.backends.base import Backend, CompileOptions, LayerRanking, QuantOptions, Runner, SensitivityTask
from edgekit.backends.calibration import per_channel_variants
from edgekit.backends.tflite.runner import IoMap, TfliteRunner, interpreter_class, signature_inputs, to_model_layout
from edgekit.backends.tflite.sensitivity import tflite_layer_errors
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import InvalidInputError
from edgekit.core.hostinfo import package_version
from edgekit.core.tensors import TensorSpec
from edgekit.onnx.mixed_range import mixed_range_enabled
from edgekit.onnx.sensitivity import LayerError

PACKAGES = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer", "onnx2tf", "tensorflow", "tflite-runtime")
QUANTIZE_HINT = "edgekit quantize MODEL --target tflite --calib DATA -o DIR"
# QuantOptions.extra key: false keeps an int8 model whose output is one value for every sample (the
# accuracy search measures it and keeps layers in float, rather than stopping at the first int8)
REFUSE_CONSTANT_OUTPUT = "refuse_constant_output"
# QuantOptions.extra / [runtime.options] key: false quantizes ops that XNNPACK cannot run in int8 anyway
XNNPACK_FLOAT = "xnnpack_float"


class TfliteBackend(Backend):
    name = "tflite"
    deploy_format = "tflite"
    prefers_pytorch = True  # deploy hands over the torch.export .pt2 when the model came from PyTorch
    inspectable_formats = ("tflite",)

    def check_available(self) -> None:
        interpreter_class()

    def versions(self) -> dict[str, str]:
        found = {p: v for p in PACKAGES if (v := package_version(p))}
        if "ai-edge-litert" not in found and "tflite-runtime" not in found:
            found["ai-edge-litert"] = "missing"
        return found

    # ---- compile -----------------------------------------------------------------------------

    def compile(self, source: Artifact, profile, out_dir: Path, options: CompileOptions) -> Artifact:
        self.check_available()
        precision = options.precision
        if source.format == "tflite":
            return self._recast(source, precision, Path(out_dir))
        if precision == "int8":
            raise InvalidInputError("an int8 .tflite needs calibration data, which `compile` does not take",
                                    hint=QUANTIZE_HINT)
        if precision not in ("fp32", "fp16"):
            raise InvalidInputError(f"unknown precision '{precision}' for the tflite target", hint="fp32, fp16 or int8")
        from edgekit.backends.tflite.convert import convert

        conv = convert(source, tuple(options.inputs), consts=options.consts)
        model, extra = conv.model, {}
        if precision == "fp16":
            from edgekit.backends.tflite.quant import cast_fp16

            model, extra = cast_fp16(model)
        suffix = ".tflite" if precision == "fp32" else f".{precision}.tflite"
        return _save(model, Path(out_dir) / f"{source.path.stem}{suffix}", precision, conv.inputs, conv.outputs,
                     conv.io, {"from": source.path.name, **conv.provenance, **extra})

    def _recast(self, source: Artifact, precision: str, out_dir: Path) -> Artifact:
        """A .tflite is already deployable; fp32 -> fp16 is the one change compile can make to it."""
        if precision == source.precision:
            return source
        if precision == "fp16" and source.precision == "fp32":
            from edgekit.backends.tflite.quant import cast_fp16

            model, extra = cast_fp16(source.path.read_bytes())
            io = IoMap.from_dict(source.provenance.get("io"))
            return _save(model, out_dir / f"{source.path.stem}.fp16.tflite", "fp16", source.inputs, source.outputs,
                         io, {**source.provenance, "from": source.path.name, **extra})
        if precision == "int8":
            raise InvalidInputError(f"{source.path.name} is a {source.precision} .tflite; int8 needs calibration data",
                                    hint=QUANTIZE_HINT)
        raise InvalidInputError(f"cannot turn a {source.precision} .tflite into {precision}",
                                hint="compile the .pt2 or ONNX model again")

    # ---- quantize ----------------------------------------------------------------------------

    def quantize(self, source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
        self.check_available()
        from edgekit.backends.tflite.quant import Int8Settings, quantize_int8

        if options.method not in ("auto", "minmax"):
            raise InvalidInputError(f"the tflite target takes --method auto or minmax, not {options.method}",
                                    hint="drop --method (auto) or use --method minmax")
        mixed_range = mixed_range_enabled(options.extra)  # a bad value fails before the conversion
        float_model, inputs, outputs, io, provenance = self._float_source(source, calib)
        settings = Int8Settings(
            per_channel=options.per_channel, int8_io=bool(options.extra.get("int8_io", False)),
            exclude=tuple(options.exclude), bias_correction=bool(options.extra.get("bias_correction", True)),
            max_samples=options.max_samples,
            refuse_constant_output=bool(options.extra.get(REFUSE_CONSTANT_OUTPUT, True)),
            mixed_range_float=mixed_range,
            float_where_xnnpack_needs=bool(options.extra.get(XNNPACK_FLOAT, True)),
        )
        choice = {}
        if options.method == "auto":
            ranges, reason = auto_ranges(float_model, settings.int8_io)
            settings, choice = replace(settings, ranges=ranges), {"calibration_choice": f"auto: {ranges}, {reason}"}

        dtypes = {name: d["dtype"] for name, d in signature_inputs(float_model).items()}

        def samples():  # calibration feeds in the .tflite's own layout and dtypes, keyed by signature name
            for sample in calib:
                yield {b.name: to_model_layout(sample.feed[b.name], b.perm).astype(dtypes[b.name], copy=False)
                       for b in io.inputs}

        model, info = quantize_int8(float_model, samples, len(calib), settings)
        return _save(model, Path(out_dir) / f"{source.path.stem}.int8.tflite", "int8", inputs, outputs, io,
                     {"from": source.path.name, **provenance, **info, **choice})

    def _float_source(self, source: Artifact, calib):
        """(float .tflite bytes, ONNX-layout inputs, outputs, IoMap, provenance) for any accepted source."""
        if source.format == "tflite":
            if source.precision != "fp32":
                raise InvalidInputError(f"{source.path.name} is already {source.precision}; quantize the fp32 model")
            io = IoMap.from_dict(source.provenance.get("io"))
            if io is None:
                raise InvalidInputError(f"{source.path.name} has no edgekit sidecar saying its inputs and layout",
                                        hint="quantize the .pt2 or ONNX model instead")
            return source.path.read_bytes(), source.inputs, source.outputs, io, dict(source.provenance)
        from edgekit.backends.tflite.convert import convert

        first = [s.feed for _, s in zip(range(20), calib)]  # onnx2tf's sample images, from the user's data
        conv = convert(source, tuple(getattr(calib, "inputs", ()) or ()), first)
        return conv.model, conv.inputs, conv.outputs, conv.io, dict(conv.provenance)

    # ---- run ---------------------------------------------------------------------------------

    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        self.check_available()
        if artifact.format != "tflite":
            raise InvalidInputError(f"the tflite target runs .tflite files, got {artifact.format}: {artifact.path}",
                                    hint="compile it first: edgekit compile MODEL --target tflite -o DIR")
        # LiteRT's own default is one thread; like the other targets, use the cores unless told otherwise
        threads = threads or (profile.threads() if profile else None) or os.cpu_count()
        io = IoMap.from_dict(artifact.provenance.get("io"))
        return TfliteRunner(artifact.path, list(artifact.inputs), io, threads)

    # ---- accuracy search and inspect-quant -------------------------------------------------------

    def calibration_variants(self, quant: QuantOptions, reference: Path) -> list[dict]:
        variants = per_channel_variants(quant)
        if quant.method == "auto":  # min/max over all samples, static: what auto does not do for any model
            variants.append({"method": "minmax"})
        if quant.extra.get("bias_correction") is False:
            variants.append({"extra": {"bias_correction": True}})
        return variants

    def measurable_quant_options(self, quant: QuantOptions) -> QuantOptions:
        """An int8 with one output for every sample is kept, so the search can measure it and keep layers in float."""
        return replace(quant, extra={**quant.extra, REFUSE_CONSTANT_OUTPUT: False})

    def layer_sensitivity(self, task: SensitivityTask) -> LayerRanking:
        """Ranked on the .tflite itself against the float .tflite of the same converter, named by TFLite op outputs."""
        options = CompileOptions("fp32", tuple(task.reference.inputs))
        float_art = self.compile(task.source, None, task.work / "float", options)
        return LayerRanking.named_by_rows(tflite_layer_errors(float_art, task.int8, task.sample, task.max_samples))

    def inspect_layers(self, artifact: Artifact, reference: Path, data, max_samples: int) -> list[LayerError]:
        """Against its float .tflite: op names of a .tflite match its float .tflite, not the ONNX."""
        float_art = Artifact.load(reference)
        if float_art.format != "tflite" or float_art.precision != "fp32":
            raise InvalidInputError(f"an int8 .tflite is compared with its float .tflite, not {Path(reference).name}",
                                    hint="--reference MODEL.tflite from `edgekit compile MODEL.pt2 --target tflite`")
        return tflite_layer_errors(float_art, artifact, data, max_samples)


def auto_ranges(float_model: bytes, int8_io: bool = False) -> tuple[str, str]:
    """`--method auto` on TFLite, and why: an encoder (fully-connected layers hold most multiply-adds) quantizes
    its activations at run time (tflite/compute_share.py); anything else takes NNCF's mean of per-sample min/max."""
    from edgekit.backends.tflite.compute_share import ENCODER_SHARE, matmul_share

    share = matmul_share(float_model)
    why = f"{share:.0%} of multiply-adds fully connected"
    if share > ENCODER_SHARE and not int8_io:  # int8 inputs and outputs need static ranges
        return "dynamic", f"an encoder ({why})"
    return "mean_minmax", why


def _save(model: bytes, out: Path, precision: str, inputs: list[TensorSpec], outputs: list[str], io: IoMap | None,
          provenance: dict) -> Artifact:
    from edgekit.backends.tflite.flatbuffer import summarize

    with atomic_path(out) as tmp:
        tmp.write_bytes(model)
    provenance = {**provenance, **summarize(model), "io": io.to_dict() if io else None}
    art = Artifact(path=out, format="tflite", precision=precision, target="tflite", inputs=list(inputs),
                   outputs=list(outputs), provenance=provenance)
    return art.save_sidecar()
