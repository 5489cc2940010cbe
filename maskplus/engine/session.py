"""TensorFlow session options shared by training and inference."""
import os

from config import config as cfg
from maskplus.compat import tfv1


def session_config():
    """Soft placement (CPU towers), GPU memory on demand, and all cores for intra-op work:
    Tensorpack's default of one intra-op thread is ~15% slower on a 2-core CPU."""
    conf = tfv1.ConfigProto(allow_soft_placement=True)
    conf.intra_op_parallelism_threads = cfg.TRAIN.INTRA_OP_THREADS or (os.cpu_count() or 1)
    conf.inter_op_parallelism_threads = 0
    conf.gpu_options.allow_growth = True
    return conf
