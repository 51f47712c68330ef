"""Epoch time of poisonlab's trainer against the DataLoader + PIL loop of the papers' repositories.

Same model (smallcnn unless --arch), data, batch size and augmentation (crop with padding 4 + flip) on both
sides; each side trains one epoch and scores the test set, then runs its data path alone
(loading + augmentation, no model). Run on demand:

    .venv/bin/python benchmarks/trainer_throughput.py [--epochs 2] [--workers 2] [--device auto]
        [--arch smallcnn] [--cifar-train 5000] [--skip-mnist]

The reference loop is written as the papers' repositories write theirs: a torchvision Dataset
that turns each uint8 array into a PIL image, torchvision PIL transforms, a shuffling
DataLoader with worker processes. Results go to stdout and benchmarks/results/trainer_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from poisonlab.atomic import write_json
from poisonlab.data import build_dataset
from poisonlab.models import build_model
from poisonlab.training import DeviceData, Recipe, build_augmentations, evaluate, fit, pick_device

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


class ArrayDataset(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__: array → PIL image → transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index].squeeze(-1) if self.images.shape[-1] == 1 else self.images[index])
        return self.transform(image), int(self.labels[index])


def reference_loaders(dataset, batch_size: int, workers: int):
    channels = dataset.image_shape[2]
    mean, std = [0.5] * channels, [0.25] * channels
    train_tf = T.Compose([T.RandomCrop(dataset.image_shape[0], padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    loader = dict(batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    return (torch.utils.data.DataLoader(ArrayDataset(dataset.x_train, dataset.y_train, train_tf), shuffle=True,
                                        **loader),
            torch.utils.data.DataLoader(ArrayDataset(dataset.x_test, dataset.y_test, test_tf), **loader))


def reference_epoch(model, train_loader, test_loader, device) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for x, y in test_loader:
            model(x.to(device)).argmax(1).eq(y.to(device)).sum().item()


def measure(name: str, dataset, *, arch: str, epochs: int, batch_size: int, workers: int,
            device: torch.device) -> dict:
    height, _, channels = dataset.image_shape
    recipe = Recipe.from_dict({"epochs": epochs, "batch_size": batch_size, "lr": 0.05, "schedule": "constant",
                               "augment": {"crop": {"padding": 4}, "flip": {}}})

    def new_model():
        torch.manual_seed(0)
        return build_model(arch, num_classes=dataset.num_classes, in_channels=channels,
                           image_size=height).to(device)

    train_loader, test_loader = reference_loaders(dataset, batch_size, workers)
    reference_epoch(new_model(), train_loader, test_loader, device)  # warm-up: worker start, allocator
    model = new_model()
    started = time.perf_counter()
    for _ in range(epochs):
        reference_epoch(model, train_loader, test_loader, device)
    reference_seconds = (time.perf_counter() - started) / epochs

    started = time.perf_counter()
    for _ in range(epochs):
        for x, y in train_loader:
            x.to(device), y.to(device)
    reference_data_seconds = (time.perf_counter() - started) / epochs

    data = DeviceData.from_container(dataset, device)
    fit(new_model(), data, Recipe.from_dict({**recipe.to_dict(), "epochs": 1}), seed=0, progress=False)  # warm-up
    result = fit(new_model(), data, recipe, seed=0, progress=False)
    ours_seconds = float(np.mean([row["seconds"] for row in result.history]))

    augmentations = build_augmentations(recipe.augment)
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    for _ in range(epochs):
        for x, _, _ in data.training_batches(batch_size, augmentations, generator):
            data.normalize(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    ours_data_seconds = (time.perf_counter() - started) / epochs

    n = len(dataset.x_train)
    row = {
        "dataset": name, "arch": arch, "train_images": n, "batch_size": batch_size, "workers": workers, "device": str(device),
        "reference_epoch_s": reference_seconds, "ours_epoch_s": ours_seconds,
        "reference_images_per_s": n / reference_seconds, "ours_images_per_s": n / ours_seconds,
        "epoch_speedup": reference_seconds / ours_seconds,
        "reference_data_images_per_s": n / reference_data_seconds, "ours_data_images_per_s": n / ours_data_seconds,
        "data_path_speedup": reference_data_seconds / ours_data_seconds,
    }
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cifar", default=str(SHARED_CIFAR), help="cifar10-jpeg tarball or folder")
    parser.add_argument("--cifar-train", type=int, default=5000)
    parser.add_argument("--arch", default="smallcnn", help="any registered arch, e.g. resnet18 on a GPU")
    parser.add_argument("--skip-mnist", action="store_true", help="only the cifar10-jpeg measurement")
    args = parser.parse_args()
    device = pick_device(args.device)
    settings = dict(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
                    device=device)

    rows = [] if args.skip_mnist else [measure("mnist5k", build_dataset("mnist5k"), **settings)]
    if Path(args.cifar).exists():
        cifar = build_dataset("cifar10-jpeg", options={"path": args.cifar},
                              subset={"train": args.cifar_train, "test": 1000})
        rows.append(measure(f"cifar10-jpeg[{args.cifar_train}]", cifar, **settings))
    else:
        print(f"skipping cifar10-jpeg: {args.cifar} not found")
    write_json(Path(__file__).parent / "results" / "trainer_throughput.json", rows)


if __name__ == "__main__":
    main()
