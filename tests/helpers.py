"""Helpers for model tests: config snapshots, tiny configurations, graph building."""
import contextlib

from config import config as cfg, finalize_configs
from maskplus.compat import tf, tfv1

#: A small model that still has every stage: one bottleneck per ResNet group, narrow FPN/heads.
TINY = {
    "BACKBONE.RESNET_NUM_BLOCKS": [1, 1, 1, 1],
    "BACKBONE.NORM": "GN", "BACKBONE.FREEZE_AT": 0, "BACKBONE.NORM_INIT": "unit",
    "FPN.NORM": "GN", "FPN.NUM_CHANNEL": 64,
    "FPN.FRCNN_HEAD_FUNC": "fastrcnn_2fc_head", "FPN.FRCNN_FC_HEAD_DIM": 64,
    "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head", "MRCNN.HEAD_DIM": 64,
    "MASKPLUS.CONTEXT_FUSION_DIMS": [64, 64], "MASKPLUS.DECONV_PYRAMID_DIM": 64,
    "RPN.TRAIN_PER_LEVEL_NMS_TOPK": 200, "RPN.TEST_PER_LEVEL_NMS_TOPK": 100,
    "FRCNN.BATCH_PER_IM": 64, "RPN.BATCH_PER_IM": 64,
    "PREPROC.TRAIN_SHORT_EDGE_SIZE": [96, 96], "PREPROC.TEST_SHORT_EDGE_SIZE": 96, "PREPROC.MAX_SIZE": 128,
    "TRAIN.NUM_GPUS": 1,
}


@contextlib.contextmanager
def config_snapshot():
    """The whole global config (values, added keys, frozen state) restored on exit; unfrozen inside."""
    saved = cfg.snapshot()
    try:
        cfg.freeze(False)
        yield cfg
    finally:
        cfg.restore(saved)


def configure(overrides=None, class_names=("a", "b", "c"), training=True, tiny=True):
    """Apply TINY (optionally) then ``overrides`` ({key: python value}), then finalise."""
    cfg.freeze(False)
    values = dict(TINY if tiny else {}, **(overrides or {}))
    for key, value in values.items():
        cfg.set(key, value)
    cfg.DATA.CLASS_NAMES = list(class_names)
    finalize_configs(is_training=training)
    return cfg


def build_graph(training, model=None):
    """Build the model in a new graph; returns (graph, {input name: placeholder}, model)."""
    from tensorpack.tfutils.tower import TowerContext
    from maskplus.modeling.generalized_rcnn import model_for_config
    model = model or model_for_config()
    graph = tf.Graph()
    with graph.as_default():
        if training:
            placeholders = {s.name: tfv1.placeholder(s.dtype, s.shape, s.name) for s in model.inputs()}
            with TowerContext("", is_training=True):
                model.build_graph(*placeholders.values())
        else:
            placeholders = {"image": tfv1.placeholder(tf.float32, (None, None, 3), "image")}
            with TowerContext("", is_training=False):
                model.build_graph(placeholders["image"], *[None] * (len(model.inputs()) - 1))
    return graph, placeholders, model


def write_random_model(path, seed=0):
    """The inference graph of the configured model with random weights, written as ``path`` (.npz)."""
    from maskplus.engine.checkpoint import export_npz
    graph, _, _ = build_graph(False)
    with graph.as_default(), tfv1.Session() as sess:
        tfv1.set_random_seed(seed)
        sess.run(tfv1.global_variables_initializer())
        export_npz(sess, path)


def variable_shapes(graph):
    """{name: shape} of the variables a model file holds (trainable + model variables)."""
    with graph.as_default():
        from maskplus.engine.checkpoint import model_variables
        return {name: v.shape.as_list() for name, v in model_variables().items()}


def synthetic_datapoint(h=96, w=96, boxes=((10, 12, 50, 60), (40, 30, 90, 80)), labels=(1, 3), seed=0):
    """A training datapoint dict: a noisy image with filled rectangles, their masks and RPN targets."""
    import numpy as np
    from maskplus.data.anchors import AnchorParams, c4_anchor_targets, multilevel_anchor_targets
    rng = np.random.RandomState(seed)
    anchors = AnchorParams.from_config(cfg)
    img = rng.uniform(0, 80, (h, w, 3)).astype(np.float32)
    boxes = np.asarray(boxes, np.float32)
    masks = np.zeros((len(boxes), h, w), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = 1
        img[y1:y2, x1:x2] = 60 + 60 * k
    dp = {"image": img}
    if cfg.MODE_FPN:
        levels = multilevel_anchor_targets(h, w, boxes, np.zeros((0, 4)), rng, anchors)
        for lvl, (lab, box) in enumerate(levels, start=2):
            dp[f"anchor_labels_lvl{lvl}"] = lab
            dp[f"anchor_boxes_lvl{lvl}"] = box
    else:
        dp["anchor_labels"], dp["anchor_boxes"] = c4_anchor_targets(h, w, boxes, np.zeros((0, 4)), rng, anchors)
    dp["gt_boxes"] = boxes
    dp["gt_labels"] = np.asarray(labels, np.int64)
    dp["gt_masks_packed"] = np.packbits(masks, axis=-1)
    dp["image_id"] = np.int64(seed)
    return dp


def train_steps(graph, placeholders, model, datapoint, steps=2, lr=0.01):
    """Run ``steps`` SGD steps of the model's total cost on one datapoint; returns the costs."""
    with graph.as_default():
        cost = graph.get_tensor_by_name("total_cost:0")
        train_op = tfv1.train.MomentumOptimizer(lr, 0.9).minimize(cost)
        feed = {placeholders[k]: v for k, v in datapoint.items()}
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            return [sess.run([cost, train_op], feed)[0] for _ in range(steps)]


def bilinear_sample(img, y, x):
    """Bilinear sample of a 2-D map at (y, x), pixel centres at integers, the border replicated."""
    import numpy as np
    h, w = img.shape
    y = min(max(y, 0.0), h - 1.0)
    x = min(max(x, 0.0), w - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return (img[y0, x0] * (1 - dy) * (1 - dx) + img[y0, x1] * (1 - dy) * dx
            + img[y1, x0] * dy * (1 - dx) + img[y1, x1] * dy * dx)


def roi_align_reference(fmap, box, res):
    """Slow RoIAlign of one 2-D map: each of res x res bins averages 2 x 2 samples at the centres of
    its sub-cells; ``box`` in map pixels, pixel i covering [i, i + 1) (so its centre is i + 0.5)."""
    import numpy as np
    x1, y1, x2, y2 = box
    bw, bh = (x2 - x1) / res, (y2 - y1) / res
    out = np.zeros((res, res))
    for i in range(res):
        for j in range(res):
            samples = [bilinear_sample(fmap, y1 + (i + (sy + 0.5) / 2) * bh - 0.5, x1 + (j + (sx + 0.5) / 2) * bw - 0.5)
                       for sy in range(2) for sx in range(2)]
            out[i, j] = np.mean(samples)
    return out


def position_dependent_map(height, width, channels=2, offset=0.0):
    """float32 1 x C x H x W map whose value differs with the channel, the row and the column
    (smooth but not linear, so a crop taken at the wrong place or scale shows)."""
    import numpy as np
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    maps = [offset + 10 * c + 5 * np.sin(0.7 * y + 0.2 * c) + 3 * np.cos(0.45 * x) + 0.05 * x * y
            for c in range(channels)]
    return np.stack(maps)[None].astype(np.float32)
