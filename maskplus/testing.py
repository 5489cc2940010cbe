"""Small models, random model files and synthetic training data, built from the global config:
what the tests, scripts/benchmark.py and scripts/make_random_model.py share."""
import contextlib

from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.tfutils.tower import TowerContext

from config import config as cfg, finalize_configs
from maskplus.presets import SMALL_MODEL
from maskplus.techniques import registry

#: The small model (every stage, one bottleneck per ResNet group) at the tests' size: narrow FPN and
#: heads, 96-px images.
TINY = dict(SMALL_MODEL, **{
    "FPN.NUM_CHANNEL": 64, "FPN.FRCNN_FC_HEAD_DIM": 64, "MRCNN.HEAD_DIM": 64,
    "MASKPLUS.CONTEXT_FUSION_DIMS": [64, 64], "MASKPLUS.DECONV_PYRAMID_DIM": 64,
    "RPN.TRAIN_PER_LEVEL_NMS_TOPK": 200, "RPN.TEST_PER_LEVEL_NMS_TOPK": 100,
    "FRCNN.BATCH_PER_IM": 64, "RPN.BATCH_PER_IM": 64,
    "PREPROC.TRAIN_SHORT_EDGE_SIZE": [96, 96], "PREPROC.TEST_SHORT_EDGE_SIZE": 96, "PREPROC.MAX_SIZE": 128,
    "TRAIN.NUM_GPUS": 1,
})


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
    """Apply TINY (optionally) then ``overrides`` ({key: python value}), then finalise. Registered
    plug-in techniques' keys are added first, at their defaults."""
    cfg.freeze(False)
    registry.add_config(cfg)
    values = dict(TINY if tiny else {}, **(overrides or {}))
    for key, value in values.items():
        cfg.set(key, value)
    cfg.DATA.CLASS_NAMES = list(class_names)
    finalize_configs(is_training=training)
    return cfg


def build_graph(training, model=None, seed=None):
    """Build the model in a new graph; returns (graph, {input name: placeholder}, model).

    ``seed``: the graph's random seed, set before any variable exists (so it decides their values)."""
    from maskplus.engine.model import build_model
    model = model or build_model()
    graph = tf.Graph()
    with graph.as_default():
        if seed is not None:
            tfv1.set_random_seed(seed)
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
    """The inference graph of the configured model with freshly initialised weights (drawn with
    ``seed``), written as ``path`` (.npz, model-zoo names); returns the number of variables."""
    from maskplus.engine.checkpoint import export_npz
    graph, _, _ = build_graph(False, seed=seed)
    with graph.as_default(), tfv1.Session() as sess:
        sess.run(tfv1.global_variables_initializer())
        return export_npz(sess, path)


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
