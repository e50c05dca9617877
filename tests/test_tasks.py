"""Task metrics (edgekit/tasks): each metric on synthetic outputs whose answer is known, every detection
layout, ground-truth readers and the letterbox, bad inputs, and a real trained detector."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.core.data import open_data, parse_preprocess
from edgekit.core.errors import InvalidInputError
from edgekit.core.geometry import image_geometry
from edgekit.core.tensors import TensorSpec
from edgekit.tasks import (
    ClassifyTask,
    DetectOptions,
    DetectTask,
    EmbedTask,
    GenericTask,
    SegmentTask,
    UserTask,
    detection_truth,
    get_task,
    guess_task,
    read_coco_labels,
    read_masks,
    read_yolo_labels,
)
from edgekit.tasks.heads import box_iou, detections, find_head, fit_head, nms

sys.path.insert(0, str(Path(__file__).parent))

C = 3  # classes of the synthetic detections


# ---- synthetic detector outputs ----------------------------------------------------------------

def scene(rng: np.random.Generator, objects: int = 4) -> np.ndarray:
    """(K, 6) x1, y1, x2, y2, score, class of well-separated objects in a 160x160 input."""
    rows = []
    for k in range(objects):
        x1, y1 = 10 + 36 * k + rng.uniform(0, 4), rng.uniform(10, 100)
        w, h = rng.uniform(16, 30), rng.uniform(16, 40)
        rows.append([x1, y1, x1 + w, y1 + h, rng.uniform(0.6, 0.95), k % C])
    return np.array(rows)


def yolov8(objects: np.ndarray, rng: np.random.Generator, anchors: int = 200) -> np.ndarray:
    """1 x (4+C) x N: each object at one anchor (plus a weaker duplicate NMS must remove), background
    anchors with random boxes and scores < 0.05."""
    pred = np.zeros((4 + C, anchors), np.float32)
    xy = rng.uniform(0, 140, (anchors, 2))
    wh = rng.uniform(5, 40, (anchors, 2))
    pred[:4] = np.concatenate([xy + wh / 2, wh], 1).T
    pred[4:] = rng.uniform(0, 0.05, (C, anchors))
    for k, (x1, y1, x2, y2, score, cls) in enumerate(objects):
        for slot, s, shift in ((2 * k, score, 0.0), (2 * k + 1, score * 0.7, 1.0)):
            pred[:4, slot] = [(x1 + x2) / 2 + shift, (y1 + y2) / 2, x2 - x1, y2 - y1]
            pred[4:, slot] = 0.01
            pred[4 + int(cls), slot] = s
    return pred[None]


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    objects = [scene(rng) for _ in range(12)]
    return objects, [[yolov8(o, rng)] for o in objects]


def whole_vector_cosine(ref, got) -> float:
    """What `validate` reported before tasks: all outputs joined, one cosine per sample."""
    cos = []
    for r, g in zip(ref, got):
        a, b = np.concatenate([o.ravel() for o in r]), np.concatenate([o.ravel() for o in g])
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return float(np.mean(cos))


# ---- detect ------------------------------------------------------------------------------------

def test_identical_detections_give_full_map_and_no_drop(scenes):
    _, outs = scenes
    res = DetectTask().evaluate(outs, outs, ["output0"])
    assert res["task"] == "detect"
    assert res["task_metric"] == {"name": "map50", "value": 1.0, "reference": 1.0, "drop": 0.0, "vs_fp32": 1.0}
    m = res["metrics"]
    assert m["map_vs_fp32"] == 1.0 and m["mean_iou_vs_fp32"] == 1.0 and m["recall_vs_fp32"] == 1.0
    assert m["fp32_boxes"] == 48  # 4 objects x 12 images: the duplicates went in NMS
    assert m["ground_truth"] is False and "YOLOv8" in m["head"]
    json.dumps(res, allow_nan=False)


def test_a_constant_scores_head_collapses_map_while_whole_vector_cosine_stays_high(scenes):
    _, outs = scenes
    broken = [[o[0].copy()] for o in outs]
    for o in broken:
        o[0][0, 4:] = 0.3
    assert whole_vector_cosine(outs, broken) > 0.99  # the old verdict: "pass"
    res = DetectTask().evaluate(outs, broken, ["output0"])
    assert res["task_metric"]["vs_fp32"] < 0.4
    assert res["task_metric"]["drop"] > 60


def test_a_shifted_box_scores_the_iou_computed_by_hand():
    ref = [[np.array([[[10, 10, 50, 50, 0.9, 0]]], np.float32)]]  # end-to-end 1xNx6
    got = [[np.array([[[18, 10, 58, 50, 0.9, 0]]], np.float32)]]  # 8 px right: IoU 32*40 / (2*1600 - 1280)
    res = DetectTask().evaluate(ref, got, ["dets"])
    m = res["metrics"]
    assert m["mean_iou_vs_fp32"] == pytest.approx(1280 / 1920, abs=1e-6)
    assert m["recall_vs_fp32"] == 1.0
    assert m["map50_vs_fp32"] == 1.0
    assert m["map_vs_fp32"] == pytest.approx(0.4)  # matched at IoU 0.50, 0.55, 0.60, 0.65 of ten thresholds
    far = [[np.array([[[30, 10, 70, 50, 0.9, 0]]], np.float32)]]  # IoU 1/3: not found
    m = DetectTask().evaluate(ref, far, ["dets"])["metrics"]
    assert m["recall_vs_fp32"] == 0.0 and m["map50_vs_fp32"] == 0.0 and m["mean_iou_vs_fp32"] is None


def test_ground_truth_scores_both_models_and_the_drop_is_in_points(scenes):
    objects, outs = scenes
    truth = [o[:, [0, 1, 2, 3, 5]] for o in objects]
    worse = [[o[0].copy()] for o in outs]
    for o in worse[:6]:  # half the images lose their objects' scores
        o[0][0, 4:, :8] = 0.0
    before = [t.copy() for t in truth]
    res = DetectTask().evaluate(outs, worse, ["output0"], truth)
    tm, m = res["task_metric"], res["metrics"]
    assert m["ground_truth"] is True and m["reference_map50"] == 1.0
    assert tm["reference"] == 1.0 and 0.45 < tm["value"] == m["map50"] < 0.55  # half the objects never found
    assert all((a == b).all() for a, b in zip(before, truth))  # the caller's arrays are left alone
    assert tm["drop"] == pytest.approx((1 - m["map50"]) * 100, abs=1e-3)
    assert tm["vs_fp32"] == m["map50_vs_fp32"] and m["recall_vs_fp32"] == 0.5


def test_faster_coco_eval_gives_pycocotools_numbers_on_noisy_detections():
    from edgekit.tasks.coco import coco_library, coco_map

    pytest.importorskip("pycocotools")
    assert coco_library()[1].__module__.startswith("faster_coco_eval")  # the dependency is what runs
    rng = np.random.default_rng(3)
    truth, dets = [], []
    for _ in range(20):  # jittered, misclassified and spurious boxes: every part of COCOeval is exercised
        objects = scene(rng, int(rng.integers(1, 5)))
        truth.append(objects[:, [0, 1, 2, 3, 5]])
        pick = objects[rng.integers(0, len(objects), 60)]
        noisy = np.column_stack([pick[:, :4] + rng.normal(0, 4, (60, 4)), rng.uniform(0, 1, 60),
                                 np.where(rng.random(60) < 0.2, rng.integers(0, C, 60), pick[:, 5])])
        dets.append(noisy)
    fast, reference = coco_map(truth, dets), coco_map(truth, dets, library="pycocotools")
    assert 0.1 < fast["map"] < fast["map50"] < 0.95  # a score with room to differ
    assert fast["map50"] == pytest.approx(reference["map50"], abs=1e-9)
    assert fast["map"] == pytest.approx(reference["map"], abs=1e-9)
    assert fast["per_class"] == pytest.approx(reference["per_class"], abs=1e-9)


def test_indexed_truth_and_detections_score_the_same_however_often_they_are_reused():
    from edgekit.tasks.coco import CocoDetections, CocoTruth, coco_map

    rng = np.random.default_rng(5)
    scenes_ = [scene(rng, int(rng.integers(1, 4))) for _ in range(12)]
    labels = [s[:, [0, 1, 2, 3, 5]] for s in scenes_]
    pseudo = [s[:-1, [0, 1, 2, 3, 5]] for s in scenes_]  # another truth: one object fewer per image
    dets = [np.column_stack([s[:, :4] + rng.normal(0, 3, (len(s), 4)), rng.uniform(0.3, 1, len(s)), s[:, 5]])
            for s in scenes_]
    fresh = [coco_map(labels, dets), coco_map(pseudo, dets)]
    truths, got = [CocoTruth(labels), CocoTruth(pseudo)], CocoDetections(dets)
    for _ in range(2):  # as the detect task scores one candidate against both, and a search many candidates
        assert [t.score(got) for t in truths] == fresh
    assert fresh[0] != fresh[1] and 0.2 < fresh[0]["map"] < 1.0, fresh


def expected_boxes(objects: np.ndarray) -> np.ndarray:
    return objects[np.argsort(-objects[:, 4], kind="stable")]


def layouts(objects: np.ndarray, rng: np.random.Generator) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """The same detections in every layout detect reads."""
    v8 = yolov8(objects, rng)
    rows = v8[0].T  # N x (4+C)
    obj = rows[:, 4:].max(1, keepdims=True)
    v5 = np.concatenate([rows[:, :4], obj, rows[:, 4:] / np.maximum(obj, 1e-9)], 1)[None]  # obj x cls = score
    e2e = np.zeros((300, 6), np.float32)
    e2e[: len(objects)] = objects
    xyxy = np.concatenate([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], 1)
    p = rows[:, 4:].clip(1e-6, 1 - 1e-6)
    logits = np.log(p / (1 - p))
    protos = np.zeros((1, 32, 40, 40), np.float32)
    with_masks = np.concatenate([v8, rng.standard_normal((1, 32, v8.shape[2])).astype(np.float32)], 1)
    return {
        "yolov8 1x(4+C)xN": ([v8], ["output0"]),
        "yolov5 1xNx(5+C)": ([v5.astype(np.float32)], ["output"]),
        "end-to-end 1xNx6": ([e2e[None]], ["output0"]),
        "end-to-end Nx6": ([e2e], ["dets"]),
        "boxes + scores": ([xyxy[None].astype(np.float32), rows[None, :, 4:]], ["boxes", "scores"]),
        "boxes (cxcywh) + score logits, channels first": (
            [rows[:, :4].T[None], logits.T[None].astype(np.float32)], ["bbox", "cls_logits"]),
        "boxes + scores + classes": ([e2e[None, :, :4], e2e[None, :, 4], e2e[None, :, 5]],
                                     ["det_boxes", "det_scores", "det_classes"]),
        "yolov8-seg with mask prototypes": ([with_masks, protos], ["output0", "output1"]),
    }


@pytest.mark.parametrize("layout", ["yolov8 1x(4+C)xN", "yolov5 1xNx(5+C)", "end-to-end 1xNx6", "end-to-end Nx6",
                                    "boxes + scores", "boxes (cxcywh) + score logits, channels first",
                                    "boxes + scores + classes", "yolov8-seg with mask prototypes"])
def test_every_layout_decodes_to_the_same_detections(layout):
    rng = np.random.default_rng(3)
    objects = scene(rng)
    outs, names = layouts(objects, rng)[layout]
    head = fit_head(find_head([o.shape for o in outs], names), [outs])
    found = detections(head, outs, conf=0.25, iou=0.7, max_det=300)
    np.testing.assert_allclose(found, expected_boxes(objects), rtol=1e-4, atol=1e-3)
    res = DetectTask().evaluate([outs], [outs], names)
    assert res["task_metric"]["vs_fp32"] == 1.0, res["metrics"]["head"]


def test_ambiguous_heads_are_settled_on_the_fp32_outputs():
    rng = np.random.default_rng(4)
    v5_one_class = np.concatenate([rng.uniform(20, 100, (1, 50, 4)), rng.uniform(0, 1, (1, 50, 2))], 2)
    head = fit_head(find_head([v5_one_class.shape], ["out"]), [[v5_one_class]])
    assert head.kind == "yolov5" and head.classes == 1  # 1xNx6, but column 5 is no class id
    v8 = yolov8(scene(rng), rng)
    assert find_head([v8.transpose(0, 2, 1).shape], ["o"], layout="yolov8").channels_first is False
    assert find_head([(1, 84, 8400)], ["output0"]).classes == 80
    assert find_head([(1, 116, 8400), (1, 32, 160, 160)], ["output0", "output1"]).classes == 80


def naive_nms(boxes, scores, classes, iou):
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if classes[j] != classes[i] or box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= iou]
    return np.array(keep)


@pytest.mark.parametrize("seed", range(4))
def test_block_nms_is_exactly_greedy_class_wise_nms(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], 1)
    scores, classes = rng.uniform(0, 1, 200), rng.integers(0, 3, 200).astype(float)
    np.testing.assert_array_equal(nms(boxes, scores, classes, 0.5, 1000, block=16),
                                  naive_nms(boxes, scores, classes, 0.5))


def test_detect_on_a_model_without_a_detection_head_names_the_output():
    with pytest.raises(InvalidInputError, match="'logits' \\(1x1000\\)") as e:
        DetectTask().check([(1, 1000)], ["logits"])
    assert e.value.exit_code == 2 and e.value.hint
    with pytest.raises(InvalidInputError, match="no detection head"):
        DetectTask().evaluate([[np.zeros((1, 10))]], [[np.zeros((1, 10))]], ["logits"])


def test_detect_rejects_ground_truth_that_does_not_fit(scenes):
    objects, outs = scenes
    with pytest.raises(InvalidInputError, match="ground truth for 1 images, but 12 samples"):
        DetectTask().evaluate(outs, outs, ["output0"], [objects[0][:, :5]])
    bad = [np.array([[0, 0, 10, 10, 7]])] * 12
    with pytest.raises(InvalidInputError, match="class 7.*3 classes"):
        DetectTask().evaluate(outs, outs, ["output0"], bad)


def test_a_task_reused_across_candidates_scores_each_like_a_fresh_one(scenes):
    objects, outs = scenes
    truth = [o[:, [0, 1, 2, 3, 5]] for o in objects]
    noisy = [[o[0] + np.float32(2.0) * (np.arange(o[0].shape[-1]) % 3 == 0)] for o in outs]
    task = DetectTask()
    first = task.evaluate(outs, outs, ["output0"], truth)
    assert task.evaluate(outs, noisy, ["output0"], truth) == DetectTask().evaluate(outs, noisy, ["output0"], truth)
    assert task.evaluate(outs, outs, ["output0"], truth) == first


def test_detection_options_change_the_thresholds(scenes):
    _, outs = scenes
    res = DetectTask(DetectOptions(conf_fp32=0.99)).evaluate(outs, outs, ["output0"])
    assert res["task_metric"]["value"] is None and "detects nothing" in res["metrics"]["note"]


# ---- ground truth and the letterbox ------------------------------------------------------------

def test_letterbox_preprocessing_is_parsed_like_the_other_keys():
    pre = parse_preprocess("raw,letterbox=640")
    assert pre.size == (640, 640) and pre.crop == "letterbox" and pre.mean == (0.0, 0.0, 0.0)
    assert parse_preprocess("letterbox=480x640").size == (480, 640)
    assert parse_preprocess("raw,crop=letterbox").crop == "letterbox"
    with pytest.raises(InvalidInputError, match="bad preprocessing value"):
        parse_preprocess("letterbox=big")


def write_image(path: Path, size: tuple[int, int], square: tuple[int, int, int, int] | None = None) -> None:
    """A grey-blue image with an optional red square x1, y1, x2, y2 (pixels, exclusive end)."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = (20, 40, 200)
    if square:
        x1, y1, x2, y2 = square
        arr[y1:y2, x1:x2] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.mark.parametrize("spec", ["raw,letterbox=100", "raw,size=100,crop=none", "raw,size=100"])
