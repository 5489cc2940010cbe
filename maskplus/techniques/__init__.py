"""The five MaskPlus techniques (paper sections 3.1-3.5), one module each.

Each module knows only TensorFlow, Tensorpack layers and the config; the mask-branch builder
(``maskplus.modeling.model_mrcnn.build_mask_branch``) composes them.
"""
