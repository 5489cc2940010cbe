"""The Mask R-CNN ``ModelDesc``s: :class:`GeneralizedRCNN` (inputs, graph, losses, optimiser) and
its two siblings, :class:`ResNetFPNModel` (optionally Cascade) and :class:`ResNetC4Model`, which
give the backbone, the RPN, the box head and the mask head's input. :func:`model_for` picks the
one ``MODE_FPN`` asks for.

The models are built from :class:`RCNNParams`, the one record of every part's parameters;
:meth:`RCNNParams.from_config` is the one place that reads them from a config (given as an argument).
"""
from typing import NamedTuple

from tensorpack import ModelDesc
from tensorpack.models import l2_regularizer, regularize_cost
from tensorpack.tfutils.summary import add_moving_summary
from tensorpack.tfutils.tower import get_current_tower_context

from maskplus.compat import tf, tfv1
from maskplus.data.anchors import cell_anchors
from maskplus.modeling.accumulation import AccumulatingOptimizer
from maskplus.modeling.backbone import BackboneParams, image_preprocess, resnet_c4_backbone, resnet_fpn_backbone
from maskplus.modeling.mask_ops import MaskTargets, select_class, unpackbits_masks
from maskplus.modeling.model_box import (area, clip_boxes, decode_bbox_target, encode_bbox_target,
                                         grid_anchors)
from maskplus.modeling.model_c4 import c4_box_head, c4_roi_features, c4_rpn
from maskplus.modeling.model_cascade import CascadeParams, CascadeRCNNHead
from maskplus.modeling.model_fpn import (FPNParams, fpn_model, generate_fpn_proposals, multilevel_roi_align,
                                         multilevel_rpn_losses)
from maskplus.modeling.model_frcnn import (BoxProposals, FastRCNNHead, FastRCNNParams, fastrcnn_outputs,
                                           fastrcnn_predictions, sample_fast_rcnn_targets)
from maskplus.modeling.model_mrcnn import (MaskHeadParams, fpn_mask_roi_features, mask_branch_inference,
                                           mask_branch_training)
from maskplus.modeling.model_rpn import RPNParams, rpn_head

INFERENCE_INPUTS = ["image"]
#: The detections alone: fetching only these leaves the mask branch out of the run.
DETECTION_OUTPUTS = ["output/boxes", "output/scores", "output/labels"]
MASK_OUTPUTS = ["output/masks"]


class TrainParams(NamedTuple):
    """What the optimiser and the training loss need (the ``TRAIN`` section)."""
    precision: str               #: TRAIN.PRECISION, as asked (resolved on this machine when used)
    towers: int                  #: TRAIN.NUM_GPUS, or 1 without GPUs
    gradient_accumulation: bool  #: TRAIN.GRADIENT_ACCUMULATION: accumulate to 8 images per update
    deterministic: bool          #: TRAIN.DETERMINISTIC
    weight_decay: float          #: TRAIN.WEIGHT_DECAY

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        t = cfg.TRAIN
        return cls(precision=t.PRECISION, towers=t.NUM_GPUS or 1, gradient_accumulation=t.GRADIENT_ACCUMULATION,
                   deterministic=t.DETERMINISTIC, weight_decay=t.WEIGHT_DECAY)


class RCNNParams(NamedTuple):
    """Every parameter of a Mask R-CNN model, by part."""
    mode_mask: bool            #: MODE_MASK: with the mask branch
    mode_fpn: bool             #: MODE_FPN: ResNet-FPN, else ResNet-C4
    num_categories: int        #: DATA.NUM_CATEGORY, K
    backbone: BackboneParams
    fpn: FPNParams
    rpn: RPNParams
    frcnn: FastRCNNParams
    cascade: object            #: :class:`CascadeParams` with FPN.CASCADE, else None
    mask: MaskHeadParams
    train: TrainParams

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives: the one place the model reads the config."""
        return cls(mode_mask=cfg.MODE_MASK, mode_fpn=cfg.MODE_FPN, num_categories=cfg.DATA.NUM_CATEGORY,
                   backbone=BackboneParams.from_config(cfg), fpn=FPNParams.from_config(cfg),
                   rpn=RPNParams.from_config(cfg), frcnn=FastRCNNParams.from_config(cfg),
                   cascade=CascadeParams.from_config(cfg) if cfg.MODE_FPN and cfg.FPN.CASCADE else None,
                   mask=MaskHeadParams.from_config(cfg), train=TrainParams.from_config(cfg))


def output_names(mode_mask):
    """The inference graph's outputs: the detections, and the masks with ``mode_mask``."""
    return DETECTION_OUTPUTS + MASK_OUTPUTS if mode_mask else list(DETECTION_OUTPUTS)


