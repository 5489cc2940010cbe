"""The model is built from explicit arguments: :class:`RCNNParams.from_config` reads the config once,
and building the graphs afterwards reads it no more (the global config made unreadable meanwhile)."""
import sys

import pytest

from config import config as _global_config
from tests.helpers import build_graph, config_snapshot, configure

FAMILIES = {
    "fpn": {},
    "fpn_techniques": {"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.DECONV_PYRAMID": True,
                       "MASKPLUS.BOUNDARY_REFINEMENT": "improved", "MASKPLUS.QUASI_MULTITASK": ["0.5x"]},
    "c4": {"MODE_FPN": False, "RPN.HEAD_DIM": 64},
    "cascade": {"FPN.CASCADE": True},
}


class _Unreadable:
    def __getattr__(self, name):
        raise AssertionError(f"the global config was read (.{name}) while the graph was built")


def _make_config_unreadable(monkeypatch, real):
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if value is real:
                monkeypatch.setattr(module, name, _Unreadable())


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_graph_is_built_from_the_params_alone(family, training, monkeypatch):
    from maskplus.engine.model import build_model
    with config_snapshot():
        configure(FAMILIES[family], training=training)
        model = build_model()
        with monkeypatch.context() as patch:
            _make_config_unreadable(patch, _global_config)
            graph, _, _ = build_graph(training, model=model)
    assert graph.get_operations()


def test_every_part_reads_its_own_keys():
    from maskplus.engine.model import model_params
    with config_snapshot():
        c = configure({"FPN.CASCADE": True, "RPN.PROPOSAL_NMS_THRESH": 0.6, "FRCNN.FG_RATIO": 0.3,
                       "TEST.RESULTS_PER_IM": 50, "MRCNN.HEAD_DIM": 32, "TRAIN.WEIGHT_DECAY": 2e-4})
        params = model_params()
        assert params.backbone.num_blocks == tuple(c.BACKBONE.RESNET_NUM_BLOCKS)
        assert params.backbone.sync_bn == "nccl"  # TRAINER=replicated
        assert params.rpn.nms_thresh == 0.6 and params.frcnn.fg_ratio == 0.3 and params.frcnn.results_per_im == 50
        assert params.mask.head_dim == 32 and params.train.weight_decay == 2e-4
        assert params.cascade.ious == tuple(c.CASCADE.IOUS)
        assert params.rpn.nms_topk(True) == (c.RPN.TRAIN_PRE_NMS_TOPK, c.RPN.TRAIN_POST_NMS_TOPK)
        assert params.rpn.nms_topk(False) == (c.RPN.TEST_PRE_NMS_TOPK, c.RPN.TEST_POST_NMS_TOPK)
    with config_snapshot():
        configure({})
        assert model_params().cascade is None
