"""Test-time augmentation (``TEST.AUGMENT``): the model on several views of each image.

Each view (a short-edge size, optionally mirrored) is detected on; the detections, mapped back to
the image, are merged by per-class NMS with the model's own rules (``TEST.FRCNN_NMS_THRESH``,
``TEST.RESULT_SCORE_THRESH``, ``TEST.RESULTS_PER_IM``). The mask branch then runs on the merged
boxes mapped into every view (on that view's features: every technique of the mask branch sees
the view, contextual fusion its full image), and each box's mask is the mean of its views'
probabilities, thresholded at 0.5 when pasted. The arithmetic is
``maskplus/evaluation/tta.py``; the graph's second input/output pair (``mask_input_names`` ->
``MASK_OUTPUTS``) is what runs the mask branch on given boxes.
"""
from typing import NamedTuple

import numpy as np
from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.predict import OnlinePredictor
from tensorpack.utils import logger

from maskplus.data.transforms import resize_image
from maskplus.engine.inference import NetworkOutput
from maskplus.evaluation.tta import (ViewGeometry, augmented_views, average_masks, boxes_to_image, boxes_to_view,
                                     merge_views)
from maskplus.modeling.generalized_rcnn import (DETECTION_OUTPUTS, INFERENCE_INPUTS, MASK_OUTPUTS,
                                               backbone_feature_names, mask_input_names)


class AugmentationParams(NamedTuple):
    """What test-time augmentation needs of the config: whether it is on (``TEST.AUGMENT.ENABLED``),
    whether the model has masks (``MODE_MASK``) and an FPN (``MODE_FPN``: its backbone features are
    kept for the mask runs), and :class:`AugmentedPredictor`'s views, cap on a view's long edge,
    merge rules and ``per_axis``."""
    enabled: bool
    masks: bool
    fpn: bool
    views: tuple
    max_size: float
    nms_thresh: float
    score_thresh: float
    max_detections: int
    per_axis: bool

    @classmethod
    def from_config(cls, cfg):
        """From ``TEST.AUGMENT``, ``PREPROC`` and ``TEST`` of ``cfg`` (an argument: this module never
        imports the config): the views' sizes default to the test size, their cap to ``PREPROC.MAX_SIZE``."""
        aug = cfg.TEST.AUGMENT
        sizes = list(aug.SHORT_EDGE_SIZES) or [cfg.PREPROC.TEST_SHORT_EDGE_SIZE]
        return cls(bool(aug.ENABLED), bool(cfg.MODE_MASK), bool(cfg.MODE_FPN), tuple(augmented_views(sizes, aug.FLIP)),
                   aug.MAX_SIZE or cfg.PREPROC.MAX_SIZE, cfg.TEST.FRCNN_NMS_THRESH, cfg.TEST.RESULT_SCORE_THRESH,
                   cfg.TEST.RESULTS_PER_IM, cfg.TEST.BOX_SCALE_PER_AXIS)


class AugmentedPredictor:
    """Runs whole images through every view (``run_image``, which ``inference.run_network`` calls).

    Args:
        detect: view image (float32 BGR, H x W x 3) -> boxes, scores, labels in its pixels, then
            anything ``segment`` needs of the view besides the image (the backbone's features).
        segment: (view image, boxes in its pixels, labels, what ``detect`` gave after the labels)
            -> [mask probabilities R x M x M], or None for a model without masks.
        views: the :class:`~maskplus.evaluation.tta.View` list.
        max_size: the cap on a view's long edge.
        nms_thresh, score_thresh, max_detections: the merge's per-class NMS rules.
        per_axis: ``TEST.BOX_SCALE_PER_AXIS``, how boxes go back to the image.
    """

    def __init__(self, detect, segment, views, max_size, nms_thresh, score_thresh, max_detections, per_axis=False,
                 single_view=None):
        if not views:
            raise ValueError("test-time augmentation needs at least one view")
        self.detect, self.segment, self.views = detect, segment, list(views)
        self.single_view = single_view  # the predictor without augmentation, for comparisons
        self.max_size, self.per_axis = max_size, per_axis
        self.merge_rules = (nms_thresh, score_thresh, max_detections)

    @classmethod
    def from_params(cls, params, detect, segment, single_view=None):
        """With the views and rules of :class:`AugmentationParams` ``params``."""
        return cls(detect, segment, params.views, params.max_size, params.nms_thresh, params.score_thresh,
                   params.max_detections, per_axis=params.per_axis, single_view=single_view)

    def describe(self):
        """The views and merge rules, as recorded with evaluation metrics."""
        nms, score, per_image = self.merge_rules
        return {"views": [list(v) for v in self.views], "max_size": self.max_size, "nms_thresh": nms,
                "score_thresh": score, "results_per_image": per_image}

    def view_images(self, img_bgr):
        """[(float32 view image, its :class:`ViewGeometry`)] of every view."""
        h, w = img_bgr.shape[:2]
        out = []
        for view in self.views:
            resized, _, _ = resize_image(img_bgr, view.short_edge, self.max_size)
            if view.flip:
                resized = resized[:, ::-1]
            geometry = ViewGeometry(h, w, resized.shape[0], resized.shape[1], view.flip)
            out.append((np.ascontiguousarray(resized, np.float32), geometry))
        return out

    def run_image(self, img_bgr):
        """The merged detections of one BGR image, boxes in its pixels, masks R x M x M averaged."""
        h, w = img_bgr.shape[:2]
        views = self.view_images(img_bgr)
        found, features = [], []
        for image, geometry in views:
            boxes, scores, labels, *view_features = self.detect(image)
            found.append((boxes_to_image(boxes, geometry, self.per_axis), scores, labels))
            features.append(view_features)
        boxes, scores, labels = merge_views(found, *self.merge_rules)
        masks = None
        if self.segment is not None:
            # no box: one empty run gives the masks' shape (0 x M x M)
            used = list(zip(views, features))[:len(views) if len(boxes) else 1]
            view_masks = [self.segment(image, boxes_to_view(boxes, geometry, self.per_axis), labels, *view_features)[0]
                          for (image, geometry), view_features in used]
            masks = average_masks(view_masks, [geometry.flip for (_, geometry), _ in used])
        return NetworkOutput(boxes, scores, labels, masks, (h, w))


def augmented(predictor, params):
    """``predictor`` (an ``OfflinePredictor`` of the inference graph) itself, or, when
    :class:`AugmentationParams` ``params`` has it enabled, an :class:`AugmentedPredictor` in its
    graph and session. The views' backbone features are kept from the detection run and fed to the
    mask branch's: its backbone does not run twice (for the price of holding every view's features
    until the merge)."""
    if not params.enabled:
        return predictor
    graph, sess = predictor.graph, predictor.sess

    def tensors(names):
        return [graph.get_tensor_by_name(name + ":0") for name in names]

    kept = backbone_feature_names(params.fpn) if params.masks else []
    detect = OnlinePredictor(tensors(INFERENCE_INPUTS), tensors(DETECTION_OUTPUTS + kept), sess=sess)
    segment = OnlinePredictor(tensors(mask_input_names(params.fpn)), tensors(MASK_OUTPUTS), sess=sess) if params.masks else None
    tta = AugmentedPredictor.from_params(params, detect, segment, single_view=predictor)
    views = ", ".join(f"{v.short_edge:g}{' mirrored' if v.flip else ''}" for v in tta.views)
    count = f"{len(tta.views)} view{'s' if len(tta.views) > 1 else ''}"
    logger.info(f"Test-time augmentation: {count} (short edge {views}; long edge <= {tta.max_size:g}).")
    return tta
