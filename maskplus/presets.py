"""Named configurations: one per row of the paper's Tables 1-6, plus ``maskplus-all``.

A preset is a list of ``KEY=VALUE`` overrides applied before the user's ``--config`` ones, so a
user can still change anything on top. Every paper preset shares the paper's training setup
(section 4.2): ResNet-50-FPN, 8 GPUs with one image each, 360k iterations (the "2x" schedule at a
total batch of 8), 512 RoIs per image at 1:3 positives to negatives, weight decay 1e-4,
momentum 0.9.

Learning rate: section 4.2 says "learning rate is 0.02 ... Other configurations are the same as
Mask R-CNN". 0.02 is Mask R-CNN's rate for a total batch of 16 images; Tensorpack states its rate
per 8 images, so the same step size is ``TRAIN.BASE_LR=0.01`` here (linear scaling: 0.02 * 8 / 16),
with the paper-era warm-up start 0.33 * 0.01. The paper's baseline numbers (38.3 box / 35.1 mask AP)
are those of Tensorpack's model-zoo R50-FPN 2x, trained with exactly that ``BASE_LR=1e-2``. The
literal reading (0.02 per 8 images, twice the step size) stays one flag away:
``--config TRAIN.BASE_LR=0.02 TRAIN.WARMUP_INIT_LR=0.0066``.
"""
import ast
import json
import os
import sys

from config import ConfigError

PAPER_SETUP = [
    "MODE_MASK=True", "MODE_FPN=True",
    "BACKBONE.RESNET_NUM_BLOCKS=[3,4,6,3]",
    "TRAIN.LR_SCHEDULE=2x", "TRAIN.BASE_LR=0.01", "TRAIN.WARMUP_INIT_LR=0.0033",
    "TRAIN.WEIGHT_DECAY=1e-4",
    "FRCNN.BATCH_PER_IM=512", "FRCNN.FG_RATIO=0.25",
    "PREPROC.TRAIN_SHORT_EDGE_SIZE=[800,800]",
]

_ROWS = {
    "baseline": [],
    "context-fusion-256-256": ["MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.CONTEXT_FUSION_DIMS=[256,256]"],
    "context-fusion-256-256-256": ["MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.CONTEXT_FUSION_DIMS=[256,256,256]"],
    "context-fusion-720-512-512-256": ["MASKPLUS.CONTEXT_FUSION=True",
                                       "MASKPLUS.CONTEXT_FUSION_DIMS=[720,512,512,256]"],
    "deconv-pyramid": ["MASKPLUS.DECONV_PYRAMID=True"],
    "boundary-refinement-original": ["MASKPLUS.BOUNDARY_REFINEMENT=original"],
    "boundary-refinement-improved": ["MASKPLUS.BOUNDARY_REFINEMENT=improved"],
    "quasi-multitask-0.5x": ["MASKPLUS.QUASI_MULTITASK=['0.5x']"],
    "quasi-multitask-2x": ["MASKPLUS.QUASI_MULTITASK=['2x']"],
    "biased-training": ["MASKPLUS.BIASED_TRAINING=True"],
    "maskplus-all": ["MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.CONTEXT_FUSION_DIMS=[720,512,512,256]",
                     "MASKPLUS.DECONV_PYRAMID=True", "MASKPLUS.BOUNDARY_REFINEMENT=improved",
                     "MASKPLUS.QUASI_MULTITASK=['0.5x']", "MASKPLUS.BIASED_TRAINING=True"],
}

#: Paper table number -> its rows' preset names, in the paper's order (from the paper's numbers file).
with open(os.path.join(os.path.dirname(__file__), "evaluation", "paper_numbers.json")) as _f:
    TABLES = {int(t): [row["preset"] for row in table["rows"]] for t, table in json.load(_f)["tables"].items()}

# Table 1 with the other reading of "the last layer of FPN backbone" (see techniques/context_fusion.py):
# the full-image RoI pooled from P5 instead of P2.
for _name in ("context-fusion-256-256", "context-fusion-256-256-256", "context-fusion-720-512-512-256"):
    _ROWS[_name + "-p5"] = _ROWS[_name] + ["MASKPLUS.CONTEXT_FUSION_LEVEL=5"]