def test_each_sample_records_where_its_pixels_went(tmp_path, spec):
    write_image(tmp_path / "images" / "a.png", (200, 120), (100, 40, 140, 80))
    data = open_data(tmp_path / "images", [TensorSpec("x", (1, 3, 100, 100))], parse_preprocess(spec))
    sample = next(iter(data))
    x = sample.feed["x"][0]
    red = (x[0] > 0.8) & (x[2] < 0.2)
    ys, xs = np.nonzero(red)
    mapped = sample.geometry.to_input(np.array([100, 40, 140, 80]))
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], mapped, atol=1.5)
    if "letterbox" in spec:  # 200x120 -> 100x60, padded 20 rows of grey 114 above and below
        assert sample.geometry.scale == (0.5, 0.5) and sample.geometry.pad == (0, 20)
        np.testing.assert_allclose(x[:, :20], 114 / 255, atol=1e-6)
        np.testing.assert_allclose(x[:, 80:], 114 / 255, atol=1e-6)
    assert sample.geometry == image_geometry(200, 120, data.preprocess.size, data.preprocess.crop,
                                             data.preprocess.resize)


def test_yolo_labels_map_into_the_letterboxed_input(tmp_path):
    write_image(tmp_path / "images" / "a.png", (200, 100))
    write_image(tmp_path / "images" / "b.png", (100, 100))  # no label file: background
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n2 0.1 0.1 0.2 0.2\n\n")
    (tmp_path / "labels" / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    pre = parse_preprocess("raw,letterbox=100")
    boxes = read_yolo_labels(tmp_path / "images", pre)
    assert list(boxes) == ["a.png", "b.png"]
    # 200x100 -> scale 0.5, 100x50 centred: pad top 25. Box cx 100 cy 50 w 40 h 40 -> 80,30,120,70 -> 40,40,60,60
    np.testing.assert_allclose(boxes["a.png"], [[40, 40, 60, 60, 0], [0, 25, 20, 35, 2]], atol=1e-4)
    assert boxes["b.png"].shape == (0, 5)
    data = open_data(tmp_path / "images", [TensorSpec("x", (1, 3, 100, 100))], pre)
    assert [len(t) for t in detection_truth(data)] == [2, 0]


def test_yolo_labels_that_name_a_missing_image_or_leave_the_image_fail_naming_file_and_line(tmp_path):
    write_image(tmp_path / "images" / "a.png", (64, 64))
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    pre = parse_preprocess("raw,letterbox=64")
    with pytest.raises(InvalidInputError, match="ghost.txt: no image 'ghost") as e:
        read_yolo_labels(tmp_path / "images", pre)
    assert e.value.exit_code == 2
    (labels / "ghost.txt").unlink()
    (labels / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n1 0.95 0.5 0.3 0.1\n")
    with pytest.raises(InvalidInputError, match=r"a.txt:2: box .* lies outside the image"):
        read_yolo_labels(tmp_path / "images", pre)
    (labels / "a.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(InvalidInputError, match=r"a.txt:1: expected 'class cx cy w h'"):
        read_yolo_labels(tmp_path / "images", pre)
    with pytest.raises(InvalidInputError, match="no YOLO labels folder"):
        read_yolo_labels(tmp_path / "images", pre, tmp_path / "nowhere")


def test_coco_json_labels_map_categories_in_order_and_reject_bad_entries(tmp_path):
    write_image(tmp_path / "images" / "000.jpg", (200, 100))
    coco = {"images": [{"id": 7, "file_name": "000.jpg", "width": 200, "height": 100}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [80, 30, 40, 40], "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 200, 100], "iscrowd": 1}],
            "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    boxes = read_coco_labels(tmp_path / "images", parse_preprocess("raw,letterbox=100"), path)
    np.testing.assert_allclose(boxes["000.jpg"], [[40, 40, 60, 60, 1]])  # category 90 is class 1; crowd skipped
    coco["annotations"][0]["bbox"] = [180, 30, 40, 40]
    path.write_text(json.dumps(coco))
    with pytest.raises(InvalidInputError, match=r"annotations\[0\] \(id 1\): bbox .* outside its 200x100 image"):
        read_coco_labels(tmp_path / "images", parse_preprocess("raw,letterbox=100"), path)
    coco["images"][0]["file_name"] = "missing.jpg"
    path.write_text(json.dumps(coco))
    with pytest.raises(InvalidInputError, match=r"images\[0\] 'missing.jpg' is not in"):
        read_coco_labels(tmp_path / "images", parse_preprocess("raw,letterbox=100"), path)
    path.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a readable JSON"):
        read_coco_labels(tmp_path / "images", parse_preprocess("raw,letterbox=100"), path)


def test_masks_are_letterboxed_like_their_images_with_ignore_padding(tmp_path):
    write_image(tmp_path / "images" / "a.png", (200, 100))
    mask = np.zeros((100, 200), np.uint8)
    mask[:, 100:] = 1
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    got = read_masks(tmp_path / "images", parse_preprocess("raw,letterbox=100"), tmp_path / "masks")["a.png"]
    assert got.shape == (100, 100)
    assert (got[:25] == 255).all() and (got[75:] == 255).all()
    assert (got[25:75, :50] == 0).all() and (got[25:75, 50:] == 1).all()
    (tmp_path / "masks" / "b.png").write_bytes((tmp_path / "masks" / "a.png").read_bytes())
    with pytest.raises(InvalidInputError, match="b.png: no image 'b"):
        read_masks(tmp_path / "images", parse_preprocess("raw,letterbox=100"), tmp_path / "masks")


# ---- segment -----------------------------------------------------------------------------------

def two_halves() -> np.ndarray:
    m = np.zeros((4, 4), np.int64)
    m[:, 2:] = 1
    return m


def logits_of(class_map: np.ndarray, classes: int = 2) -> np.ndarray:
    return (np.eye(classes)[class_map].transpose(2, 0, 1)[None] * 4 - 2).astype(np.float32)


def test_segment_miou_and_pixel_agreement_as_computed_by_hand():
    ref = two_halves()
    got = ref.copy()
    got[:, 2] = 0  # one column of class 1 predicted as 0
    # class 0: 8 right, 4 extra -> IoU 8/12; class 1: 4 of 8 -> IoU 4/8; mIoU 7/12; pixels 12/16
    for make in (logits_of, lambda m: m[None].astype(np.float32)):  # 1xCxHxW scores, 1xHxW ids
        res = SegmentTask().evaluate([[make(ref)]], [[make(got)]], ["out"])
        assert res["task_metric"]["vs_fp32"] == pytest.approx(7 / 12, abs=1e-6)
        assert res["metrics"]["pixel_agreement"] == 0.75
        assert res["task_metric"]["drop"] == pytest.approx((1 - 7 / 12) * 100, abs=1e-3)
    same = SegmentTask().evaluate([[logits_of(ref)]], [[logits_of(ref)]], ["out"])
    assert same["task_metric"]["value"] == 1.0 and same["task_metric"]["drop"] == 0.0


def test_segment_against_masks_ignores_255_and_resizes_to_the_mask():
    ref = two_halves()
    mask = np.kron(ref, np.ones((2, 2), np.int64))  # 8x8 mask of the same halves
    mask[0] = 255
    res = SegmentTask().evaluate([[logits_of(ref)]], [[logits_of(np.zeros((4, 4), np.int64))]], ["out"], [mask])
    m = res["metrics"]
    assert m["reference_miou"] == 1.0 and m["miou"] == pytest.approx(0.25)  # class 0: 28/56, class 1: 0
    assert res["task_metric"]["value"] == m["miou"] and res["task_metric"]["reference"] == 1.0


def test_a_binary_mask_output_thresholds_probabilities_at_one_half():
    prob = np.full((1, 1, 4, 4), 0.2, np.float32)
    prob[..., 2:] = 0.8
    res = SegmentTask().evaluate([[prob]], [[prob * 0 + 0.6]], ["mask"])
    assert res["metrics"]["pixel_agreement"] == 0.5


def test_segment_on_a_classifier_names_the_output():
    with pytest.raises(InvalidInputError, match="segment: no per-pixel output among 'logits' \\(1x10\\)"):
        SegmentTask().check([(1, 10)], ["logits"])


# ---- embed -------------------------------------------------------------------------------------

def test_embed_identical_and_scaled_embeddings_agree_and_a_permuted_set_does_not():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 64)).astype(np.float32)
    ref = [[e[None]] for e in emb]
    res = EmbedTask().evaluate(ref, [[s[0] * 3] for s in ref], ["sentence_embedding"])
    assert res["task_metric"] == {"name": "nn_agreement", "value": 1.0, "reference": 1.0, "drop": 0.0, "vs_fp32": 1.0}
    assert res["metrics"]["cosine_min"] == pytest.approx(1.0) and res["metrics"]["recall_at_5"] == 1.0
    permuted = [[emb[j][None]] for j in rng.permutation(40)]
    res = EmbedTask().evaluate(ref, permuted, ["sentence_embedding"])
    assert res["metrics"]["nn_agreement"] < 0.2 and res["task_metric"]["drop"] > 80
    assert res["metrics"]["cosine_mean"] < 0.3


def test_embed_recall_at_k_counts_the_fp32_neighbour_among_the_candidates_k_nearest():
    ref = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0], [-0.9, -0.1], [0, -1]], np.float32)
    got = ref.copy()
    got[1] = [0.7, 0.7]  # sample 1 now sits between 0 and 3: its nearest is no longer 0
    res = EmbedTask().evaluate([[r[None]] for r in ref], [[g[None]] for g in got], ["embedding"])
    m = res["metrics"]
    assert m["nn_agreement"] < 1.0 and m["recall_at_5"] > m["recall_at_1"] == m["nn_agreement"]


