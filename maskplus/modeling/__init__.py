"""The Mask R-CNN model as TensorFlow graph builders on Tensorpack (every module imports TensorFlow)."""
from maskplus import compat  # noqa: F401  (its shims before any module here imports TensorFlow)