def backbone_feature_names(mode_fpn):
    """The inference graph's backbone features (P2-P6, or C4), by name: fetched with the detections
    and fed back with other boxes, they let the mask branch run again without the backbone."""
    return [f"backbone_features/{k}" for k in range(5 if mode_fpn else 1)]


def mask_input_names(mode_fpn):
    """The mask branch on given boxes (test-time augmentation): the image (its size), the boxes in
    its pixels, their labels and the image's :func:`backbone_feature_names`; ``MASK_OUTPUTS`` out.
    Unfed, the boxes and labels are the detections' and the features the backbone's."""
    return ["image", "mask_boxes", "mask_labels"] + backbone_feature_names(mode_fpn)


def model_for(params, mask_techniques=()):
    """The model ``params`` describe: :class:`ResNetFPNModel` or, with ``mode_fpn`` off,
    :class:`ResNetC4Model`, its mask branch with the built ``mask_techniques``
    (:func:`maskplus.engine.model.build_model` builds them)."""
    model = ResNetFPNModel if params.mode_fpn else ResNetC4Model
    return model(params, mask_techniques=mask_techniques)


class GeneralizedRCNN(ModelDesc):
    """Mask R-CNN, one image per tower (Tensorpack's design): the graph's skeleton, its losses and
    the optimiser. A subclass gives the parts that differ between backbones: :meth:`anchor_inputs`,
    :meth:`backbone`, :meth:`rpn`, :meth:`box_head`, :meth:`mask_roi_func` and :meth:`mask_head_func`.

    ``params``: the model's :class:`RCNNParams`; ``mask_techniques``: the built MaskPlus techniques
    of the mask branch (none: Tensorpack's).
    """

    def __init__(self, params, mask_techniques=()):
        self.params = params
        self.mask_techniques = list(mask_techniques)

    def anchor_inputs(self):
        """The RPN's training targets, as input specs."""
        raise NotImplementedError

    def inputs(self):
        specs = [tf.TensorSpec((None, None, 3), tf.float32, "image")]
        specs += self.anchor_inputs()
        specs.append(tf.TensorSpec((None, 4), tf.float32, "gt_boxes"))
        specs.append(tf.TensorSpec((None,), tf.int64, "gt_labels"))
        if self.params.mode_mask:
            specs.append(tf.TensorSpec((None, None, None), tf.uint8, "gt_masks_packed"))
        # unused by the graph; fetched by the non-finite-loss guard to name the failing image
        specs.append(tf.TensorSpec((), tf.int64, "image_id"))
        return specs

    def optimizer(self):
        lr = tfv1.get_variable("learning_rate", initializer=0.003, trainable=False)
        tfv1.summary.scalar("learning_rate-summary", lr)
        # BASE_LR is for a total batch of 8; gradients are summed over towers (average=False)
        # and, with fewer than 8 towers, accumulated up to 8 images before one update.
        # Without accumulation a step sees fewer images and moves proportionally less: the
        # linear scaling rule, with no further change.
        opt = tfv1.train.MomentumOptimizer(lr / 8.0, 0.9)
        from maskplus.modeling.loss_scale import LossScalingOptimizer
        from maskplus.precision import resolve
        train = self.params.train
        if resolve(train.precision).precision == "fp16":  # float16 needs loss scaling, inside accumulation
            opt = LossScalingOptimizer(opt)
        towers = train.towers
        if towers < 8 and train.gradient_accumulation:
            opt = AccumulatingOptimizer(opt, 8 // towers)
        if train.deterministic:  # no update while the backward pass still reads the weights
            from maskplus.modeling.gated_optimizer import GatedOptimizer
            opt = GatedOptimizer(opt)
        return opt

    def build_graph(self, *args):
        inputs = dict(zip([s.name for s in self.inputs()], args))
        training = get_current_tower_context().is_training
        params = self.params
        image = tf.transpose(image_preprocess(tf.expand_dims(inputs["image"], 0), params.backbone.pixel_mean,
                                              params.backbone.pixel_std), [0, 3, 1, 2])
        image_shape2d = tf.shape(image)[2:]

        features = self.backbone(image)
        if not training:  # named: test-time augmentation feeds them back to the mask branch
            features = [tf.identity(f, name=name)
                        for f, name in zip(features, backbone_feature_names(params.mode_fpn), strict=True)]
        proposals, rpn_loss = self.rpn(features, image_shape2d, inputs, training)

        if training:
            gt_boxes, gt_labels = inputs["gt_boxes"], inputs["gt_labels"]
            add_moving_summary(tf.reduce_mean(area(gt_boxes), name="mean_gt_box_area"))
            frcnn = params.frcnn
            proposals = sample_fast_rcnn_targets(proposals.boxes, gt_boxes, gt_labels, frcnn.fg_thresh,
                                                 frcnn.batch_per_im, frcnn.fg_ratio)
        head, shared_roi_features = self.box_head(features, proposals, inputs.get("gt_boxes"),
                                                  inputs.get("gt_labels"), image_shape2d, training)

        if not training:
            self.inference_outputs(features, head, image_shape2d)
            return None
        tf.identity(inputs["image_id"], name="input_image_id")  # for the non-finite-loss guard
        losses = rpn_loss + head.losses()
        if params.mode_mask:
            gt_masks = tf.cast(unpackbits_masks(inputs["gt_masks_packed"]), tf.uint8, name="gt_masks")
            targets = MaskTargets(proposals.fg_labels, gt_masks, proposals.fg_inds_wrt_gt)
            losses += self.mask_losses(features, proposals, image_shape2d, targets, shared_roi_features)
        wd_cost = regularize_cost(".*/W", l2_regularizer(params.train.weight_decay), name="wd_cost")
        total_cost = tf.add_n(losses + [wd_cost], "total_cost")
        add_moving_summary(total_cost, wd_cost)
        return total_cost

    def backbone(self, image):
        """NCHW image -> the list of feature maps the other parts read."""
        raise NotImplementedError

    def rpn(self, features, image_shape2d, inputs, training):
        """-> (:class:`BoxProposals`, the RPN losses in training, else [])."""
        raise NotImplementedError

    def box_head(self, features, proposals, gt_boxes, gt_labels, image_shape2d, training):
        """-> (the box head, the RoI features of ``proposals.boxes`` the mask head reuses, or None)."""
        raise NotImplementedError

    def mask_roi_func(self, features):
        """-> a function: boxes -> the mask head's input features of those boxes."""
        raise NotImplementedError

    def mask_head_func(self):
        """-> the baseline mask head (a function of the mask head's layer arguments)."""
        raise NotImplementedError

    def mask_losses(self, features, proposals, image_shape2d, targets, shared_roi_features):
        """Training: the mask branch on the sampled foreground RoIs (stage 1's in a cascade)."""
        fg_roi_features = None
        if shared_roi_features is not None:
            fg_roi_features = tf.gather(shared_roi_features, proposals.fg_inds)
        return mask_branch_training(features, proposals.fg_boxes, image_shape2d, self.params.num_categories,
                                    self.mask_head_func(), targets, self.mask_roi_func(features), fg_roi_features,
                                    max_fg=self.params.mask.train_max_fg, techniques=self.mask_techniques)

    def inference_outputs(self, features, head, image_shape2d):
        """``output/boxes``, ``output/scores``, ``output/labels`` and ``output/masks`` (R x 28 x 28)."""
        boxes = clip_boxes(head.decoded_output_boxes(), image_shape2d, name="fastrcnn_all_boxes")
        scores = head.output_scores(name="fastrcnn_all_scores")
        params = self.params
        final_boxes, _, final_labels = fastrcnn_predictions(
            boxes, scores, params.frcnn.result_score_thresh, params.frcnn.results_per_im, params.frcnn.nms_thresh,
            name_scope="output")
        if params.mode_mask:
            # feedable, so that the mask branch also runs on boxes from elsewhere (other views)
            mask_boxes = tfv1.placeholder_with_default(final_boxes, [None, 4], name="mask_boxes")
            mask_labels = tfv1.placeholder_with_default(final_labels, [None], name="mask_labels")
            mask_logits = mask_branch_inference(features, mask_boxes, image_shape2d, params.num_categories,
                                                self.mask_head_func(), self.mask_roi_func(features),
                                                params.mask.batch_multiple, self.mask_techniques)
            tf.sigmoid(select_class(mask_logits, mask_labels), name="output/masks")


class ResNetFPNModel(GeneralizedRCNN):
    """Mask R-CNN with a ResNet-FPN backbone (``MODE_FPN=True``); Cascade R-CNN's box head with
    ``FPN.CASCADE``. ``features`` is [P2, ..., P6]."""

    def anchor_inputs(self):
        num_anchors = len(self.params.rpn.anchor_ratios)
        specs = []
        for lvl in range(2, 2 + len(self.params.fpn.anchor_strides)):
            specs.append(tf.TensorSpec((None, None, num_anchors), tf.int32, f"anchor_labels_lvl{lvl}"))
            specs.append(tf.TensorSpec((None, None, num_anchors, 4), tf.float32, f"anchor_boxes_lvl{lvl}"))
        return specs

    def backbone(self, image):
        fpn = self.params.fpn
        return fpn_model("fpn", resnet_fpn_backbone(image, self.params.backbone), fpn.num_channel, fpn.norm)

    def rpn(self, features, image_shape2d, inputs, training):
        """Objectness and boxes on every level, proposals, and (training) the RPN losses."""
        rpn, fpn = self.params.rpn, self.params.fpn
        num_anchors = len(rpn.anchor_ratios)
        labels, box_targets, logits, pred_boxes, box_logits = [], [], [], [], []
        for i, (fmap, stride, size) in enumerate(zip(features, fpn.anchor_strides, rpn.anchor_sizes)):
            lvl = i + 2
            with tf.name_scope(f"FPN_lvl{lvl}"):
                anchors = grid_anchors(fmap, stride, cell_anchors(size, rpn.anchor_ratios))
            label_logits, deltas = rpn_head("rpn", fmap, fpn.num_channel, num_anchors)
            pred_boxes.append(decode_bbox_target(deltas, anchors, self.params.frcnn.max_size))
            logits.append(label_logits)
            box_logits.append(deltas)
            if training:
                # the data pipeline provides targets for the padded image: slice to the map
                shape2d = tf.shape(fmap)[2:]
                lab = inputs[f"anchor_labels_lvl{lvl}"][:shape2d[0], :shape2d[1]]
                gtb = inputs[f"anchor_boxes_lvl{lvl}"][:shape2d[0], :shape2d[1]]
                labels.append(lab)
                box_targets.append(encode_bbox_target(gtb, anchors))
        boxes, _ = generate_fpn_proposals(pred_boxes, logits, image_shape2d, training, rpn)
        losses = multilevel_rpn_losses(labels, box_targets, logits, box_logits, rpn.batch_per_im) if training else []
        return BoxProposals(boxes), losses

    def box_head(self, features, proposals, gt_boxes, gt_labels, image_shape2d, training):
        params, strides = self.params, self.params.fpn.anchor_strides
        if params.cascade is not None:
            head = CascadeRCNNHead(proposals, lambda boxes: multilevel_roi_align(features[:4], boxes, 7, strides),
                                   gt_boxes, gt_labels, image_shape2d, params.num_categories, training,
                                   params.cascade, params.frcnn.box_head(), params.frcnn.max_size)
            return head, None
        roi_features = multilevel_roi_align(features[:4], proposals.boxes, 7, strides)
        hidden = params.frcnn.box_head()("fastrcnn", roi_features)
        label_logits, box_logits = fastrcnn_outputs("fastrcnn/outputs", hidden, params.num_categories)
        return FastRCNNHead(proposals, box_logits, label_logits, gt_boxes, params.frcnn.bbox_reg_weights,
                            params.frcnn.max_size), None

    def mask_roi_func(self, features):
        return fpn_mask_roi_features(features, self.params.fpn.anchor_strides)

    def mask_head_func(self):
        return self.params.mask.fpn_head()


class ResNetC4Model(GeneralizedRCNN):
    """Mask R-CNN with a ResNet-C4 backbone and res5 as the RoI head (``MODE_FPN=False``).

    See :mod:`maskplus.modeling.model_c4`. ``features`` is [C4]; in training the mask head reads
    the box head's res5 features of the foreground RoIs (no second res5), at inference res5 runs
    again on the detections.
    """

    def anchor_inputs(self):
        num_anchors = self.params.rpn.num_anchors
        return [tf.TensorSpec((None, None, num_anchors), tf.int32, "anchor_labels"),
                tf.TensorSpec((None, None, num_anchors, 4), tf.float32, "anchor_boxes")]

    def backbone(self, image):
        return [resnet_c4_backbone(image, self.params.backbone)]

    def rpn(self, features, image_shape2d, inputs, training):
        boxes, losses = c4_rpn(features[0], image_shape2d, inputs.get("anchor_labels"),
                               inputs.get("anchor_boxes"), training, self.params.rpn, self.params.frcnn.max_size)
        return BoxProposals(boxes), losses

    def box_head(self, features, proposals, gt_boxes, gt_labels, image_shape2d, training):
        return c4_box_head(self.mask_roi_func(features), proposals, gt_boxes, self.params.num_categories,
                           self.params.frcnn)

    def mask_roi_func(self, features):
        stride, backbone = self.params.rpn.anchor_stride, self.params.backbone
        return lambda boxes: c4_roi_features(features[0], boxes, stride, backbone)

    def mask_head_func(self):
        return self.params.mask.c4_head()