def test_embed_mean_pools_token_states_when_there_is_no_vector_output():
    rng = np.random.default_rng(1)
    tokens = [[rng.standard_normal((1, 8, 16)).astype(np.float32)] for _ in range(6)]
    res = EmbedTask().evaluate(tokens, tokens, ["last_hidden_state"])
    assert res["metrics"]["output"] == "last_hidden_state (mean over tokens)"
    assert res["metrics"]["recall_at_5"] is None  # 6 samples: every other sample is within 5


def test_embed_pools_only_the_real_tokens_when_the_attention_mask_is_known():
    """Padding positions carry whatever the encoder writes there; sentence-transformers leaves them out."""
    from edgekit.core.arrays import Sample
    from edgekit.tasks.embed import token_masks

    rng = np.random.default_rng(4)
    lengths = rng.integers(3, 8, 12)
    masks = [np.r_[np.ones(n), np.zeros(12 - n)] for n in lengths]
    real = [rng.standard_normal((12, 16)) for _ in lengths]
    fp32 = [[(r * m[:, None] + (1 - m[:, None]) * rng.standard_normal((12, 16)) * 5)[None]] for r, m in zip(real, masks)]
    noisy_padding = [[np.where(m[:, None] > 0, f[0][0], rng.standard_normal((12, 16)) * 5)[None]] for f, m in zip(fp32, masks)]
    data = [Sample({"input_ids": np.zeros((1, 12), np.int64), "attention_mask": m[None].astype(np.int64)}) for m in masks]
    found = token_masks(data)
    masked = EmbedTask().evaluate(fp32, noisy_padding, ["last_hidden_state"], found)
    assert masked["metrics"]["output"] == "last_hidden_state (mean over real tokens)"
    assert masked["metrics"]["cosine_min"] == 1.0 and masked["task_metric"]["value"] == 1.0
    unmasked = EmbedTask().evaluate(fp32, noisy_padding, ["last_hidden_state"])
    assert unmasked["metrics"]["cosine_mean"] < 0.95  # the padding noise counted as if it were the sentence
    assert token_masks([Sample({"x": np.zeros((1, 4))})]) is None
    with pytest.raises(InvalidInputError, match="token masks do not fit"):
        EmbedTask().evaluate(fp32, fp32, ["last_hidden_state"], found[:5])