PRESETS = {name: PAPER_SETUP + rows for name, rows in _ROWS.items()}

#: The small ResNet-FPN that is trained from scratch: GroupNorm everywhere (there are no pretrained
#: statistics) with every norm's scale starting at 1 (the example's random gammas were not measured
#: here), one bottleneck block per stage, a 2fc box head and a GroupNorm mask head. Its widths and
#: image sizes are set where it is used: CPU_MODEL below, the tests' ``maskplus.testing.TINY``.
SMALL_MODEL = {
    "BACKBONE.RESNET_NUM_BLOCKS": [1, 1, 1, 1], "BACKBONE.NORM": "GN", "BACKBONE.FREEZE_AT": 0,
    "BACKBONE.NORM_INIT": "unit", "FPN.NORM": "GN", "FPN.FRCNN_HEAD_FUNC": "fastrcnn_2fc_head",
    "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head",
}


def as_overrides(values):
    """``{key: value}`` as ``KEY=VALUE`` overrides, a list written without spaces (one shell word)."""
    def literal(v):
        return "[" + ",".join(literal(x) for x in v) + "]" if isinstance(v, (list, tuple)) else str(v)
    return [f"{key}={literal(value)}" for key, value in values.items()]


#: The small model at the size the CPU demo and the CPU-scale ablation train on the generated
#: 256-px shapes set: a 128-channel FPN, one image per step without accumulation.
CPU_MODEL = ["MODE_MASK=True", "MODE_FPN=True"] + as_overrides(SMALL_MODEL) + [
    "FPN.NUM_CHANNEL=128", "FPN.FRCNN_FC_HEAD_DIM=256", "MRCNN.HEAD_DIM=128",
    "RPN.ANCHOR_SIZES=(16,32,64,128,256)", "RPN.BATCH_PER_IM=256", "FRCNN.BATCH_PER_IM=128", "FRCNN.FG_RATIO=0.25",
    "RPN.TRAIN_PER_LEVEL_NMS_TOPK=500", "RPN.TEST_PER_LEVEL_NMS_TOPK=300",
    "PREPROC.TRAIN_SHORT_EDGE_SIZE=[256,256]", "PREPROC.TEST_SHORT_EDGE_SIZE=256", "PREPROC.MAX_SIZE=256",
    # at most 6 shapes per image: 30 detections lose nothing and make evaluation cheaper
    "TEST.RESULTS_PER_IM=30",
    "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.WEIGHT_DECAY=1e-4",
    "DATA.NUM_WORKERS=1", "DATA.TRAIN=coco_train2017", "DATA.VAL=coco_val2017",
]
CPU_WIDTH = 128


def demo_schedule(steps):
    """The CPU demo's step counts for a run of ``steps`` one-image steps: constant LR after warm-up,
    then x0.1 at 88% and x0.01 at 97% of the run; biased training (alpha 1.5) for its first third;
    epochs (the checkpoint grain) of at most 100 steps; the drops at their exact steps, not at
    epoch starts; one evaluation, at the end (an evaluation period of the whole run: the
    steps two evaluations on the way would cost are worth more AP). Schedules count batch-8 steps."""
    n = steps / 8
    steps_per_epoch = min(100, steps)
    return [f"TRAIN.LR_SCHEDULE=[{round(0.88 * n, 4)},{round(0.97 * n, 4)},{round(n, 4)}]",
            "TRAIN.LR_SCHEDULE_ROUNDING=step",
            f"MASKPLUS.MASK_LOSS_ALPHA=[[0,1.5],[{round(n / 3, 4)},1.0]]",
            f"TRAIN.STEPS_PER_EPOCH={steps_per_epoch}",
            f"TRAIN.EVAL_PERIOD={-(-steps // steps_per_epoch)}"]


