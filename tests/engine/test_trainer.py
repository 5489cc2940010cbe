"""train.py's start-up line: where training runs (the GPUs by name) and in which precision."""
from maskplus.engine.trainer import describe_devices


def test_the_startup_line_names_the_cpu_or_the_gpus_and_the_precision():
    assert describe_devices(1, [], "float32 (auto: this CPU has no native bf16)") == \
        "Training 1 tower on the CPU (no GPU visible to TensorFlow) in float32 (auto: this CPU has no native bf16)."
    assert describe_devices(2, ["Tesla V100-SXM2-16GB", "Tesla V100-SXM2-16GB", "Tesla V100-SXM2-16GB"],
                            "float16 with dynamic loss scaling (auto: GPUs of compute capability 7.0)") == (
        "Training 2 towers on 2 of 3 visible GPUs (3 x Tesla V100-SXM2-16GB) in float16 with dynamic loss "
        "scaling (auto: GPUs of compute capability 7.0).")
    assert describe_devices(1, ["NVIDIA A100-SXM4-40GB", "Tesla T4"], "bfloat16") == \
        "Training 1 tower on 1 of 2 visible GPUs (NVIDIA A100-SXM4-40GB, Tesla T4) in bfloat16."
