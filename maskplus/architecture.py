"""The model's fixed choices that both config.py (which checks a configuration against them) and
maskplus/modeling (which builds them) need: defined here once, on the floor both may import.

Light: no TensorFlow, no config.
"""

#: GroupNorm's group count, as in the example: a GN layer's width must be a multiple of it
GN_GROUPS = 32
#: The baseline heads ``FPN.FRCNN_HEAD_FUNC`` and ``FPN.MRCNN_HEAD_FUNC`` accept, by the names of
#: their functions in maskplus/modeling/model_frcnn.py and model_mrcnn.py
BOX_HEAD_NAMES = ("fastrcnn_2fc_head", "fastrcnn_4conv1fc_head", "fastrcnn_4conv1fc_gn_head")
MASK_HEAD_NAMES = ("maskrcnn_up4conv_head", "maskrcnn_up4conv_gn_head")
