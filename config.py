"""The global MaskPlus configuration.

Key names, structure and defaults follow the Tensorpack Mask R-CNN example, so its users can carry
their command lines over. One object, ``config`` (alias ``cfg``), is shared by every module. It is
edited by ``--config KEY=VALUE`` overrides, completed by :func:`finalize_configs` and frozen.

Overrides are parsed as Python literals (``ast.literal_eval``, never ``eval``), falling back to a
plain string, and must have the type of the default they replace (ints are accepted for floats,
lists and tuples are interchangeable). An unknown key is an error that suggests the closest one.
"""
import ast
import copy
import difflib
import math
import os
import pprint

from maskplus.architecture import BOX_HEAD_NAMES, GN_GROUPS, MASK_HEAD_NAMES

__all__ = ["config", "cfg", "finalize_configs", "ConfigError", "AttrDict", "BOX_HEAD_NAMES", "MASK_HEAD_NAMES"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


#: Keys of the Tensorpack example that this version refuses, and why (the message of the error).
REMOVED_KEYS = {
    "TRAIN.STARTING_EPOCH": "training starts at the epoch of its checkpoint's global step (the log directory's "
                            "latest when resuming, else --load's), which the example's users had to give by hand.",
}


class AttrDict:
    """A tree of settings addressed by attributes (``cfg.TRAIN.BASE_LR``).

    While unfrozen, reading a missing attribute creates a sub-tree (that is how the defaults below
    are declared). Once frozen, nothing can be added or changed.
    """

    _frozen = False

    def __getattr__(self, name):
        if self._frozen or name.startswith("_"):
            raise AttributeError(name)
        child = AttrDict()
        setattr(self, name, child)
        return child

    def __setattr__(self, name, value):
        if self._frozen:
            raise ConfigError(f"Config is frozen: cannot set '{name}'.")
        super().__setattr__(name, value)

    def __contains__(self, name):
        return name in self.__dict__

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, AttrDict) else v
                for k, v in self.__dict__.items() if not k.startswith("_")}

    def items_flat(self, prefix=""):
        """``(dotted_key, value)`` for every leaf."""
        for k, v in self.__dict__.items():
            if k.startswith("_"):
                continue
            if isinstance(v, AttrDict):
                yield from v.items_flat(prefix + k + ".")
            else:
                yield prefix + k, v

    def freeze(self, frozen=True):
        object.__setattr__(self, "_frozen", frozen)
        for v in self.__dict__.values():
            if isinstance(v, AttrDict):
                v.freeze(frozen)

    def snapshot(self):
        """A detached deep copy of the tree (values, sub-trees, added keys, frozen state) for
        :meth:`restore`."""
        return copy.deepcopy(self)

    def restore(self, snapshot):
        """Make this tree what it was at ``snapshot``: values, keys added since removed, frozen state
        of every node. Sub-trees still present are refilled in place (modules holding ``cfg.TRAIN``
        see the restored values); a dict value stays a dict. The snapshot can be restored again."""
        current = self.__dict__
        restored = {}
        for key, value in snapshot.__dict__.items():
            if isinstance(value, AttrDict):
                node = current.get(key)
                node = node if isinstance(node, AttrDict) else AttrDict()
                node.restore(value)
                restored[key] = node
            else:
                restored[key] = copy.deepcopy(value)  # `_frozen` too, when that node was ever frozen
        current.clear()
        current.update(restored)

    def get(self, dotted):
        node = self
        for part in dotted.split("."):
            if not isinstance(node, AttrDict) or part not in node:
                raise self._unknown(dotted)
            node = node.__dict__[part]
        return node

    def set(self, dotted, value):
        *parents, leaf = dotted.split(".")
        node = self
        for part in parents:
            if part not in node or not isinstance(node.__dict__[part], AttrDict):
                raise self._unknown(dotted)
            node = node.__dict__[part]
        if leaf not in node or isinstance(node.__dict__[leaf], AttrDict):
            raise self._unknown(dotted)
        setattr(node, leaf, value)

    def _unknown(self, dotted):
        if dotted in REMOVED_KEYS:
            return ConfigError(f"Config key '{dotted}' was removed: {REMOVED_KEYS[dotted]}")
        keys = [k for k, _ in self.items_flat()]
        close = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return ConfigError(f"Unknown config key '{dotted}'.{hint}")

    def update_args(self, args):
        """Apply ``["KEY=VALUE", ...]`` overrides (the ``--config`` flag)."""
        for arg in args:
            if "=" not in arg:
                raise ConfigError(f"Config override '{arg}' is not of the form KEY=VALUE.")
            key, text = arg.split("=", 1)
            key = key.strip()
            old = self.get(key)
            self.set(key, _coerce(key, parse_literal(text), old))

    def __str__(self):
        return pprint.pformat(self.to_dict(), width=100, compact=True)

    __repr__ = __str__


def parse_literal(text):
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as GN or replicated


#: The type a key whose default is None accepts (None itself always: "unset").
_TYPES_OF_NONE_DEFAULTS = {"TRAIN.NUM_GPUS": int}


