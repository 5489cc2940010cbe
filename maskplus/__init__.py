"""MaskPlus: Mask R-CNN (ResNet-FPN) on Tensorpack with the mask-branch techniques of Xu, Lan & Zhu.

Importing the package imports nothing: the light modules (config presets, console, evaluation,
the generated dataset) load without TensorFlow. Every module that imports TensorFlow or
Tensorpack imports ``maskplus.compat`` first (``modeling/`` and ``techniques/`` do it in their
``__init__``); tests/test_import_layers.py checks it.
"""
__version__ = "0.1.0"
