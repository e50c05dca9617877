#!/usr/bin/env bash
# An ONNX model you already have, deployed to this host and a Raspberry Pi 5 profile.
# Data: a folder of images (preprocessed as in training) or an .npz keyed by input name.
set -euo pipefail
MODEL=${1:?usage: run.sh model.onnx data_dir}
DATA=${2:?usage: run.sh model.onnx data_dir}

edgekit quantize "$MODEL" --target onnxruntime --calib "$DATA" --val "$DATA" --method entropy -o out/quantized
edgekit deploy "$MODEL" --profile local --profile raspberry-pi-5 --calib "$DATA" --preprocess imagenet -o out/deploy
