"""Export a trained model for serving without Tensorpack: a SavedModel or a frozen graph.

The exported graph takes a BGR image of any size (uint8, H x W x 3), resizes it like
``predict.py`` (short edge ``PREPROC.TEST_SHORT_EDGE_SIZE`` capped by ``PREPROC.MAX_SIZE``, but
with TensorFlow's bilinear resize instead of OpenCV's: the two can differ by rounding), runs the
model and returns, in original-image coordinates:

* ``boxes`` float32 R x 4 (x1, y1, x2, y2), ``scores`` R, ``labels`` int R (1..K),
* ``masks`` float32 R x 28 x 28 (14 x 14 for C4 models): each box's mask probabilities (paste them with
  ``maskplus.evaluation.paste`` or any bilinear resize into the box).
"""
import os
import shutil

from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.tfutils.tower import TowerContext
from tensorpack.utils import logger

from config import config as cfg
from maskplus.engine.strict_load import checkpoint_init, technique_switches
from maskplus.engine.model import build_model

INPUT = "input_image"


def _resize_like_predict(image_bgr):
    """Float image resized by Tensorpack's short-edge rule, and the (y, x) scales used."""
    shape = tf.cast(tf.shape(image_bgr)[:2], tf.float32)
    scale = cfg.PREPROC.TEST_SHORT_EDGE_SIZE / tf.reduce_min(shape)
    scale = tf.minimum(scale, cfg.PREPROC.MAX_SIZE / tf.reduce_max(shape))
    new_shape = tf.cast(tf.floor(shape * scale + 0.5), tf.int32)
    resized = tf.image.resize(tf.cast(image_bgr, tf.float32)[None], new_shape, method="bilinear")[0]
    scales = tf.cast(new_shape, tf.float32) / shape
    return resized, scales


def _unresize_boxes(boxes, scales, hw):
    """In-graph twin of ``transforms.unresize_boxes`` (same rule, same config key)."""
    sy, sx = scales[0], scales[1]
    if cfg.TEST.BOX_SCALE_PER_AXIS:
        boxes = boxes / tf.stack([sx, sy, sx, sy])
        return tf.minimum(tf.maximum(boxes, 0.0), tf.stack([hw[1], hw[0], hw[1], hw[0]]))
    boxes = boxes / tf.sqrt(sy * sx)
    return tf.concat([tf.maximum(boxes[:, :2], 0.0), tf.minimum(boxes[:, 2:], tf.stack([hw[1], hw[0]]))], axis=1)


def build_serving_graph():
    """Build the serving graph in the default graph; returns (input, {name: output})."""
    image = tfv1.placeholder(tf.uint8, (None, None, 3), name=INPUT)
    resized, scales = _resize_like_predict(image)
    model = build_model()
    with TowerContext("", is_training=False):
        model.build_graph(resized, *[None] * (len(model.inputs()) - 1))
    graph = tfv1.get_default_graph()
    boxes = graph.get_tensor_by_name("output/boxes:0")
    boxes = _unresize_boxes(boxes, scales, tf.cast(tf.shape(image)[:2], tf.float32))
    outputs = {
        "boxes": tf.identity(boxes, name="boxes"),
        "scores": tf.identity(graph.get_tensor_by_name("output/scores:0"), name="scores"),
        "labels": tf.identity(graph.get_tensor_by_name("output/labels:0"), name="labels"),
    }
    if cfg.MODE_MASK:
        outputs["masks"] = tf.identity(graph.get_tensor_by_name("output/masks:0"), name="masks")
    return image, outputs


def _session_with_weights(load, strict):
    image, outputs = build_serving_graph()
    init = checkpoint_init(load, strict, model_switches=technique_switches(dict(cfg.items_flat())))
    init._setup_graph()
    sess = tfv1.Session()
    sess.run(tfv1.global_variables_initializer())
    init._run_init(sess)
    return sess, image, outputs


def export_serving(load, directory, strict=True):
    """Write a SavedModel (tag "serve", signature "serving_default") to ``directory``; ``strict``
    as :func:`maskplus.engine.inference.build_predictor`'s."""
    if os.path.exists(directory):
        if not os.path.isdir(directory) or os.listdir(directory):
            raise FileExistsError(f"'{directory}' exists and is not empty: choose a new folder for the SavedModel.")
        shutil.rmtree(directory)
    with tf.Graph().as_default():
        sess, image, outputs = _session_with_weights(load, strict)
        with sess:
            builder = tfv1.saved_model.Builder(directory)
            signature = tfv1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"image": image}, outputs=outputs)
            builder.add_meta_graph_and_variables(
                sess, [tfv1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": signature}, strip_default_attrs=True)
            builder.save()
    logger.info(f"SavedModel written to {directory} (input 'image', outputs {sorted(outputs)}).")
    return directory


def export_frozen_graph(load, path, strict=True):
    """Write a frozen GraphDef (.pb): input tensor ``input_image:0``, outputs ``boxes:0`` etc.;
    ``strict`` as :func:`export_serving`'s."""
    with tf.Graph().as_default():
        sess, _, outputs = _session_with_weights(load, strict)
        with sess:
            frozen = tfv1.graph_util.convert_variables_to_constants(
                sess, sess.graph.as_graph_def(), [t.op.name for t in outputs.values()])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    logger.info(f"Frozen graph written to {path} (input '{INPUT}:0', outputs {[f'{k}:0' for k in outputs]}).")
    return path
