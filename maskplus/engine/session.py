"""TensorFlow session options shared by training and inference."""
import os

from maskplus.compat import tfv1

#: The grappler rewrite of each reduced precision (a field of ``RewriterConfig``); see maskplus/precision.py.
REWRITES = {"bf16": "auto_mixed_precision_onednn_bfloat16", "fp16": "auto_mixed_precision"}


def session_config(precision="fp32", intra_op_threads=0):
    """Soft placement (CPU towers), GPU memory on demand, ``intra_op_threads`` for intra-op work
    (``TRAIN.INTRA_OP_THREADS``; 0: all cores, where Tensorpack's default is one thread: slower on a
    CPU, same results), and the grappler rewrite of a reduced ``precision`` ('bf16' or 'fp16', a
    resolved choice of maskplus/precision.py)."""
    conf = tfv1.ConfigProto(allow_soft_placement=True)
    conf.intra_op_parallelism_threads = intra_op_threads or (os.cpu_count() or 1)
    conf.inter_op_parallelism_threads = 0
    conf.gpu_options.allow_growth = True
    if precision in REWRITES:
        from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
        setattr(conf.graph_options.rewrite_options, REWRITES[precision], RewriterConfig.ON)
    elif precision != "fp32":
        raise ValueError(f"session_config: precision must be fp32, bf16 or fp16, got '{precision}'.")
    return conf
