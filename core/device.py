"""Device and precision, chosen through Accelerate: CUDA, then Apple MPS, then CPU.

torch is imported inside the functions: the page's server imports modules that name
``DeviceError`` (the sweep's readers) and must start, and stay, without torch.
"""

from __future__ import annotations


class DeviceError(ValueError):
    pass


def available_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return available_device()
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but no CUDA GPU is available; use 'auto' or 'cpu'")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was asked for, but Apple MPS is not available; use 'auto' or 'cpu'")
    return requested


def resolve_precision(requested: str, device: str) -> str:
    """Accelerate's mixed_precision name: bf16 where the CUDA GPU has it, else fp16; full precision on
    the CPU (measured: bf16 was slower there) and on MPS (supported by every macOS, no loss scaling,
    not measured without a Mac); an explicit fp16 or bf16 is passed on for MPS."""
    import torch

    if requested == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if requested == "fp16" and device == "cpu":
        raise DeviceError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return {"fp32": "no"}.get(requested, requested)


def make_accelerator(device: str, precision: str):
    """A fresh Accelerator; its shared state is reset so runs in one process may differ.

    Under a launcher (several processes) these settings matter; a single process ignores them:

    - ``split_batches``: core splits each step's global batch over the processes itself
      (core.distributed), so the learning-rate schedule steps once per step, not once per process.
    - ``find_unused_parameters``: a step trains one task, so the other tasks' heads (and, for a task
      whose loss stays out of the backbone, the backbone) get no gradient in it; DDP must look for
      them rather than wait for their gradients. A static graph cannot be declared, because which
      parameters are unused changes from step to step. Frozen parameters (``requires_grad`` false)
      are not DDP's to reduce at all: only trainable parameters' gradients are sent.
    - ``broadcast_buffers`` off: the encoders' buffers (position ids) never change, and a broadcast
      in every forward would make evaluation, where processes run different numbers of batches,
      wait for each other.
    """
    import warnings

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    # DDP's successor setting (forward_sync_buffers) is not among Accelerate's DDP kwargs yet; DDP's own
    # warning says to keep broadcast_buffers=False until then
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device == "cpu", mixed_precision=precision,
                       dataloader_config=DataLoaderConfiguration(split_batches=True),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True,
                                                                      broadcast_buffers=False)])


def describe_device(device: str) -> str:
    import torch

    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if device == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