# ---- generic -----------------------------------------------------------------------------------

def test_generic_reports_each_output_and_a_broken_second_output_shows():
    ref = [[np.ones((1, 4), np.float32) * 10, np.array([[1, 1, 1, 1]], np.float32)]]
    got = [[np.ones((1, 4), np.float32) * 10, np.array([[1, 1, 1, 0]], np.float32)]]
    res = GenericTask().evaluate(ref, got, ["features", "aux"])
    first, second = res["metrics"]["outputs"]["features"], res["metrics"]["outputs"]["aux"]
    assert first["cosine_mean"] == 1.0 and first["sqnr_db"] is None and first["rel_err"] == 0.0
    assert second["sqnr_db"] == pytest.approx(10 * np.log10(4), abs=0.01)  # signal 4, noise 1
    assert second["max_abs_err"] == 1.0 and second["rel_err"] == 0.5
    assert second["cosine_mean"] == pytest.approx(3 / np.sqrt(12), abs=1e-6)
    assert res["task_metric"]["name"] == "min_output_cosine" and res["metrics"]["worst_output"] == "aux"
    assert res["task_metric"]["value"] == second["cosine_mean"]
    assert "top1_agreement" not in json.dumps(res)
    assert whole_vector_cosine(ref, got) > 0.99  # what hid the broken output before


