"""The training arguments: a pure function of the spec and the device (no model, no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loraplane.api.trainer_spec import TrainerSpec
from loraplane.trainer.errors import InvalidSpec
from loraplane.trainer.train import Device, check_spec, choose_precision, training_arguments

CPU = Device()
CPU_DDP = Device(world_size=2)
GPU_BF16 = Device(cuda=True, bf16_supported=True)
GPU_FP16_ONLY = Device(cuda=True, bf16_supported=False)
GPU_DDP = Device(cuda=True, bf16_supported=True, world_size=2)
CHECKPOINTS = Path("/out/checkpoints")


def spec(**training: Any) -> TrainerSpec:
    return TrainerSpec.model_validate(
        {
            "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
            "dataset": {"uri": "builtin://medical"},
            "training": training,
            "outputDir": "/out",
            "cacheDir": "/cache",
        }
    )


def args(device: Device = CPU, **training: Any) -> dict[str, Any]:
    return training_arguments(spec(**training), CHECKPOINTS, device)


@pytest.mark.parametrize(
    ("requested", "device", "chosen"),
    [
        ("fp32", CPU, "fp32"),
        ("auto", CPU, "fp32"),
        ("fp32", GPU_BF16, "fp32"),
        ("auto", GPU_BF16, "bf16"),
        ("auto", GPU_FP16_ONLY, "fp16"),
        ("bf16", GPU_FP16_ONLY, "bf16"),  # asked for: the GPU's problem, not refused here
        ("fp16", GPU_BF16, "fp16"),
    ],
)
def test_precision(requested: str, device: Device, chosen: str) -> None:
    assert choose_precision(requested, device) == chosen
    kwargs = args(device, precision=requested)
    assert (kwargs["bf16"], kwargs["fp16"]) == (chosen == "bf16", chosen == "fp16")


@pytest.mark.parametrize("requested", ["bf16", "fp16"])
def test_half_precision_without_a_gpu_is_an_invalid_spec(requested: str) -> None:
    with pytest.raises(InvalidSpec, match="needs a GPU") as info:
        args(CPU, precision=requested)
    assert info.value.field == "spec.training.precision"


def test_check_spec_refuses_what_vllm_cannot_serve_before_the_precision() -> None:
    dora = spec(precision="bf16").model_copy(update={"lora": spec().lora.model_copy(update={"use_dora": True})})
    with pytest.raises(InvalidSpec) as info:
        check_spec(dora, CPU)
    assert info.value.field == "spec.lora.useDora"
    assert check_spec(spec(), GPU_BF16) == "bf16"


@pytest.mark.parametrize(("packing", "padding_free"), [(True, True), (False, False)])
def test_packing_trains_padding_free(packing: bool, padding_free: bool) -> None:
    kwargs = args(packing=packing)
    assert kwargs["padding_free"] is padding_free
    assert kwargs["max_length"] is None and kwargs["dataset_kwargs"] == {"skip_prepare_dataset": True}


@pytest.mark.parametrize(("every", "logging"), [(1, 1), (5, 5), (10, 10), (50, 10)])
def test_checkpoints_every_n_steps_and_logs_at_least_as_often(every: int, logging: int) -> None:
    kwargs = args(checkpointSteps=every)
    assert kwargs["output_dir"] == str(CHECKPOINTS)
    assert (kwargs["save_strategy"], kwargs["save_steps"], kwargs["save_total_limit"]) == ("steps", every, 2)
    assert kwargs["logging_steps"] == logging and kwargs["logging_first_step"] is True


@pytest.mark.parametrize(
    ("device", "use_cpu", "backend"),
    [(CPU, True, None), (CPU_DDP, True, "gloo"), (GPU_BF16, False, None), (GPU_DDP, False, None)],
)
def test_cpu_and_cuda(device: Device, use_cpu: bool, backend: str | None) -> None:
    """gloo for DDP on CPU; on GPUs the Trainer picks NCCL itself."""
    kwargs = args(device)
    assert kwargs["use_cpu"] is use_cpu and kwargs["ddp_backend"] == backend


def test_max_steps_overrides_epochs_only_when_set() -> None:
    assert args(epochs=2)["max_steps"] == -1 and args(epochs=2)["num_train_epochs"] == 2
    assert args(epochs=2, maxSteps=30)["max_steps"] == 30


def test_warmup_ratio_is_passed_as_a_fraction_of_the_steps() -> None:
    assert args(warmupRatio=0.1)["warmup_steps"] == 0.1
    assert args(warmupRatio=0)["warmup_steps"] == 0


def test_the_spec_is_what_trains() -> None:
    kwargs = args(
        batchSize=4,
        gradientAccumulationSteps=3,
        learningRate=1e-3,
        lrScheduler="constant",
        weightDecay=0.01,
        optimizer="adamw_torch",
        gradientCheckpointing=True,
        seed=7,
    )
    assert kwargs["per_device_train_batch_size"] == kwargs["per_device_eval_batch_size"] == 4
    assert kwargs["gradient_accumulation_steps"] == 3
    assert (kwargs["learning_rate"], kwargs["lr_scheduler_type"], kwargs["weight_decay"]) == (1e-3, "constant", 0.01)
    assert kwargs["optim"] == "adamw_torch" and kwargs["gradient_checkpointing"] is True
    assert kwargs["seed"] == kwargs["data_seed"] == 7


def test_sft_config_accepts_them() -> None:
    """Every key is a real SFTConfig field, and TRL keeps the values we chose."""
    from trl import SFTConfig

    kwargs = args(CPU, packing=True, checkpointSteps=5, maxSteps=3)
    config = SFTConfig(**kwargs)
    assert config.padding_free is True and config.max_length is None and config.save_steps == 5
    assert config.use_cpu is True and config.max_steps == 3 and config.eval_strategy == "no"
