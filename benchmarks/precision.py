"""What ``precision: auto`` picks on this machine, and the time of a training step in fp32 and in bf16.

A step is the training loop's own (forward under the recipe's autocast, loss, backward, SGD step) on a
random batch of the shape each model trains on (smallcnn: MNIST 1×28×28; resnet18: CIFAR 3×32×32), after
warm-up steps, median over the timed ones. Run on demand:

    .venv/bin/python benchmarks/precision.py [--steps 10] [--threads N] [--batch-size 128] [--archs smallcnn resnet18]

Prints the CPU (model and its bf16 flags), the precision ``auto`` resolves to on each device, and one row
an (arch, precision): ms a step and bf16's speed-up over fp32. Results also go to
benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from poisonlab.atomic import write_json
from poisonlab.models import build_model
from poisonlab.training.loop import autocast, pick_device
from poisonlab.training.precision import cpu_has_native_bf16, resolve_precision

INPUTS = {"smallcnn": (1, 28), "resnet18": (3, 32)}  # (channels, size) each arch trains on in the papers


def cpu_description() -> str:
    """The CPU's model name and which of the bf16-relevant flags it has (Linux; the platform elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine()
    lines = cpuinfo.read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    flags = set(next((line for line in lines if line.startswith("flags")), "").split())
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{model}; flags: " + ", ".join(f"{flag}{'' if flag in flags else ' (no)'}" for flag in wanted)


def step_milliseconds(arch: str, precision: str, device: torch.device, batch_size: int, steps: int) -> float:
    channels, size = INPUTS[arch]
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=channels, image_size=size).to(device)
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, channels, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    times = []
    for step in range(steps + 2):  # two warm-up steps: oneDNN picks and caches its kernels
        started = time.perf_counter()
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    print(f"CPU: {cpu_description()}")
    print(f"native bf16 on this CPU: {cpu_has_native_bf16()}; 'auto' resolves to "
          f"{resolve_precision('auto', 'cpu')} on the CPU"
          + (f", {resolve_precision('auto', 'cuda')} on CUDA" if torch.cuda.is_available() else ""))
    print(f"device {device}, {args.threads} thread(s), batch {args.batch_size}, median of {args.steps} steps")
    rows = []
    for arch in args.archs:
        times = {precision: step_milliseconds(arch, precision, device, args.batch_size, args.steps)
                 for precision in ("fp32", "bf16")}
        rows.append({"arch": arch, **{f"{p}_ms": t for p, t in times.items()},
                     "bf16_speedup": times["fp32"] / times["bf16"]})
        print(f"{arch:10s} fp32 {times['fp32']:8.1f} ms  bf16 {times['bf16']:8.1f} ms  "
              f"bf16 speed-up {times['fp32'] / times['bf16']:.2f}x")
    write_json(Path(__file__).parent / "results" / "precision.json",
               {"cpu": cpu_description(), "device": str(device), "threads": args.threads,
                "batch_size": args.batch_size, "auto_cpu": resolve_precision("auto", "cpu"), "rows": rows})


if __name__ == "__main__":
    main()