def _coerce(key, value, old):
    """Check ``value`` against the type of the default ``old``, converting where it is lossless."""
    if old is None:
        wanted = _TYPES_OF_NONE_DEFAULTS.get(key)
        if value is None or wanted is None:
            return value
        if isinstance(value, wanted) and not isinstance(value, bool):
            return value
        raise ConfigError(f"Config key '{key}' expects {wanted.__name__} or None (unset), got {value!r} "
                          f"({type(value).__name__}).")
    if isinstance(old, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(old, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(old, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(old, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and key == "TRAIN.LR_SCHEDULE":
            return list(value)
    elif isinstance(old, dict):
        if isinstance(value, dict):
            return value
    elif isinstance(old, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(old)(value)
        if isinstance(value, str) and key == "TRAIN.LR_SCHEDULE":
            return value
        if isinstance(value, str) and key in ("DATA.TRAIN", "DATA.VAL"):
            return type(old)([value])
        if value == "coco" and key == "DATA.CLASS_NAMES":
            return value
    raise ConfigError(
        f"Config key '{key}' expects a value like {old!r} ({type(old).__name__}), got {value!r} "
        f"({type(value).__name__}).")


config = AttrDict()
_C = config

# ----------------------------------------------------------------- mode flags
_C.MODE_MASK = True         # Faster R-CNN when False
_C.MODE_FPN = True          # False: ResNet-C4 (res5 as the RoI head; see "C4 and Cascade R-CNN" below)

# ----------------------------------------------------------------- dataset
# DATA.BASEDIR holds annotations/instances_<split>.json and <split>/ image folders; every split found
# there is registered as coco_<split>. Custom datasets: DATA.CUSTOM = {name: (json, image_dir)}.
_C.DATA.BASEDIR = "/path/to/your/DATA/DIR"
_C.DATA.TRAIN = ("coco_train2017",)   # several names are concatenated
_C.DATA.VAL = ("coco_val2017",)       # each is evaluated
_C.DATA.CUSTOM = {}                   # {"name": ["/path/instances.json", "/path/images"]}
_C.DATA.NUM_CATEGORY = 0              # 0: taken from the training json at finalisation
_C.DATA.CLASS_NAMES = []              # from the dataset at finalisation ("BG" first); "coco" = the 80 COCO names
_C.DATA.FILTER_EMPTY_ANNOTATIONS = True  # False: images without a non-crowd box train as all-negative
_C.DATA.NUM_WORKERS = 4               # data-loading processes; 0 runs in the training process
_C.DATA.ABSOLUTE_COORD = True         # polygon coordinates in pixels (COCO) or in [0, 1]
_C.DATA.SEED = -1                     # >= 0 makes shuffling and augmentation reproducible
_C.DATA.VALIDATE = True               # check every image/annotation before training (docs/DATA.md)
# Images the data loader may skip while training (unreadable or vanished files, images that fail
# to resize or augment), as a fraction of the training images: ceil(fraction * images) are skipped
# and named; one more stops the run with the list (0: stop at the first).
_C.DATA.LOADER_MAX_SKIPPED = 0.01

# ----------------------------------------------------------------- backbone
_C.BACKBONE.WEIGHTS = ""              # ImageNet .npz, e.g. ImageNet-R50-AlignPadding.npz
_C.BACKBONE.RESNET_NUM_BLOCKS = [3, 4, 6, 3]  # R50; [3, 4, 23, 3] is R101
_C.BACKBONE.NORM = "FreezeBN"         # FreezeBN, SyncBN, GN, None
_C.BACKBONE.FREEZE_AFFINE = False     # freeze gamma/beta of normalisation layers too
_C.BACKBONE.FREEZE_AT = 2             # 0: train all; 1: freeze conv0; 2: freeze conv0 and group0
_C.BACKBONE.TF_PAD_MODE = False       # True for TF-slim style ImageNet weights; False for AlignPadding
_C.BACKBONE.STRIDE_1X1 = False        # stride in the 1x1 conv (Caffe ResNet) instead of the 3x3
# Initial scale of the backbone's norms when training from scratch. "example": as Tensorpack's
# get_norm: the last norm of a residual branch at gamma 0, every other one with no initializer given,
# i.e. TF's default glorot-uniform (+-sqrt(3/C)); with NORM=None nothing is zero-initialised.
# "unit": every other norm at gamma 1 and, with NORM=None, each branch's last conv kernel at 0.
_C.BACKBONE.NORM_INIT = "example"

# ----------------------------------------------------------------- trainer
_C.TRAINER = "replicated"             # replicated or horovod
_C.TRAIN.NUM_GPUS = None              # towers; set by finalisation (GPUs seen, or 1 on a CPU)
_C.TRAIN.WEIGHT_DECAY = 1e-4
_C.TRAIN.BASE_LR = 1e-2               # for a total batch of 8 images
_C.TRAIN.WARMUP = 1000                # real steps of linear warm-up (not rescaled by the tower count)
# For a total batch of 8 (scaled by min(8 / towers, 1)). The paper's era (Tensorpack mid-2019) used
# 0.33 * BASE_LR; the example at 1547a54e (2020) uses 1e-5. We follow the paper's era.
_C.TRAIN.WARMUP_INIT_LR = 1e-2 * 0.33
_C.TRAIN.STEPS_PER_EPOCH = 500
_C.TRAIN.LR_SCHEDULE = "1x"           # "1x" = [120k, 160k, 180k], "kx" (k=2..9) = [180k*k - 120k, 180k*k - 40k, 180k*k]
                                      # steps at a total batch of 8; or a list of steps
# "epoch" (the example's): an LR drop at batch-8 step b takes effect at the start of epoch
# floor(b * 8 / towers / STEPS_PER_EPOCH) and training ends after floor(last * 8 / towers /
# STEPS_PER_EPOCH) epochs. "step": drops at the exact step, training runs ceil(...) epochs.
_C.TRAIN.LR_SCHEDULE_ROUNDING = "epoch"
_C.TRAIN.LR_DECAY = "step"            # after warm-up: "step" (x0.1 at each boundary), "linear" or "cosine" (to 0 at the last)
_C.TRAIN.EVAL_PERIOD = 50             # epochs between evaluations (0: never)
_C.TRAIN.CHECKPOINT_PERIOD = 20       # epochs between checkpoints (>= 1)
_C.TRAIN.MAX_CHECKPOINTS = 10         # as the example's ModelSaver (which also keeps one per hour)
_C.TRAIN.GRADIENT_ACCUMULATION = True  # accumulate to a total batch of 8 with fewer towers
_C.TRAIN.INTRA_OP_THREADS = 0         # TF intra-op threads; 0 = all cores (Tensorpack's session: 1)
_C.TRAIN.BOUNDARY_AP = True           # compute Boundary AP in evaluations
# Bit-identical runs (docs/COMPARING.md): TensorFlow's op determinism, loader processes' datapoints in
# order, updates after all gradients, every seed from DATA.SEED (which must then be >= 0); one
# tower. On a GPU some ops of the model have no deterministic kernel: training then stops, naming it.
_C.TRAIN.DETERMINISTIC = False
# Arithmetic precision (maskplus/precision.py): fp32 (the paper's), bf16 (CPUs, oneDNN rewrite),
# fp16 (GPUs, rewrite + dynamic loss scaling) or auto (bf16 on CPUs with native bf16, fp16 on GPUs
# of compute capability >= 7.0, else fp32). Evaluations during training run in TRAIN.PRECISION,
# predict.py in TEST.PRECISION. Variables, checkpoints and .npz files are float32 in every one.
_C.TRAIN.PRECISION = "fp32"
_C.TEST.PRECISION = "fp32"

# ----------------------------------------------------------------- preprocessing
_C.PREPROC.TRAIN_SHORT_EDGE_SIZE = [800, 800]  # [min, max] sampled per image
_C.PREPROC.TEST_SHORT_EDGE_SIZE = 800
_C.PREPROC.MAX_SIZE = 1333
_C.PREPROC.PIXEL_MEAN = [123.675, 116.28, 103.53]  # RGB
_C.PREPROC.PIXEL_STD = [58.395, 57.12, 57.375]

# ----------------------------------------------------------------- anchors and RPN
_C.RPN.ANCHOR_STRIDE = 16             # unused with FPN (FPN.ANCHOR_STRIDES)
_C.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.RPN.ANCHOR_RATIOS = (0.5, 1., 2.)
_C.RPN.POSITIVE_ANCHOR_THRESH = 0.7
_C.RPN.NEGATIVE_ANCHOR_THRESH = 0.3
_C.RPN.FG_RATIO = 0.5
_C.RPN.BATCH_PER_IM = 256
_C.RPN.MIN_SIZE = 0.
_C.RPN.PROPOSAL_NMS_THRESH = 0.7
_C.RPN.CROWD_OVERLAP_THRESH = 9.99    # anchors overlapping crowd boxes more than this are ignored
_C.RPN.HEAD_DIM = 1024                # unused with FPN (FPN.NUM_CHANNEL)
_C.RPN.TRAIN_PRE_NMS_TOPK = 12000     # C4, and FPN in Joint mode
_C.RPN.TRAIN_POST_NMS_TOPK = 2000
_C.RPN.TEST_PRE_NMS_TOPK = 6000
_C.RPN.TEST_POST_NMS_TOPK = 1000
_C.RPN.TRAIN_PER_LEVEL_NMS_TOPK = 2000  # Level mode
_C.RPN.TEST_PER_LEVEL_NMS_TOPK = 1000

# ----------------------------------------------------------------- Fast R-CNN
_C.FRCNN.BATCH_PER_IM = 512
_C.FRCNN.BBOX_REG_WEIGHTS = [10., 10., 5., 5.]
_C.FRCNN.FG_THRESH = 0.5
_C.FRCNN.FG_RATIO = 0.25              # 1:3 positives to negatives

# ----------------------------------------------------------------- FPN
_C.FPN.ANCHOR_STRIDES = (4, 8, 16, 32, 64)  # P2..P6
_C.FPN.PROPOSAL_MODE = "Level"        # Level or Joint
_C.FPN.NUM_CHANNEL = 256
_C.FPN.NORM = "None"                  # None or GN
_C.FPN.FRCNN_HEAD_FUNC = "fastrcnn_2fc_head"
_C.FPN.FRCNN_CONV_HEAD_DIM = 256
_C.FPN.FRCNN_FC_HEAD_DIM = 1024
_C.FPN.MRCNN_HEAD_FUNC = "maskrcnn_up4conv_head"

# ----------------------------------------------------------------- C4 and Cascade R-CNN
# MODE_FPN=False builds the ResNet-C4 model: RPN on C4 (RPN.ANCHOR_STRIDE, RPN.HEAD_DIM, every
# RPN.ANCHOR_SIZES x RPN.ANCHOR_RATIOS anchor at each position, RPN.TRAIN/TEST_PRE/POST_NMS_TOPK),
# res5 (group3) on 14x14 RoIAlign crops as the box and mask head. The FPN.* head keys are unused.
# Cascade R-CNN (FPN only): three box stages, stage k trained on the boxes of stage k-1 matched to
# the ground truth at CASCADE.IOUS[k] (the first IoU is FRCNN.FG_THRESH, the proposal sampling's).
_C.FPN.CASCADE = False
_C.CASCADE.IOUS = [0.5, 0.6, 0.7]
_C.CASCADE.BBOX_REG_WEIGHTS = [[10., 10., 5., 5.], [20., 20., 10., 10.], [30., 30., 15., 15.]]

# ----------------------------------------------------------------- Mask R-CNN
_C.MRCNN.HEAD_DIM = 256
# training: at most this many of an image's foreground RoIs (a random subset: they are sampled
# in random order) go through the mask branch; 0 = all of them, the example's rule. The CPU
# demo caps it: its images hold at most 6 shapes, covered by up to 64 overlapping RoIs.
_C.MRCNN.TRAIN_MAX_FG_PER_IM = 0
_C.MRCNN.ACCURATE_PASTE = True        # bilinear, sub-pixel aligned pasting of the 28x28 masks

# ----------------------------------------------------------------- test time
_C.TEST.FRCNN_NMS_THRESH = 0.5
_C.TEST.RESULT_SCORE_THRESH = 0.05
_C.TEST.RESULT_SCORE_THRESH_VIS = 0.5
_C.TEST.RESULTS_PER_IM = 100
# The mask branch runs on the detections padded to a multiple of this (bounded memory and
# kernel re-use on CPU, where oneDNN keeps per-shape state; 1 = no padding).
_C.TEST.MASK_BATCH_MULTIPLE = 16
# Boxes are mapped back to the original image with one scale, sqrt(scale_y * scale_x), as the
# example does; True divides x and y by their own scale (exact for non-square resizes).
_C.TEST.BOX_SCALE_PER_AXIS = False
# Test-time augmentation (predict.py; docs/TTA.md), off as in the paper: the image is seen at each
# short edge of SHORT_EDGE_SIZES ([]: PREPROC.TEST_SHORT_EDGE_SIZE), each also mirrored with FLIP,
# long edge capped at MAX_SIZE (0: PREPROC.MAX_SIZE). The views' detections are merged by per-class
# NMS (FRCNN_NMS_THRESH, RESULTS_PER_IM); each kept box's mask is the mean of its views' probabilities.
_C.TEST.AUGMENT.ENABLED = False
_C.TEST.AUGMENT.FLIP = True
_C.TEST.AUGMENT.SHORT_EDGE_SIZES = []
_C.TEST.AUGMENT.MAX_SIZE = 0

# ----------------------------------------------------------------- MaskPlus (paper sections 3.1-3.5)
# Every technique is off by default: the graph is then exactly Tensorpack's Mask R-CNN.
_C.MASKPLUS.CONTEXT_FUSION = False            # 3.1 contextual fusion
_C.MASKPLUS.CONTEXT_FUSION_LEVEL = 2          # FPN level Pk the full-image RoI is pooled from
_C.MASKPLUS.CONTEXT_FUSION_DIMS = [256, 256]  # 3x3 conv widths; last = FPN.NUM_CHANNEL
_C.MASKPLUS.DECONV_PYRAMID = False            # 3.2 deconvolutional pyramid module
_C.MASKPLUS.DECONV_PYRAMID_DIM = 256
_C.MASKPLUS.BOUNDARY_REFINEMENT = "none"      # 3.3: none, original, improved
_C.MASKPLUS.BOUNDARY_REFINEMENT_MODULES = 4
_C.MASKPLUS.BOUNDARY_REFINEMENT_GROWTH = [16, 4]  # widths of the two convs of a dense module
_C.MASKPLUS.QUASI_MULTITASK = []              # 3.4: any of "0.5x", "2x"
_C.MASKPLUS.QUASI_MULTITASK_WEIGHT = 1.0
_C.MASKPLUS.BIASED_TRAINING = False           # 3.5 biased training
_C.MASKPLUS.MASK_LOSS_ALPHA = [[0, 1.5], [120000, 1.0]]  # (step at total batch 8, alpha)

cfg = config

_NORMS = ("FreezeBN", "SyncBN", "GN", "None")


#: The example's named schedules in thousands of steps at a total batch of 8: Detectron's 1x, and for
#: k >= 2 the last 120k / 40k steps before the end of k * 180k.
NAMED_SCHEDULES = {"1x": [120, 160, 180], **{f"{k}x": [180 * k - 120, 180 * k - 40, 180 * k] for k in range(2, 10)}}


def _schedule_from_name(name):
    """"1x" -> [120000, 160000, 180000], "3x" -> [420000, 500000, 540000] (steps at a total batch of 8)."""
    if name not in NAMED_SCHEDULES:
        raise ConfigError(f"TRAIN.LR_SCHEDULE '{name}' is not one of {', '.join(NAMED_SCHEDULES)}; "
                          f"give a list of steps instead, e.g. \"[60000,80000,90000]\".")
    return [1000 * k for k in NAMED_SCHEDULES[name]]


def _check_tower_count(n):
    """The example's rule: the total batch of 8 is split evenly over towers (1, 2, 4 or 8 with
    gradient accumulation) or is a multiple of 8 (16, 24, ...: steps shrink by 8 / n)."""
    if n < 1 or (n % 8 and 8 % n):
        raise ConfigError(f"TRAIN.NUM_GPUS={n}: training needs 1, 2, 4 or a multiple of 8 towers "
                          f"(the schedule is defined for a total batch of 8 images).")


def _set_autotune_env(is_training, train_short_edge):
    """The example's cuDNN settings (no effect on CPU): benchmark a convolution after one sighting
    of a shape, but never re-tune per shape at inference or under multi-scale training, where every
    image brings new shapes."""
    multi_scale = train_short_edge[1] - train_short_edge[0] > 100
    if is_training:
        os.environ["TF_AUTOTUNE_THRESHOLD"] = "1"
    if not is_training or multi_scale:
        os.environ["TF_CUDNN_USE_AUTOTUNE"] = "0"


def _c4_or_cascade_errors(c):
    """What MODE_FPN=False and FPN.CASCADE=True require (the Tensorpack example's rules)."""
    errors = []
    if not c.MODE_FPN:
        if c.FPN.CASCADE:
            errors.append("FPN.CASCADE=True needs MODE_FPN=True: Cascade R-CNN is built on FPN only.")
        if c.MASKPLUS.CONTEXT_FUSION:
            errors.append("MASKPLUS.CONTEXT_FUSION=True needs MODE_FPN=True: it pools the full image from "
                          "the FPN level MASKPLUS.CONTEXT_FUSION_LEVEL, which a C4 model does not have.")
        if c.RPN.ANCHOR_STRIDE != 16:
            errors.append(f"RPN.ANCHOR_STRIDE must be 16 (the stride of C4) with MODE_FPN=False, "
                          f"got {c.RPN.ANCHOR_STRIDE}.")
    if c.FPN.CASCADE:
        ious, weights = list(c.CASCADE.IOUS), list(c.CASCADE.BBOX_REG_WEIGHTS)
        if len(ious) != 3:
            errors.append(f"CASCADE.IOUS must hold 3 IoU thresholds (a 3-stage cascade), got {ious}.")
        elif ious[0] != c.FRCNN.FG_THRESH:
            errors.append(f"CASCADE.IOUS[0]={ious[0]} must equal FRCNN.FG_THRESH={c.FRCNN.FG_THRESH}: "
                          f"the first stage trains on the proposals sampled at that threshold.")
        if len(weights) != len(ious) or any(len(w) != 4 for w in weights):
            errors.append(f"CASCADE.BBOX_REG_WEIGHTS must hold one [wx, wy, ww, wh] per CASCADE.IOUS "
                          f"entry ({len(ious)}), got {weights}.")
    return errors


def _group_norm_width_errors(c):
    """GroupNorm splits a layer's channels into GN_GROUPS groups: the widths of the FPN's GN layers
    must be multiples of it (else TensorFlow fails while the graph is built)."""
    if not c.MODE_FPN:  # a C4 model has neither the FPN nor its heads
        return []
    gn_widths = []
    if c.FPN.NORM == "GN":
        gn_widths.append(("FPN.NUM_CHANNEL", "FPN.NORM=GN"))
    if "gn" in c.FPN.FRCNN_HEAD_FUNC:
        gn_widths.append(("FPN.FRCNN_CONV_HEAD_DIM", f"FPN.FRCNN_HEAD_FUNC={c.FPN.FRCNN_HEAD_FUNC}"))
    if "gn" in c.FPN.MRCNN_HEAD_FUNC:
        gn_widths.append(("MRCNN.HEAD_DIM", f"FPN.MRCNN_HEAD_FUNC={c.FPN.MRCNN_HEAD_FUNC}"))
    return [f"{key}={c.get(key)} must be a multiple of {GN_GROUPS} with {why}: GroupNorm splits it into "
            f"{GN_GROUPS} groups." for key, why in gn_widths if c.get(key) % GN_GROUPS]


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v, n=None, low=None, positive=False):
    """A list/tuple of ``n`` (any number if None, at least one) finite numbers, each > 0 or >= ``low``."""
    return (isinstance(v, (list, tuple)) and len(v) >= 1 and (n is None or len(v) == n)
            and all(_number(x) and (not positive or x > 0) and (low is None or x >= low) for x in v))


def _ints(v, n=None, low=1):
    return _numbers(v, n, low) and all(_int(x) for x in v)


_AT_LEAST_1 = (lambda v: _int(v) and v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: _int(v) and v >= 0, "an integer >= 0")
_POSITIVE = (lambda v: _number(v) and v > 0, "a number > 0")
_NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a number >= 0")
_FRACTION = (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
_OVERLAP = (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]")

#: The allowed values of every numeric key (lists: of every element), with what 0 or -1 means
#: where they mean something. Checked first: the other checks may then rely on the types.
_RANGES = {
    "DATA.NUM_CATEGORY": (_AT_LEAST_0[0], "an integer >= 0 (0: from the training json)"),
    "DATA.NUM_WORKERS": (_AT_LEAST_0[0], "an integer >= 0 (0: load in the training process)"),
    "DATA.SEED": (lambda v: _int(v) and -1 <= v < 2 ** 32, "an integer in [0, 2**32) or -1 (not seeded)"),
    "DATA.LOADER_MAX_SKIPPED": (_FRACTION[0], "a fraction of the training images in [0, 1] (0: stop at the first)"),
    "BACKBONE.RESNET_NUM_BLOCKS": (lambda v: _ints(v, 4), "4 integers >= 1"),
    "BACKBONE.FREEZE_AT": (lambda v: v in (0, 1, 2) and _int(v), "0, 1 or 2"),
    "TRAIN.NUM_GPUS": (lambda v: v is None or _AT_LEAST_1[0](v),
                       "an integer >= 1, or None (all visible GPUs, or 1 CPU tower)"),
    "TRAIN.WEIGHT_DECAY": _NON_NEGATIVE,
    "TRAIN.BASE_LR": _POSITIVE,
    "TRAIN.WARMUP": (_AT_LEAST_0[0], "an integer >= 0 (steps; 0: no warm-up)"),
    "TRAIN.WARMUP_INIT_LR": _NON_NEGATIVE,
    "TRAIN.STEPS_PER_EPOCH": _AT_LEAST_1,
    "TRAIN.LR_SCHEDULE": (lambda v: isinstance(v, str) or _numbers(v, positive=True),
                          "'1x'..'9x' or a list of step counts > 0"),
    "TRAIN.EVAL_PERIOD": (_AT_LEAST_0[0], "an integer >= 0 (epochs; 0: never evaluate)"),
    "TRAIN.CHECKPOINT_PERIOD": (_AT_LEAST_1[0], "an integer >= 1 (epochs)"),
    "TRAIN.MAX_CHECKPOINTS": _AT_LEAST_1,
    "TRAIN.INTRA_OP_THREADS": (_AT_LEAST_0[0], "an integer >= 0 (0: one per core)"),
    "PREPROC.TRAIN_SHORT_EDGE_SIZE": (lambda v: _ints(v, 2) and v[0] <= v[1], "[min, max], integers >= 1, min <= max"),
    "PREPROC.TEST_SHORT_EDGE_SIZE": _POSITIVE,
    "PREPROC.MAX_SIZE": _POSITIVE,
    "PREPROC.PIXEL_MEAN": (lambda v: _numbers(v, 3), "3 numbers (R, G, B)"),
    "PREPROC.PIXEL_STD": (lambda v: _numbers(v, 3, positive=True), "3 numbers > 0 (R, G, B)"),
    "RPN.ANCHOR_STRIDE": _AT_LEAST_1,
    "RPN.ANCHOR_SIZES": (lambda v: _numbers(v, positive=True), "a list of numbers > 0"),
    "RPN.ANCHOR_RATIOS": (lambda v: _numbers(v, positive=True), "a list of numbers > 0"),
    "RPN.POSITIVE_ANCHOR_THRESH": _OVERLAP,
    "RPN.NEGATIVE_ANCHOR_THRESH": _FRACTION,
    "RPN.FG_RATIO": _OVERLAP,
    "RPN.BATCH_PER_IM": _AT_LEAST_1,
    "RPN.MIN_SIZE": _NON_NEGATIVE,
    "RPN.PROPOSAL_NMS_THRESH": _OVERLAP,
    "RPN.CROWD_OVERLAP_THRESH": _NON_NEGATIVE,
    "RPN.HEAD_DIM": _AT_LEAST_1,
    **{f"RPN.{k}": _AT_LEAST_1 for k in ("TRAIN_PRE_NMS_TOPK", "TRAIN_POST_NMS_TOPK", "TEST_PRE_NMS_TOPK",
                                          "TEST_POST_NMS_TOPK", "TRAIN_PER_LEVEL_NMS_TOPK", "TEST_PER_LEVEL_NMS_TOPK")},
    "FRCNN.BATCH_PER_IM": _AT_LEAST_1,
    "FRCNN.BBOX_REG_WEIGHTS": (lambda v: _numbers(v, 4, positive=True), "4 numbers > 0"),
    "FRCNN.FG_THRESH": _OVERLAP,
    "FRCNN.FG_RATIO": _OVERLAP,
    "FPN.NUM_CHANNEL": _AT_LEAST_1,
    "FPN.FRCNN_CONV_HEAD_DIM": _AT_LEAST_1,
    "FPN.FRCNN_FC_HEAD_DIM": _AT_LEAST_1,
    "CASCADE.IOUS": (lambda v: _numbers(v) and all(0 < x <= 1 for x in v), "numbers in (0, 1]"),
    "CASCADE.BBOX_REG_WEIGHTS": (lambda v: isinstance(v, (list, tuple)) and all(_numbers(w, positive=True) for w in v),
                                 "lists of numbers > 0"),
    "MRCNN.HEAD_DIM": _AT_LEAST_1,
    "MRCNN.TRAIN_MAX_FG_PER_IM": (_AT_LEAST_0[0], "an integer >= 0 (0: every foreground RoI)"),
    "TEST.FRCNN_NMS_THRESH": _OVERLAP,
    "TEST.RESULT_SCORE_THRESH": _FRACTION,
    "TEST.RESULT_SCORE_THRESH_VIS": _FRACTION,
    "TEST.RESULTS_PER_IM": _AT_LEAST_1,
    "TEST.MASK_BATCH_MULTIPLE": (_AT_LEAST_1[0], "an integer >= 1 (1: no padding)"),
    "TEST.AUGMENT.SHORT_EDGE_SIZES": (lambda v: isinstance(v, (list, tuple)) and (not v or _numbers(v, positive=True)),
                                      "a list of short-edge sizes > 0 ([]: PREPROC.TEST_SHORT_EDGE_SIZE alone)"),
    "TEST.AUGMENT.MAX_SIZE": (_NON_NEGATIVE[0], "a number >= 0 (0: PREPROC.MAX_SIZE)"),
    "MASKPLUS.CONTEXT_FUSION_LEVEL": (lambda v: _int(v) and 2 <= v <= 5, "2, 3, 4 or 5 (P2..P5)"),
    "MASKPLUS.CONTEXT_FUSION_DIMS": (lambda v: _ints(v), "a list of integers >= 1"),
    "MASKPLUS.DECONV_PYRAMID_DIM": _AT_LEAST_1,
    "MASKPLUS.BOUNDARY_REFINEMENT_MODULES": _AT_LEAST_1,
    "MASKPLUS.BOUNDARY_REFINEMENT_GROWTH": (lambda v: _ints(v, 2), "2 integers >= 1"),
    "MASKPLUS.QUASI_MULTITASK_WEIGHT": _NON_NEGATIVE,
    "MASKPLUS.MASK_LOSS_ALPHA": (lambda v: isinstance(v, (list, tuple)) and len(v) >= 1
                                 and all(_numbers(p, 2, low=0) for p in v)
                                 and [p[0] for p in v] == sorted(p[0] for p in v),
                                 "[[step, alpha], ...]: steps >= 0 increasing, alphas >= 0"),
}


def _range_errors(c):
    """One line per key whose value is outside its allowed values (see ``_RANGES``)."""
    errors = []
    for key, (allowed, description) in _RANGES.items():
        value = c.get(key)
        if not allowed(value):
            errors.append(f"{key}={value!r}: must be {description}.")
    return errors


def _check_consistency(c):
    """Combinations that would fail deep inside the graph; named here instead."""
    errors = _range_errors(c)
    if errors:  # the checks below rely on the values' types
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(errors))
    errors.extend(_c4_or_cascade_errors(c))
    if c.BACKBONE.FREEZE_AFFINE and c.BACKBONE.NORM != "FreezeBN":
        errors.append(f"BACKBONE.FREEZE_AFFINE=True only works with BACKBONE.NORM=FreezeBN, got '{c.BACKBONE.NORM}'.")
    if c.BACKBONE.NORM not in _NORMS:
        errors.append(f"BACKBONE.NORM must be one of {_NORMS}, got '{c.BACKBONE.NORM}'.")
    if c.FPN.NORM not in ("None", "GN"):
        errors.append(f"FPN.NORM must be 'None' or 'GN', got '{c.FPN.NORM}'.")
    if c.FPN.FRCNN_HEAD_FUNC not in BOX_HEAD_NAMES:
        errors.append(f"FPN.FRCNN_HEAD_FUNC must be one of {BOX_HEAD_NAMES}, got '{c.FPN.FRCNN_HEAD_FUNC}'.")
    if c.FPN.MRCNN_HEAD_FUNC not in MASK_HEAD_NAMES:
        errors.append(f"FPN.MRCNN_HEAD_FUNC must be one of {MASK_HEAD_NAMES}, got '{c.FPN.MRCNN_HEAD_FUNC}'.")
    if c.FPN.PROPOSAL_MODE not in ("Level", "Joint"):
        errors.append(f"FPN.PROPOSAL_MODE must be 'Level' or 'Joint', got '{c.FPN.PROPOSAL_MODE}'.")
    if c.RPN.NEGATIVE_ANCHOR_THRESH > c.RPN.POSITIVE_ANCHOR_THRESH:
        errors.append(f"RPN.NEGATIVE_ANCHOR_THRESH={c.RPN.NEGATIVE_ANCHOR_THRESH} must not exceed "
                      f"RPN.POSITIVE_ANCHOR_THRESH={c.RPN.POSITIVE_ANCHOR_THRESH}.")
    if c.MODE_FPN and len(c.RPN.ANCHOR_SIZES) != len(c.FPN.ANCHOR_STRIDES):
        errors.append(f"RPN.ANCHOR_SIZES {tuple(c.RPN.ANCHOR_SIZES)} needs one size per FPN level of "
                      f"FPN.ANCHOR_STRIDES {tuple(c.FPN.ANCHOR_STRIDES)}.")
    if c.MODE_FPN and tuple(c.FPN.ANCHOR_STRIDES) != (4, 8, 16, 32, 64):
        errors.append(f"FPN.ANCHOR_STRIDES must be (4, 8, 16, 32, 64) for P2-P6, got {tuple(c.FPN.ANCHOR_STRIDES)}.")
    if c.BACKBONE.NORM_INIT not in ("example", "unit"):
        errors.append(f"BACKBONE.NORM_INIT must be 'example' or 'unit', got '{c.BACKBONE.NORM_INIT}'.")
    if "gn" in c.FPN.FRCNN_HEAD_FUNC and c.FPN.NORM != "GN":
        errors.append(f"FPN.FRCNN_HEAD_FUNC={c.FPN.FRCNN_HEAD_FUNC} is a GN head: set FPN.NORM=GN as well.")
    if "gn" in c.FPN.MRCNN_HEAD_FUNC and c.FPN.NORM != "GN":
        errors.append(f"FPN.MRCNN_HEAD_FUNC={c.FPN.MRCNN_HEAD_FUNC} is a GN head: set FPN.NORM=GN as well.")
    errors.extend(_group_norm_width_errors(c))
    if c.TRAINER not in ("replicated", "horovod"):
        errors.append(f"TRAINER must be 'replicated' or 'horovod', got '{c.TRAINER}'.")
    mp = c.MASKPLUS
    if mp.BOUNDARY_REFINEMENT not in ("none", "original", "improved"):
        errors.append(f"MASKPLUS.BOUNDARY_REFINEMENT must be none, original or improved, got '{mp.BOUNDARY_REFINEMENT}'.")
    bad_qm = [s for s in mp.QUASI_MULTITASK if s not in ("0.5x", "2x")]
    if bad_qm:
        errors.append(f"MASKPLUS.QUASI_MULTITASK accepts '0.5x' and '2x', got {bad_qm}.")
    if mp.CONTEXT_FUSION and c.MODE_FPN:
        if not mp.CONTEXT_FUSION_DIMS or mp.CONTEXT_FUSION_DIMS[-1] != c.FPN.NUM_CHANNEL:
            errors.append(f"MASKPLUS.CONTEXT_FUSION_DIMS {mp.CONTEXT_FUSION_DIMS} must end with "
                          f"FPN.NUM_CHANNEL={c.FPN.NUM_CHANNEL}: its output is added to the RoI features.")
    sizes = list(c.TEST.AUGMENT.SHORT_EDGE_SIZES)
    repeated = sorted({s for s in sizes if sizes.count(s) > 1})
    if repeated:
        errors.append(f"TEST.AUGMENT.SHORT_EDGE_SIZES={sizes} lists {repeated} twice: each view counts once in "
                      f"the mask average.")
    if errors:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(errors))


def _check_precision(c, is_training):
    """The precision the run asks for must run here (an fp16 without a GPU would silently be fp32)."""
    from maskplus.precision import PrecisionError, resolve  # lazy: it asks TensorFlow for the GPUs
    key = "TRAIN.PRECISION" if is_training else "TEST.PRECISION"
    try:
        resolve(c.get(key), key)
    except PrecisionError as e:
        raise ConfigError(str(e)) from None


def finalize_configs(is_training, num_gpus=None, class_names=None):
    """Derive the values that depend on others, validate, and freeze ``config``. Nothing writes
    the config afterwards.

    Args:
        is_training: training needs the dataset's classes and the schedule; inference only classes.
        num_gpus: towers to train on; default: ``TRAIN.NUM_GPUS`` if set, else the GPUs visible
            (one CPU tower when there are none), or the Horovod size under ``TRAINER=horovod``.
        class_names: the class names (no "BG") when ``DATA.CLASS_NAMES`` is unset or ``"coco"``:
            a list, or a function returning one, called after the config's own checks (so that a
            config error comes before any annotation file is read). The command lines give those of
            the datasets (``maskplus/cli.py``); the config does not know the datasets.
    """
    c = config
    c.freeze(False)
    c.DATA.BASEDIR = os.path.expanduser(c.DATA.BASEDIR)
    if isinstance(c.DATA.TRAIN, str):
        c.DATA.TRAIN = (c.DATA.TRAIN,)
    if isinstance(c.DATA.VAL, str):
        c.DATA.VAL = (c.DATA.VAL,)
    _check_consistency(c)

    if not c.DATA.CLASS_NAMES or c.DATA.CLASS_NAMES == "coco":
        names = class_names() if callable(class_names) else class_names
        if not names:
            raise ConfigError(f"DATA.CLASS_NAMES={c.DATA.CLASS_NAMES!r}: the class names must be given (the command "
                              f"lines take them from the datasets: maskplus.cli.finalize).")
        c.DATA.CLASS_NAMES = list(names)
    if c.DATA.CLASS_NAMES[0] != "BG":
        c.DATA.CLASS_NAMES = ["BG"] + list(c.DATA.CLASS_NAMES)
    if c.DATA.NUM_CATEGORY and c.DATA.NUM_CATEGORY != len(c.DATA.CLASS_NAMES) - 1:
        raise ConfigError(f"DATA.NUM_CATEGORY={c.DATA.NUM_CATEGORY} but the dataset has "
                          f"{len(c.DATA.CLASS_NAMES) - 1} categories.")
    c.DATA.NUM_CATEGORY = len(c.DATA.CLASS_NAMES) - 1
    c.DATA.NUM_CLASS = c.DATA.NUM_CATEGORY + 1

    # FPN: one size per level; C4: every size at every position, size-major (the example's order)
    c.RPN.NUM_ANCHOR = len(c.RPN.ANCHOR_RATIOS) * (1 if c.MODE_FPN else len(c.RPN.ANCHOR_SIZES))
    c.FPN.RESOLUTION_REQUIREMENT = c.FPN.ANCHOR_STRIDES[3]  # images padded to a multiple of 32
    # like the Tensorpack example: the cap itself is a multiple of the padding requirement
    mult = float(c.FPN.RESOLUTION_REQUIREMENT)
    if c.MODE_FPN:  # C4 images are not padded
        c.PREPROC.MAX_SIZE = float(math.ceil(c.PREPROC.MAX_SIZE / mult) * mult)

    _set_autotune_env(is_training, c.PREPROC.TRAIN_SHORT_EDGE_SIZE)
    _check_precision(c, is_training)
    if is_training:
        if c.TEST.AUGMENT.ENABLED:
            raise ConfigError("TEST.AUGMENT.ENABLED=True: the evaluations during training see one view; evaluate a "
                              "checkpoint with test-time augmentation by predict.py --evaluate instead.")
        if c.TRAINER == "horovod":
            from maskplus import compat  # noqa: F401  (its shims before Horovod imports TensorFlow)
            import horovod.tensorflow as hvd  # only present where installed
            n = hvd.size()
            if c.TRAIN.NUM_GPUS and c.TRAIN.NUM_GPUS != n:
                raise ConfigError(f"TRAIN.NUM_GPUS={c.TRAIN.NUM_GPUS} but Horovod runs {n} ranks; leave it unset.")
        else:
            n = num_gpus or c.TRAIN.NUM_GPUS or _visible_gpus() or 1
        _check_tower_count(int(n))
        c.TRAIN.NUM_GPUS = int(n)
        if isinstance(c.TRAIN.LR_SCHEDULE, str):
            c.TRAIN.LR_SCHEDULE = _schedule_from_name(c.TRAIN.LR_SCHEDULE)
        # fractional batch-8 steps are kept: at one image per step 72.75 is a whole 582 steps
        c.TRAIN.LR_SCHEDULE = [int(s) if float(s).is_integer() else float(s) for s in c.TRAIN.LR_SCHEDULE]
        if c.TRAIN.LR_SCHEDULE != sorted(c.TRAIN.LR_SCHEDULE) or not c.TRAIN.LR_SCHEDULE:
            raise ConfigError(f"TRAIN.LR_SCHEDULE must be increasing steps, got {c.TRAIN.LR_SCHEDULE}.")
        if c.TRAIN.LR_DECAY not in ("step", "linear", "cosine"):
            raise ConfigError(f"TRAIN.LR_DECAY must be 'step', 'linear' or 'cosine', got '{c.TRAIN.LR_DECAY}'.")
        if c.TRAIN.LR_SCHEDULE_ROUNDING not in ("epoch", "step"):
            raise ConfigError(f"TRAIN.LR_SCHEDULE_ROUNDING must be 'epoch' or 'step', got '{c.TRAIN.LR_SCHEDULE_ROUNDING}'.")
        if c.TRAIN.DETERMINISTIC and c.DATA.SEED < 0:
            raise ConfigError("TRAIN.DETERMINISTIC=True needs DATA.SEED >= 0: the seed of the data order, "
                              "augmentation, sampling and initialisation that two runs must share.")
        if c.TRAIN.DETERMINISTIC and c.TRAIN.NUM_GPUS > 1:
            raise ConfigError(f"TRAIN.DETERMINISTIC=True trains one tower, not {c.TRAIN.NUM_GPUS}: concurrent towers "
                              f"(or ranks) sum some gradients in a varying order, and two runs of two CPU towers "
                              f"differed in the last bits of a few weights. Set TRAIN.NUM_GPUS=1 (with "
                              f"TRAIN.GRADIENT_ACCUMULATION=True, the default, it makes the same 8-image updates).")
    c.freeze()
    return c


def _visible_gpus():
    from maskplus.compat import tf
    return len(tf.config.list_physical_devices("GPU"))
