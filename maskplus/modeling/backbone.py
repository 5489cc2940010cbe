"""ResNet (bottleneck, v1) backbones in NCHW: C2-C5 for the FPN, or C4 plus res5 as the RoI head.

Variable names and padding follow the Tensorpack model zoo so ``ImageNet-R50-AlignPadding.npz``
and the COCO checkpoints load unchanged: ``conv0``, ``group{0..3}/block{i}/conv{1,2,3}``,
``convshortcut``, with ``bn``/``gn`` inside each conv's scope.

Config-free: every function takes a :class:`BackboneParams` (or the numbers it needs), which
:meth:`BackboneParams.from_config` reads from a config given as an argument.
"""
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

from tensorpack.models import BatchNorm, Conv2D, MaxPooling
from tensorpack.tfutils import argscope
from tensorpack.tfutils.scope_utils import auto_reuse_variable_scope
from tensorpack.tfutils.varreplace import custom_getter_scope, freeze_variables

from maskplus.compat import tf, tfv1
from maskplus.modeling.layers import norm_layer


class BackboneParams(NamedTuple):
    """What the ResNet backbone is built from (the ``BACKBONE`` section and the few other keys it needs)."""
    num_blocks: tuple        #: BACKBONE.RESNET_NUM_BLOCKS, blocks per group (4; the C4 backbone uses 3)
    norm: str                #: BACKBONE.NORM: FreezeBN, SyncBN, GN or None
    norm_init: str           #: BACKBONE.NORM_INIT: "example" or "unit"
    freeze_at: int           #: BACKBONE.FREEZE_AT: 0, 1 (stem) or 2 (stem and group0)
    freeze_affine: bool      #: BACKBONE.FREEZE_AFFINE
    stride_1x1: bool         #: BACKBONE.STRIDE_1X1
    tf_pad_mode: bool        #: BACKBONE.TF_PAD_MODE
    sync_bn: str             #: SyncBN's all-reduce: "nccl" (TRAINER=replicated) or "horovod"
    fpn: bool                #: MODE_FPN: C2-C5 for a pyramid, or C4 with res5 as the RoI head
    resolution_requirement: int  #: FPN.RESOLUTION_REQUIREMENT: the FPN input is padded to its multiple
    pixel_mean: tuple        #: PREPROC.PIXEL_MEAN, RGB
    pixel_std: tuple         #: PREPROC.PIXEL_STD, RGB

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        b = cfg.BACKBONE
        return cls(num_blocks=tuple(b.RESNET_NUM_BLOCKS), norm=b.NORM, norm_init=b.NORM_INIT,
                   freeze_at=b.FREEZE_AT, freeze_affine=b.FREEZE_AFFINE, stride_1x1=b.STRIDE_1X1,
                   tf_pad_mode=b.TF_PAD_MODE, sync_bn="nccl" if cfg.TRAINER == "replicated" else "horovod",
                   fpn=cfg.MODE_FPN, resolution_requirement=cfg.FPN.RESOLUTION_REQUIREMENT,
                   pixel_mean=tuple(cfg.PREPROC.PIXEL_MEAN), pixel_std=tuple(cfg.PREPROC.PIXEL_STD))


def image_preprocess(image_bgr, pixel_mean, pixel_std):
    """BGR float image (any leading dims, channels last) -> normalised by the RGB ``pixel_mean`` and
    ``pixel_std``."""
    with tf.name_scope("image_preprocess"):
        # the mean/std are RGB; the input is BGR, so use them reversed
        mean = tf.constant(pixel_mean[::-1], tf.float32)
        inv_std = tf.constant([1.0 / s for s in pixel_std[::-1]], tf.float32)
        return (tf.cast(image_bgr, tf.float32) - mean) * inv_std


def _pad_pair(top_left, bottom_right, tf_pad_mode):
    """Asymmetric padding for stride-2 VALID convs. AlignPadding weights put the extra pixel first."""
    return [top_left, bottom_right] if tf_pad_mode else [bottom_right, top_left]


def _freeze_affine_getter(getter, name, *args, **kwargs):
    if name.endswith("/gamma") or name.endswith("/beta"):
        kwargs["trainable"] = False
        var = getter(name, *args, **kwargs)
        tfv1.add_to_collection(tfv1.GraphKeys.MODEL_VARIABLES, var)
        return var
    return getter(name, *args, **kwargs)


def _norm(params, zero_init=False):
    return norm_layer(params.norm, zero_init, unit_gamma=params.norm_init == "unit")


@contextmanager
def backbone_scope(params, freeze):
    """Defaults for backbone layers; ``freeze`` makes the variables non-trainable."""
    norm = params.norm

    def norm_relu(x):
        return tf.nn.relu(_norm(params)(x))

    with argscope([Conv2D, MaxPooling, BatchNorm], data_format="channels_first"), \
            argscope(Conv2D, use_bias=False, activation=norm_relu,
                     kernel_initializer=tfv1.variance_scaling_initializer(scale=2.0, mode="fan_out")), \
            ExitStack() as stack:
        if norm in ("FreezeBN", "SyncBN"):
            if freeze or norm == "FreezeBN":
                stack.enter_context(argscope(BatchNorm, training=False))
            else:
                stack.enter_context(argscope(BatchNorm, sync_statistics=params.sync_bn))
        if freeze:
            stack.enter_context(freeze_variables(stop_gradient=False, skip_collection=True))
        elif params.freeze_affine:
            stack.enter_context(custom_getter_scope(_freeze_affine_getter))
        yield


