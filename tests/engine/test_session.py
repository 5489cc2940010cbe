"""The session's precision rewrites, checked on what grappler makes of real graphs.

Grappler is run offline (``tf_optimizer.OptimizeGraph``, nothing executes) with the exact session
config of each precision: bf16 is TensorFlow's oneDNN rewrite, which acts on this CPU's graphs;
fp16 is the CUDA rewrite, which acts on GPU ops only, so its graph's nodes are placed on a GPU and
TensorFlow's own TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_SIMULATE_GPU switch stands in for one.
The README's "Mixed precision" section lists what these tests check stays float32.
"""
import collections
import re

import pytest

from maskplus.compat import tf, tfv1
from maskplus.engine.session import session_config

LOW = {tf.bfloat16.as_datatype_enum: "bf16", tf.float16.as_datatype_enum: "fp16"}
#: ops that only move, gather, reshape or select values (ArgMax: the label accuracy summary): a bf16
#: tensor passing through them is still the output of an op that was allowed in bf16, no
#: arithmetic is done in it
VALUE_PRESERVING = {"Cast", "Reshape", "Shape", "ShapeN", "Size", "Rank", "Transpose", "Identity", "IdentityN",
                    "GatherV2", "GatherNd", "ConcatV2", "Slice", "StridedSlice", "Squeeze", "ExpandDims",
                    "Pad", "MirrorPad", "Split", "SplitV", "Unpack", "Pack", "Tile", "Const", "ZerosLike", "ArgMax"}
#: name scopes whose arithmetic must stay float32: losses, box coding and clipping, anchors,
#: proposals and their NMS, sampling and IoU, RoIAlign's box coordinates, the level assignment,
#: the gradient accumulation sums and the optimizer's update, the detections' score threshold and NMS
#: (``output/``, all but the mask probabilities)
FLOAT32_SCOPES = re.compile(
    r"(loss|cost|encode_bbox_target|decode_bbox_target|clip_boxes|grid_anchors|generate_fpn_proposals|"
    r"generate_rpn_proposals|sample_fast_rcnn_targets|pairwise_iou|crop_and_resize|fpn_map_rois_to_levels|"
    r"AccumGrad|AccumulatingOptimizer|Momentum|LossScal|^output/(?!masks))")


def _low_precision(node):
    return {LOW[v.type] for v in node.attr.values() if v.type in LOW}


def _rewrite(graph, fetches, precision, device=None):
    """What grappler makes of ``graph`` (the part ``fetches``, ops, need) under ``precision``."""
    from tensorflow.python.grappler import tf_optimizer
    with graph.as_default():
        for fetch in fetches if isinstance(fetches, (list, tuple)) else [fetches]:
            graph.add_to_collection("train_op", fetch)
        meta = tfv1.train.export_meta_graph(graph=graph)
    if device:
        for node in meta.graph_def.node:
            node.device = device
    return tf_optimizer.OptimizeGraph(session_config(precision), meta)


def test_each_precision_sets_its_own_grappler_rewrite_and_nothing_else():
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    fields = ("auto_mixed_precision", "auto_mixed_precision_onednn_bfloat16", "auto_mixed_precision_cpu",
              "auto_mixed_precision_mkl")
    on = {p: {f for f in fields if getattr(session_config(p).graph_options.rewrite_options, f) == RewriterConfig.ON}
          for p in ("fp32", "bf16", "fp16")}
    assert on == {"fp32": set(), "bf16": {"auto_mixed_precision_onednn_bfloat16"}, "fp16": {"auto_mixed_precision"}}
    with pytest.raises(ValueError, match="got 'auto'"):  # auto is resolved before a session is made
        session_config("auto")


def test_the_intra_op_threads_are_the_argument_or_every_core():
    import os
    assert session_config("fp32", 3).intra_op_parallelism_threads == 3
    assert session_config("fp32").intra_op_parallelism_threads == (os.cpu_count() or 1)


def _simulate_gpu(monkeypatch):
    """Lets the CUDA rewrite act on ops placed on a GPU this machine does not have (it also takes
    unplaced ops for GPU ones, hence only for graphs whose ops are all placed)."""
    monkeypatch.setenv("TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_SIMULATE_GPU", "1")


def _dense_graph():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(1.5, shape=[4, 8])
        w = tfv1.get_variable("w", [8, 3])
        out = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w)))
    return graph, out


def test_the_rewrites_turn_a_matmul_into_bf16_on_cpu_and_fp16_on_a_gpu(monkeypatch):
    kinds = {}
    for case, device in (("fp32", None), ("bf16", None), ("fp16-on-cpu", None), ("fp16", "/device:GPU:0")):
        if device:
            _simulate_gpu(monkeypatch)
        graph, out = _dense_graph()
        rewritten = _rewrite(graph, out, case.split("-")[0], device)
        kinds[case] = {n.op: _low_precision(n) for n in rewritten.node if n.op == "MatMul"}["MatMul"]
    # fp16 leaves CPU ops alone: why train.py refuses fp16 without a GPU
    assert kinds == {"fp32": set(), "bf16": {"bf16"}, "fp16": {"fp16"}, "fp16-on-cpu": set()}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("precision, device", [("bf16", None), ("fp16", "/device:GPU:0")])
