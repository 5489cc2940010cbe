"""The names of the baseline heads ``FPN.FRCNN_HEAD_FUNC`` and ``FPN.MRCNN_HEAD_FUNC`` accept.

The one list: ``config.py`` validates against it and the modeling modules map each name to the
function of that name. No imports, so the config can read it without building anything.
"""
BOX_HEAD_NAMES = ("fastrcnn_2fc_head", "fastrcnn_4conv1fc_head", "fastrcnn_4conv1fc_gn_head")
MASK_HEAD_NAMES = ("maskrcnn_up4conv_head", "maskrcnn_up4conv_gn_head")