def test_generic_names_an_output_whose_shape_changed():
    res = GenericTask().evaluate([[np.zeros((1, 4))]], [[np.zeros((1, 5))]], ["y"])
    assert "1x5" in res["metrics"]["outputs"]["y"]["error"] and res["task_metric"]["value"] == 0.0


# ---- classify ----------------------------------------------------------------------------------

def test_classify_gives_the_numbers_of_validate_compare():
    from edgekit.stages.validate import ReferenceOutputs, compare

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((60, 10)).astype(np.float32) * rng.uniform(0.5, 4, (60, 1)).astype(np.float32)
    noisy = logits + rng.standard_normal(logits.shape).astype(np.float32) * 0.7
    labels = list(rng.integers(0, 10, 60))
    ref = ReferenceOutputs(["logits"], [[r[None]] for r in logits], labels)
    outs = [[n[None]] for n in noisy]
    acc = compare(ref, outs)
    res = ClassifyTask().evaluate(ref.outputs, outs, ref.output_names, ref.labels)
    for key in ("top1_agreement", "top5_agreement", "confident_samples", "top1_agreement_confident"):
        assert res["metrics"][key] == acc[key], key
    assert res["metrics"]["top1_accuracy"] == acc["task_metric"]["value"]
    assert res["task_metric"]["reference"] == acc["task_metric"]["reference"]
    assert res["task_metric"]["drop"] == acc["task_metric"]["drop"]
    unlabelled = ClassifyTask().evaluate(ref.outputs, outs, ref.output_names)["task_metric"]
    assert unlabelled["value"] == acc["top1_agreement_confident"] and unlabelled["reference"] == 1.0


