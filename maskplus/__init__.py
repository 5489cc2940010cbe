"""MaskPlus: Mask R-CNN (ResNet-FPN) on Tensorpack with the mask-branch techniques of Xu, Lan & Zhu.

Importing the package imports nothing: the light modules (config presets, console, evaluation,
the generated dataset) load without TensorFlow. Every module that imports TensorFlow or
Tensorpack imports ``maskplus.compat`` first (``modeling/`` and ``techniques/`` do it in their
``__init__``); tests/test_import_layers.py checks it.

Every entry point imports this package first, so an older Python stops here with one line
instead of failing later (e.g. the demo's ``Popen(process_group=...)`` is new in 3.11).
"""
import sys

__version__ = "0.1.0"
PYTHON_NEEDED = (3, 11)

if sys.version_info < PYTHON_NEEDED:
    raise SystemExit(f"MaskPlus needs Python >= {'.'.join(map(str, PYTHON_NEEDED))}; this is Python "
                     f"{'.'.join(map(str, sys.version_info[:3]))} ({sys.executable}).")