def bottleneck(x, ch, stride, params):
    shortcut = x
    if params.stride_1x1:
        if stride == 2:
            x = x[:, :, :-1, :-1]
        x = Conv2D("conv1", x, ch, 1, strides=stride)
        x = Conv2D("conv2", x, ch, 3, strides=1)
    else:
        x = Conv2D("conv1", x, ch, 1, strides=1)
        if stride == 2:
            pad = _pad_pair(0, 1, params.tf_pad_mode)
            x = tf.pad(x, [[0, 0], [0, 0], pad, pad])
            x = Conv2D("conv2", x, ch, 3, strides=2, padding="VALID")
        else:
            x = Conv2D("conv2", x, ch, 3, strides=1)
    if params.norm == "None" and params.norm_init == "unit":
        # without a norm, start the residual branch at zero through its last kernel
        x = Conv2D("conv3", x, ch * 4, 1, activation=tf.identity, kernel_initializer=tf.zeros_initializer())
    else:
        x = Conv2D("conv3", x, ch * 4, 1, activation=_norm(params, zero_init=True))
    if shortcut.shape[1] != ch * 4:
        if stride == 2 and not params.fpn:
            # C4 maps are not pre-padded: drop the last row/column so the 1x1 stride-2 conv gives
            # floor(x/2) like the 3x3 branch (SAME would give ceil(x/2) for odd x)
            shortcut = shortcut[:, :, :-1, :-1]
        shortcut = Conv2D("convshortcut", shortcut, ch * 4, 1, strides=stride, activation=_norm(params))
    return tf.nn.relu(x + shortcut, name="output")


def resnet_group(name, x, ch, count, stride, params):
    with tfv1.variable_scope(name):
        for i in range(count):
            with tfv1.variable_scope(f"block{i}"):
                x = bottleneck(x, ch, stride if i == 0 else 1, params)
    return x


def _stem_to_c3(padded_image, params):
    """conv0 and pool0 on the padded image, then group0 and group1: (C2, C3). Shared by FPN and C4;
    ``freeze_at`` freezes the stem (>= 1) and group0 (>= 2)."""
    freeze_at, num_blocks = params.freeze_at, params.num_blocks
    with backbone_scope(params, freeze=freeze_at > 0):
        x = Conv2D("conv0", padded_image, 64, 7, strides=2, padding="VALID")
        pad = _pad_pair(0, 1, params.tf_pad_mode)
        x = tf.pad(x, [[0, 0], [0, 0], pad, pad])
        x = MaxPooling("pool0", x, 3, strides=2, padding="VALID")
    with backbone_scope(params, freeze=freeze_at > 1):
        c2 = resnet_group("group0", x, 64, num_blocks[0], 1, params)
    with backbone_scope(params, freeze=False):
        c3 = resnet_group("group1", c2, 128, num_blocks[1], 2, params)
    return c2, c3


def resnet_fpn_backbone(image, params):
    """NCHW image -> (C2, C3, C4, C5) at strides 4, 8, 16, 32.

    The image is first padded at the bottom/right to a multiple of 32 so every level has exactly
    1/stride of the padded size, which the anchors and the FPN's 2x up-sampling rely on.
    """
    mult = float(params.resolution_requirement)
    shape2d = tf.shape(image)[2:]
    padded = tf.cast(tf.math.ceil(tf.cast(shape2d, tf.float32) / mult) * mult, tf.int32)
    extra = padded - shape2d
    base = _pad_pair(2, 3, params.tf_pad_mode)
    x = tf.pad(image, tf.stack([[0, 0], [0, 0], [base[0], base[1] + extra[0]], [base[0], base[1] + extra[1]]]))
    x.set_shape([None, image.shape[1], None, None])
    c2, c3 = _stem_to_c3(x, params)
    with backbone_scope(params, freeze=False):
        c4 = resnet_group("group2", c3, 256, params.num_blocks[2], 2, params)
        c5 = resnet_group("group3", c4, 512, params.num_blocks[3], 2, params)
    return c2, c3, c4, c5


def resnet_c4_backbone(image, params):
    """NCHW image -> C4 at stride 16 (``conv0``, ``group0``-``group2``), for ``MODE_FPN=False``.

    Unlike the FPN backbone the image is not padded to a multiple of 32: an h x w image gives a
    floor(h/16) x floor(w/16) map.
    """
    pad = _pad_pair(2, 3, params.tf_pad_mode)
    _, c3 = _stem_to_c3(tf.pad(image, [[0, 0], [0, 0], pad, pad]), params)
    with backbone_scope(params, freeze=False):
        return resnet_group("group2", c3, 256, params.num_blocks[2], 2, params)


@auto_reuse_variable_scope
def resnet_conv5(roi_features, params):
    """res5 (``group3``, first block at stride 2) on RoI crops: N x 1024 x 14 x 14 -> N x 2048 x 7 x 7.

    The C4 box head and mask head both run it; the variables are shared between the calls.
    """
    with backbone_scope(params, freeze=False):
        return resnet_group("group3", roi_features, 512, params.num_blocks[3], 2, params)