def test_classify_refuses_a_single_value_output():
    with pytest.raises(InvalidInputError, match="output 'score' \\(1x1\\) holds one value"):
        ClassifyTask().check([(1, 1)], ["score"])


def test_every_task_result_is_strict_json():
    rng = np.random.default_rng(2)
    samples = [[rng.standard_normal((1, 5, 8, 8)).astype(np.float32), rng.standard_normal((1, 5)).astype(np.float32)]
               for _ in range(8)]
    for task in (ClassifyTask(), SegmentTask(), EmbedTask(), GenericTask()):
        names = ["maps", "vector"]
        if isinstance(task, (ClassifyTask, EmbedTask)):
            names, outs = ["vector", "maps"], [s[::-1] for s in samples]
        else:
            outs = samples
        res = task.evaluate(outs, outs, names)
        text = json.dumps(res, allow_nan=False)
        assert set(res) == {"task", "task_metric", "metrics"} and res["task"] == task.name, text
        assert set(res["task_metric"]) == {"name", "value", "reference", "drop", "vs_fp32"}
        assert res["task_metric"]["drop"] == 0.0 and res["task_metric"]["name"] == task.metric_name
        assert set(res["metrics"]["outputs"]) == set(names)


# ---- user tasks and task lookup ----------------------------------------------------------------