#: The CPU demo (make demo): every MaskPlus technique on, widths scaled to the CPU model.
PRESETS["demo-cpu"] = CPU_MODEL + [
    # a GroupNorm conv box head and half the sampled RoIs foreground: the box classifier was what
    # learnt slowest (BENCHMARKS.md, "demo: what limits it, 600-step runs")
    "FPN.FRCNN_HEAD_FUNC=fastrcnn_4conv1fc_gn_head", "FPN.FRCNN_CONV_HEAD_DIM=64", "FRCNN.FG_RATIO=0.5",
    # the mask branch on at most 16 of an image's foreground RoIs (up to 64 cover its <= 6 shapes):
    # a cheaper step late in training, the same AP per step (BENCHMARKS.md, "860-step runs")
    "MRCNN.TRAIN_MAX_FG_PER_IM=16",
    # 100 proposals per level at test instead of 300: a faster evaluation, the same AP
    # (BENCHMARKS.md, "demo: evaluation and budget changes")
    "RPN.TEST_PER_LEVEL_NMS_TOPK=100",
    "TRAIN.BASE_LR=0.06", "TRAIN.WARMUP_INIT_LR=0.006", "TRAIN.WARMUP=200",
    "TRAIN.CHECKPOINT_PERIOD=2", "TRAIN.MAX_CHECKPOINTS=2",
    "DATA.SEED=0",
    "TRAIN.PRECISION=auto", "TEST.PRECISION=auto",  # bf16 on CPUs with native bf16 (docs/PRECISION.md)
    # a 64-channel pyramid and mask head: a cheaper step, so more steps in the budget and a higher
    # AP (BENCHMARKS.md, "demo: preset changes")
    "FPN.NUM_CHANNEL=64", "MRCNN.HEAD_DIM=64",
    "MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.CONTEXT_FUSION_DIMS=[64,64]",
    "MASKPLUS.DECONV_PYRAMID=True", "MASKPLUS.DECONV_PYRAMID_DIM=64",
    "MASKPLUS.BOUNDARY_REFINEMENT=improved", "MASKPLUS.QUASI_MULTITASK=['0.5x']",
    "MASKPLUS.BIASED_TRAINING=True",
] + demo_schedule(600)  # the run's shape: scripts/demo.py fits its length to --minutes or sets --steps N


_GN = ["BACKBONE.NORM=GN", "FPN.NORM=GN", "FPN.FRCNN_HEAD_FUNC=fastrcnn_4conv1fc_gn_head",
       "FPN.MRCNN_HEAD_FUNC=maskrcnn_up4conv_gn_head"]
_R101 = ["BACKBONE.RESNET_NUM_BLOCKS=[3,4,23,3]"]
_AUG = ["PREPROC.TRAIN_SHORT_EDGE_SIZE=[640,800]"]

#: The Tensorpack model zoo's COCO Mask R-CNN files (http://models.tensorpack.com/FasterRCNN/) and
#: the configuration each was trained with: ``--preset NAME --load COCO-MaskRCNN-<FILE>.npz`` loads,
#: evaluates or fine-tunes it. Every other setting is the example's default, as here.
ZOO_PRESETS = {
    "zoo-r50c4-1x": ("COCO-MaskRCNN-R50C41x.npz", ["MODE_FPN=False"]),
    "zoo-r50fpn-2x": ("COCO-MaskRCNN-R50FPN2x.npz", ["TRAIN.LR_SCHEDULE=2x"]),
    "zoo-r50fpn-gn-2x": ("COCO-MaskRCNN-R50FPN2xGN.npz", _GN + ["TRAIN.LR_SCHEDULE=2x"]),
    "zoo-r50fpn-cascade-1x": ("COCO-MaskRCNN-R50FPN1xCas.npz", ["FPN.CASCADE=True"]),
    "zoo-r50fpn-gn-cascade-aug-4x": ("COCO-MaskRCNN-R50FPN4xGNCasAug.npz",
                                     ["FPN.CASCADE=True"] + _GN + _AUG + ["TRAIN.LR_SCHEDULE=4x"]),
    "zoo-r101c4-1x": ("COCO-MaskRCNN-R101C41x.npz", ["MODE_FPN=False"] + _R101),
    "zoo-r101fpn-1x": ("COCO-MaskRCNN-R101FPN1x.npz", _R101),
    "zoo-r101fpn-cascade-aug-3x": ("COCO-MaskRCNN-R101FPN3xCasAug.npz",
                                   ["FPN.CASCADE=True"] + _R101 + ["TEST.RESULT_SCORE_THRESH=1e-4"] + _AUG
                                   + ["TRAIN.LR_SCHEDULE=3x"]),
    "zoo-r101fpn-gn-cascade-aug-scratch-9x": ("COCO-MaskRCNN-R101FPN9xGNCasAugScratch.npz",
                                              ["FPN.CASCADE=True"] + _R101 + _GN + _AUG
                                              + ["TRAIN.LR_SCHEDULE=9x", "BACKBONE.FREEZE_AT=0"]),
}


