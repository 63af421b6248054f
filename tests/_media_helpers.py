"""Real test images, synthetic motion and tiny ONNX models for the face / lip-mask / motion tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from training.synthetic import open_mouth  # noqa: F401  (re-exported: the face/motion/eval tests use it)


def portrait(size: int = 256) -> np.ndarray:
    """skimage's astronaut, cropped to head and shoulders: RGB uint8 [size,size,3], face ~75 px at 256."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut()[0:320, 60:380], (size, size), interpolation=cv2.INTER_AREA)


def cat() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def insightface_image(name: str) -> np.ndarray:
    """An image shipped in the insightface package (RGB uint8); skips the test without it."""
    import cv2

    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.skip("insightface is not installed (pip install --no-deps insightface==2.1): no sample images")
    path = Path(spec.origin).parent / "data" / "images" / name
    if not path.is_file():
        pytest.skip(f"this insightface version does not ship {path}")
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].copy()


def warp(img: np.ndarray, dx: float = 0.0, dy: float = 0.0, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Rigid move of the whole frame about its centre (degrees, pixels), reflected borders."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


# ----------------------------------------------------------------------------- tiny ONNX models


def _save(graph, path: Path, opset: int = 13) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_arcface(path: Path, seed: int = 0, mxnet_style: bool = False) -> Path:
    """ArcFace signature: input [N,3,112,112] -> [N,512]. Conv 8x8/8 -> Flatten -> Gemm, random
    weights, so the output depends on channel order, scale and spatial layout. `mxnet_style`
    starts the graph with Sub and Mul nodes, like insightface's mxnet exports."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.normal(0, 0.05, (4 * 14 * 14, 512)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (512,)).astype(np.float32), "fc_b")]
    nodes, x = [], "input.1"
    if mxnet_style:
        inits += [numpy_helper.from_array(np.float32(127.5), "mean"),
                  numpy_helper.from_array(np.float32(0.0078125), "scale")]
        nodes += [helper.make_node("Sub", [x, "mean"], ["sub"], name="_minusscalar0"),
                  helper.make_node("Mul", ["sub", "scale"], ["mul"], name="_mulscalar0")]
        x = "mul"
    nodes += [helper.make_node("Conv", [x, "conv_w"], ["c"], name="Conv_0", kernel_shape=[8, 8], strides=[8, 8]),
              helper.make_node("Flatten", ["c"], ["f"], name="Flatten_1", axis=1),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["fc1"], name="Gemm_2")]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 512])], inits)
    return _save(graph, path)


def decoy_model(path: Path) -> Path:
    """Another pack member's signature (a landmark net: [1,3,192,192] -> [1,212])."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((3, 212), np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["fc1"])]
    graph = helper.make_graph(nodes, "decoy",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])], [w])
    return _save(graph, path)


def fake_scrfd(path: Path, box: np.ndarray, kps: np.ndarray, size: int = 640, score: float = 0.9) -> Path:
    """An SCRFD-shaped detector (input [1,3,size,size], 9 outputs: scores/boxes/keypoints for strides
    8, 16, 32 with 2 anchors) that always reports one face: `box` (x0,y0,x1,y1) and `kps` [5,2] in
    the detector's input pixels, encoded at the stride-32 anchor nearest the box centre."""
    from onnx import TensorProto, helper, numpy_helper

    outs = {}
    for stride in (8, 16, 32):
        n = (size // stride) ** 2 * 2
        scores, boxes = np.zeros((n, 1), np.float32), np.ones((n, 4), np.float32)
        points = np.zeros((n, 10), np.float32)
        if stride == 32:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            col, row = int(round(cx / 32)), int(round(cy / 32))
            ax, ay = col * 32.0, row * 32.0
            i = (row * (size // 32) + col) * 2
            scores[i] = score
            boxes[i] = np.array([ax - box[0], ay - box[1], box[2] - ax, box[3] - ay]) / 32
            points[i] = ((np.asarray(kps, np.float64) - [ax, ay]) / 32).reshape(-1)
        outs[stride] = (scores, boxes, points)
    inits, nodes, outputs = [], [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0)], []
    nodes.append(helper.make_node("Mul", ["m", "zero"], ["z"]))
    inits.append(numpy_helper.from_array(np.float32(0.0), "zero"))
    for kind, k in (("score", 0), ("bbox", 1), ("kps", 2)):
        for stride in (8, 16, 32):
            value = outs[stride][k]
            name = f"{kind}_{stride}"
            inits.append(numpy_helper.from_array(value, name + "_c"))
            nodes.append(helper.make_node("Add", [name + "_c", "z"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "fake_scrfd",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
                              outputs, inits)
    return _save(graph, path)