METRICS_PY = '''
import numpy as np

def score(fp32, candidate):
    same = [float(np.argmax(a[0]) == np.argmax(b[0])) for a, b in zip(fp32, candidate)]
    return {"agreement": float(np.mean(same)), "samples": len(same)}

def with_truth(fp32, candidate, truth):
    return {"hits": float(np.mean([np.argmax(b[0]) == t for b, t in zip(candidate, truth)]))}

def fails(fp32, candidate):
    raise ValueError("no labels here\\nsecond line")

def words(fp32, candidate):
    return {"agreement": "high"}

def nothing(fp32, candidate):
    return None

def bare(fp32, candidate):
    return 0.5
'''


@pytest.fixture
def metrics_py(tmp_path):
    path = tmp_path / "my_metrics.py"
    path.write_text(METRICS_PY)
    return path


def test_a_user_callable_is_the_task_metric(metrics_py):
    ref = [[np.array([[0.0, 1.0]])], [[np.array([[1.0, 0.0]])]]]
    got = [[np.array([[0.0, 1.0]])], [[np.array([[0.0, 1.0]])]]]
    res = get_task(f"{metrics_py}:score").evaluate(ref, got, ["y"])
    assert res["task"] == f"{metrics_py}:score"
    assert res["task_metric"] == {"name": "agreement", "value": 0.5, "reference": 1.0, "drop": 50.0, "vs_fp32": 0.5}
    assert res["metrics"]["samples"] == 2.0
    assert get_task(f"{metrics_py}:with_truth").evaluate(ref, got, ["y"], [1, 1])["task_metric"]["value"] == 1.0
    assert get_task(f"{metrics_py}:bare").evaluate(ref, got, ["y"])["task_metric"]["name"] == "bare"