def test_an_island_next_to_a_low_precision_convolution_stays_float32_in_both_layouts(layout, precision, device,
                                                                                     monkeypatch):
    """A convolution's output fed straight into the box decoding and the mask loss: without the
    float32 boundary the rewrites paint the decoding's clip (Minimum) and the loss's Select, Neg and
    GreaterEqual (clear-list ops next to a painted convolution) in either layout."""
    from maskplus.compat import use_conv_layout
    from maskplus.modeling.mask_ops import own_class_loss
    from maskplus.modeling.model_box import decode_bbox_target
    if device:
        _simulate_gpu(monkeypatch)
    before = use_conv_layout(layout)
    try:
        graph = tf.Graph()
        with graph.as_default():
            x = tf.constant(0.3, shape=[2, 4, 6, 10])
            y = tf.nn.conv2d(x, tfv1.get_variable("w", [3, 3, 4, 4]), 1, "SAME", data_format="NCHW")
            boxes = decode_bbox_target(tf.reshape(y, [-1, 4]), tf.constant(12.5, shape=[120, 4]))
            loss, _ = own_class_loss(y[:, :3], tf.constant([1, 3]), tf.constant(0.7, shape=[2, 6, 10]))
            fetch = tf.add(tf.reduce_sum(boxes), loss).op
    finally:
        use_conv_layout(before)
    rewritten = _rewrite(graph, fetch, precision, device)
    assert [n.op for n in rewritten.node if n.op == "Conv2D" and _low_precision(n)] == ["Conv2D"]
    leaks = [f"{n.op} {n.name}" for n in rewritten.node
             if n.name.startswith(("decode_bbox_target/", "logistic_loss")) and _low_precision(n)
             and n.op not in VALUE_PRESERVING]
    assert leaks == []


#: the model families, each with every technique it supports on (their losses are islands too)
FAMILIES = {
    "fpn": {"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.DECONV_PYRAMID": True, "MASKPLUS.BOUNDARY_REFINEMENT": "improved",
            "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"], "MASKPLUS.BIASED_TRAINING": True},
    "c4": {"MODE_FPN": False, "RPN.HEAD_DIM": 64, "MASKPLUS.BOUNDARY_REFINEMENT": "improved"},
    "cascade": {"FPN.CASCADE": True},
}
#: which graphs the islands are checked on: every family in the layout of AVX-512 CPUs and GPUs
#: (NCHW), the FPN model in the NHWC layout of AVX2 CPUs as well
GRAPHS = [("fpn", "NCHW"), ("fpn", "NHWC"), ("c4", "NCHW"), ("cascade", "NCHW")]


@pytest.fixture(scope="module", params=GRAPHS, ids=["-".join(g) for g in GRAPHS])
def model_graphs(request):
    """A training graph with its own optimizer (momentum inside gradient accumulation to 8 images,
    as one tower trains, and the float16 loss scaling) and an inference graph, built in the
    convolution layout of the parameter whatever this machine's own (maskplus/compat.py)."""
    from maskplus.compat import use_conv_layout
    from tests.helpers import build_graph, config_snapshot, configure
    from maskplus.modeling.loss_scale import LossScalingOptimizer
    family, layout = request.param
    before = use_conv_layout(layout)
    try:
        with config_snapshot():
            configure(FAMILIES[family])
            graph, _, model = build_graph(True)
            with graph.as_default():
                opt = model.optimizer()
                opt._opt = LossScalingOptimizer(opt._opt)  # as TRAIN.PRECISION=fp16 builds it on a GPU
                train_op = opt.minimize(graph.get_tensor_by_name("total_cost:0"))
            configure(FAMILIES[family], training=False)
            inference, _, model = build_graph(False)
            outputs = [inference.get_operation_by_name(f"output/{n}") for n in ("boxes", "scores", "labels")]
        # a convolution computed in NHWC hands its result straight to a transpose back to NCHW
        transposes = sum(n.type == "Transpose" and n.inputs[0].op.type == "Conv2D" for n in graph.get_operations())
    finally:
        use_conv_layout(before)
    # the parameter did decide the layout: NHWC wraps the backbone's convolutions in transposes
    assert (transposes > 20) == (layout == "NHWC"), transposes
    return (graph, train_op), (inference, outputs)


def _offenders(rewritten):
    return [f"{n.op} {n.name}" for n in rewritten.node
            if not n.name.startswith("gradients/") and FLOAT32_SCOPES.search(n.name)
            and n.op not in VALUE_PRESERVING and _low_precision(n)]


@pytest.mark.slow
@pytest.mark.parametrize("precision, device", [("bf16", None), ("fp16", "/device:GPU:0")])
def test_losses_box_coding_nms_roialign_coordinates_and_sums_stay_float32(model_graphs, precision, device,
                                                                            monkeypatch):
    if device:
        _simulate_gpu(monkeypatch)
    (graph, train_op), (inference, outputs) = model_graphs
    rewritten = _rewrite(graph, train_op, precision, device)
    converted = collections.Counter(n.op for n in rewritten.node if _low_precision(n))
    # the rewrite did act: the convolutions, forward and backward, run in the low precision
    assert converted["Conv2D"] > 20 and converted["Conv2DBackpropFilter"] > 20, converted
    assert _offenders(rewritten) == []
    checked = [n for n in rewritten.node
               if n.op.startswith("NonMaxSuppression") or n.op in ("CropAndResize", "VariableV2", "ApplyMomentum")]
    assert {n.op for n in checked} >= {"NonMaxSuppressionV3", "CropAndResize", "VariableV2", "ApplyMomentum"}
    assert [f"{n.op} {n.name}" for n in checked if _low_precision(n)] == []
    # inference: the box decoding, clipping and the per-class NMS of the detections
    rewritten = _rewrite(inference, outputs, precision, device)
    assert sum(n.op == "Conv2D" and bool(_low_precision(n)) for n in rewritten.node) > 10
    assert _offenders(rewritten) == []
    assert any(n.name.startswith("output/") and n.op.startswith("NonMaxSuppression") for n in rewritten.node)
