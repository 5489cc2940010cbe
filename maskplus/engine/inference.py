"""Inference: build a predictor, run it on one image, map results back to the original image.

Preprocessing is Tensorpack's: BGR input, short edge resized to ``PREPROC.TEST_SHORT_EDGE_SIZE``
capped by ``PREPROC.MAX_SIZE`` (the graph normalises and pads to a multiple of 32 itself);
boxes go back to the original image by the example's single scale (``TEST.BOX_SCALE_PER_AXIS``).
"""
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.predict import OfflinePredictor, PredictConfig
from tensorpack.tfutils.sesscreate import NewSessionCreator
from tensorpack.utils import logger

from config import config as cfg
from maskplus.data.transforms import resize_image, unresize_boxes
from maskplus.engine.model import build_model
from maskplus.engine.session import session_config
from maskplus.engine.strict_load import checkpoint_init, technique_switches
from maskplus.evaluation.paste import paste_mask_cropped, paste_masks_to_rle
from maskplus.modeling.generalized_rcnn import INFERENCE_INPUTS, output_names
from maskplus.precision import resolve

#: One detection in original-image coordinates; ``mask`` is None, a COCO RLE or a
#: :class:`~maskplus.evaluation.paste.CroppedMask` (``.full()``: the full-image uint8 mask).
DetectionResult = namedtuple("DetectionResult", ["box", "score", "class_id", "mask"])
#: The network's raw outputs for one image, before post-processing.
NetworkOutput = namedtuple("NetworkOutput", ["boxes", "scores", "labels", "masks", "orig_shape"])


def build_predictor(load, precision=None, strict=True):
    """An ``OfflinePredictor`` of the inference graph with weights from ``load`` (.npz or TF checkpoint),
    in ``precision`` (fp32, bf16 or fp16; default: what ``TEST.PRECISION`` resolves to here).
    ``strict``: refuse a checkpoint that does not hold exactly this model's variables
    (maskplus/engine/strict_load.py); False loads what fits and reports the rest."""
    precision = precision or resolve(cfg.TEST.PRECISION, "TEST.PRECISION").precision
    switches = technique_switches(dict(cfg.items_flat()))
    pred_config = PredictConfig(
        model=build_model(), session_init=checkpoint_init(load, strict, model_switches=switches),
        session_creator=NewSessionCreator(config=session_config(precision, cfg.TRAIN.INTRA_OP_THREADS)),
        input_names=INFERENCE_INPUTS, output_names=output_names(cfg.MODE_MASK))
    return OfflinePredictor(pred_config)


def run_network(predictor, img_bgr):
    """Resize, run the graph; boxes are returned in original-image coordinates. A predictor with a
    ``run_image`` method runs the image itself (test-time augmentation, ``maskplus/engine/tta.py``)."""
    if img_bgr is None or img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
        raise ValueError("Expected a BGR image of shape H x W x 3.")
    if hasattr(predictor, "run_image"):
        return predictor.run_image(img_bgr)
    h, w = img_bgr.shape[:2]
    resized, sy, sx = resize_image(img_bgr, cfg.PREPROC.TEST_SHORT_EDGE_SIZE, cfg.PREPROC.MAX_SIZE)
    outputs = predictor(resized.astype(np.float32))
    boxes, scores, labels = outputs[:3]
    masks = outputs[3] if cfg.MODE_MASK else None
    boxes = unresize_boxes(boxes, sy, sx, h, w, per_axis=cfg.TEST.BOX_SCALE_PER_AXIS)
    return NetworkOutput(boxes, scores, labels, masks, (h, w))


def postprocess(out, as_rle=False):
    """Paste the 28x28 masks into the image, each cropped to the region it can cover (memory
    bounded by the boxes, not detections x image). ``as_rle`` returns COCO RLEs instead."""
    h, w = out.orig_shape
    if out.masks is None or len(out.boxes) == 0:
        pasted = [None] * len(out.boxes)
    elif as_rle:
        pasted = paste_masks_to_rle(out.boxes, out.masks, h, w, accurate=cfg.MRCNN.ACCURATE_PASTE)
    else:
        pasted = [paste_mask_cropped(b, m, h, w, accurate=cfg.MRCNN.ACCURATE_PASTE) for b, m in zip(out.boxes, out.masks)]
    return [DetectionResult(b, float(s), int(c), m) for b, s, c, m in zip(out.boxes, out.scores, out.labels, pasted)]


def predict_image(predictor, img_bgr):
    """Detections of one BGR image, masks pasted at full resolution (as cropped masks)."""
    return postprocess(run_network(predictor, img_bgr))


def predict_dataflow(predictor, dataflow, on_result, num_postprocess_threads=2):
    """Run over ``(image, image_id)`` datapoints; ``on_result(image_id, detections_with_rle)``.

    Post-processing runs in a thread pool so that mask pasting overlaps the next forward pass.
    Returns the number of images processed.
    """
    dataflow.reset_state()
    count = 0
    start = time.time()
    with ThreadPoolExecutor(num_postprocess_threads) as pool:
        pending = []
        for img, image_id in dataflow:
            out = run_network(predictor, img)
            pending.append((image_id, pool.submit(postprocess, out, True)))
            count += 1
            while pending and (pending[0][1].done() or len(pending) > 2 * num_postprocess_threads):
                image_id_done, future = pending.pop(0)
                on_result(image_id_done, future.result())
        for image_id_done, future in pending:
            on_result(image_id_done, future.result())
    logger.info(f"Inference on {count} images took {time.time() - start:.1f}s.")
    return count