def test_a_module_path_callable_loads(metrics_py, monkeypatch):
    monkeypatch.syspath_prepend(str(metrics_py.parent))
    assert isinstance(get_task("my_metrics:score"), UserTask)


@pytest.mark.parametrize("name, message", [
    ("fails", "task callable .*:fails raised ValueError: no labels here$"),
    ("words", "task callable .*:words returned 'agreement': 'high', expected a finite number"),
    ("nothing", "task callable .*:nothing returned NoneType, expected a dict of named numbers"),
    ("absent", "has no callable 'absent'"),
])
def test_a_broken_user_callable_is_one_line_naming_it(metrics_py, name, message):
    ref = [[np.zeros((1, 2))]]
    with pytest.raises(InvalidInputError, match=message) as e:
        get_task(f"{metrics_py}:{name}").evaluate(ref, ref, ["y"])
    assert e.value.exit_code == 2 and "\n" not in e.value.message


def test_unknown_tasks_and_modules_are_named():
    with pytest.raises(InvalidInputError, match="unknown task 'detection'") as e:
        get_task("detection")
    assert "classify, detect, segment, embed, generic" in e.value.hint
    with pytest.raises(InvalidInputError, match="cannot import task module 'no_such_pkg.metrics'"):
        get_task("no_such_pkg.metrics:score")
    assert isinstance(get_task("Detect"), DetectTask)


@pytest.mark.parametrize("shapes, names, task", [
    ([(1, 84, 8400)], ["output0"], "detect"),
    ([(1, 25200, 85)], ["output"], "detect"),
    ([(1, 300, 6)], ["output0"], "detect"),
    ([(1, 116, 8400), (1, 32, 160, 160)], ["output0", "output1"], "detect"),
    ([(1, 100, 4), (1, 100, 80)], ["boxes", "scores"], "detect"),
    ([(1, 21, 520, 520)], ["out"], "segment"),
    ([(1, 512, 512)], ["labels"], "segment"),
    ([(1, 512, 1024)], ["labels"], "segment"),
    ([(1, 1000)], ["logits"], "classify"),
    ([(None, 10)], ["output"], "classify"),
    ([(1, 384)], ["sentence_embedding"], "embed"),
    ([(1, 16, 384), (1, 384)], ["last_hidden_state", "pooler_output"], "embed"),
    ([(1, 16, 384)], ["output"], "generic"),
    ([(1, 7, 500)], ["output"], "detect"),
    ([(1, 1)], ["value"], "generic"),
    ([(1, 10), (1, 5)], ["a", "b"], "generic"),
    ([(1, 197, 768)], ["output"], "generic"),
])
def test_guess_task_from_the_outputs(shapes, names, task):
    guessed, reason = guess_task(shapes, names)
    assert guessed == task, reason
    assert reason and "\n" not in reason


# ---- a real detector ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from detector import build_detector

    return build_detector(tmp_path_factory.mktemp("detector"))


def run_onnx(path: Path, data) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [[o.astype(np.float32) for o in session.run(None, s.feed)] for s in data]


def test_the_trained_detector_finds_its_shapes(detector):
    from edgekit.core.artifact import Artifact

    art = Artifact.load(detector.onnx)
    data = open_data(detector.images, art.inputs, parse_preprocess(detector.preprocess))
    outs = run_onnx(detector.onnx, data)
    names = list(art.outputs)
    assert guess_task([o.shape for o in outs[0]], names)[0] == "detect"
    truth = detection_truth(data)
    res = DetectTask().evaluate(outs, outs, names, truth)
    m = res["metrics"]
    print(f"\ndetector: trained {detector.train_seconds:.0f} s, FP32 mAP@0.5 {m['reference_map50']:.3f}, "
          f"mAP@0.5:0.95 {m['reference_map']:.3f} on {len(outs)} images")
    assert m["reference_map50"] >= 0.5
    assert res["task_metric"]["drop"] == 0.0 and m["map50_vs_fp32"] == 1.0
    flat = [[o[0].copy()] for o in outs]
    for o in flat:
        o[0][0, 4:] = float(np.median(o[0][0, 4:]))
    broken = DetectTask().evaluate(outs, flat, names, truth)
    assert whole_vector_cosine(outs, flat) > 0.99
    assert broken["task_metric"]["value"] < 0.1 and broken["task_metric"]["vs_fp32"] < 0.1