def technique_overrides(name, width=256):
    """A paper preset's ``MASKPLUS.*`` overrides only, with its widths scaled from the paper's
    256 channels to ``width`` (the FPN and mask-head width of a smaller model)."""
    out = []
    for arg in preset_overrides(name):
        key, value = arg.split("=", 1)
        if not key.startswith("MASKPLUS."):
            continue
        if key == "MASKPLUS.CONTEXT_FUSION_DIMS":
            value = str([d * width // 256 for d in ast.literal_eval(value)])
        out.append(f"{key}={value}")
    if width != 256:
        out.append(f"MASKPLUS.DECONV_PYRAMID_DIM={width}")
    return out


#: the config sections (and key prefixes) that shape a model, rather than its training, data or techniques
MODEL_SECTIONS = ("MODE_", "BACKBONE.", "FPN.", "RPN.", "FRCNN.", "MRCNN.", "CASCADE.", "PREPROC.")


def model_overrides(name):
    """The overrides of preset ``name`` that shape its model (``MODEL_SECTIONS``)."""
    return [arg for arg in preset_overrides(name) if arg.startswith(MODEL_SECTIONS)]


def cpu_scale_overrides(name):
    """Overrides that, applied after preset ``name``, train its table row at CPU scale: the CPU
    model instead of R50-FPN at 800 px, the row's techniques at the CPU model's width."""
    return CPU_MODEL + technique_overrides(name, CPU_WIDTH)


def preset_overrides(name):
    """The ``KEY=VALUE`` list of a preset; a clear error for an unknown name."""
    if name in ZOO_PRESETS:
        return list(ZOO_PRESETS[name][1])
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}'. Available presets: "
                          f"{', '.join(sorted(PRESETS) + sorted(ZOO_PRESETS))}.")
    return list(PRESETS[name])


def describe_presets():
    """One line per preset: name, the tables it belongs to, and its technique overrides."""
    lines = []
    for name, rows in list(_ROWS.items()) + [("demo-cpu", ["(CPU demo: small GN model, all techniques)"])]:
        tables = [str(t) for t, names in TABLES.items() if name in names]
        where = f"Table {', '.join(tables)}" if tables else (
            "Table 1 (P5)" if name.endswith("-p5") else "all techniques")
        lines.append(f"{name:34s} {where:18s} {' '.join(rows) or '(every MaskPlus option off)'}")
    for name, (zoo_file, overrides) in ZOO_PRESETS.items():
        lines.append(f"{name:34s} {zoo_file:18s} {' '.join(overrides)}")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m maskplus.presets --cpu-scale NAME...: for each preset a line "# NAME", then its
    # CPU-scale overrides one per line (for shell scripts: no quoting problems)
    if len(sys.argv) >= 3 and sys.argv[1] == "--cpu-scale":
        try:
            for name in sys.argv[2:]:
                print(f"# {name}\n" + "\n".join(cpu_scale_overrides(name)))
        except ConfigError as e:
            sys.exit(f"Error: {e}")
    else:
        sys.exit("usage: python -m maskplus.presets --cpu-scale PRESET [PRESET ...]")
