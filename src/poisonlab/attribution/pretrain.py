"""One SSL pretraining run: container in, ``backbone.pt`` + ``metrics.json`` + an MLflow run out.

It lives in ``out_dir`` (the DAG's ``results/attribution/{dataset}/ssl/{method}/{arch}/seed{seed}/``)
and behaves as a ``train`` run does (``training.run``): the training images stay on the device as
uint8, an epoch is a seeded permutation in batches, two views of each batch are drawn on the device,
and after every epoch ``checkpoint.pt`` (model with its momentum encoder and memory bank, optimiser,
schedule, generator, history) and ``run_key`` let a killed run resume into the same MLflow run.
Each epoch's row holds the SSL loss and the kNN monitor's test accuracy; ``metrics.json`` is written
last, so its presence means the backbone is done.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from poisonlab import tracking
from poisonlab.atomic import torch_save, write_json
from poisonlab.attribution.features import backbone_features, save_backbone
from poisonlab.attribution.ssl import SSL_METHODS, SSLConfig, knn_accuracy, make_view
from poisonlab.data.container import ImageDataset
from poisonlab.models import build_model
from poisonlab.training.loop import DeviceData, autocast, load_checkpoint, pick_device, shuffled_batches, train_step
from poisonlab.training.precision import resolve_precision


def pretrain_ssl(dataset: ImageDataset, config: SSLConfig, out_dir: str | os.PathLike, *, seed: int = 0,
                 dataset_name: str = "dataset", device: str = "auto", progress: bool = True,
                 data_sha256: str = "") -> dict:
    """Train ``config.method`` on ``dataset``'s training images (labels only for the kNN monitor)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    torch_device = pick_device(device)
    recipe = config.scaled_recipe()
    precision = resolve_precision(recipe.precision, torch_device)
    data_sha256 = data_sha256 or hashlib.sha256(dataset.x_train.tobytes()).hexdigest()
    height, _, channels = dataset.image_shape

    torch.manual_seed(seed)  # initialisation and lightly's memory bank; every later draw is the generator's
    body = build_model(config.arch, num_classes=dataset.num_classes, in_channels=channels, image_size=height).body
    feature_dim = body(torch.zeros(2, channels, height, height)).shape[1]
    model = SSL_METHODS.build(config.method, body, feature_dim, **config.method_options).to(torch_device)
    data = DeviceData.from_container(dataset, torch_device)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    steps = -(-len(data.x_train) // recipe.batch_size)
    optimizer = recipe.make_optimizer([p for p in model.parameters() if p.requires_grad])
    scheduler = recipe.make_scheduler(optimizer, steps)
    fingerprint = {"config": config.to_dict(), "seed": seed, "data_sha256": data_sha256, "precision": precision}
    history, resumed_seconds = [], 0.0
    checkpoint = load_checkpoint(checkpoint_path, fingerprint)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        _load_unsaved_buffers(model, checkpoint["buffers"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        history, resumed_seconds = checkpoint["history"], checkpoint["wall_seconds"]

    name = f"{dataset_name}/ssl/{config.method}/{config.arch}/seed{seed}"
    tags = {**tracking.environment_tags(), "dataset_sha256": data_sha256, "precision_resolved": precision,
            "stage": "ssl-pretrain"}
    params = {"method": config.method, "arch": config.arch, "seed": seed, **config.method_options,
              **{f"views.{k}": v for k, v in config.to_dict()["views"].items()}, **recipe.to_dict()}
    started = time.perf_counter()
    with tracking.tracked_run(out_dir, resume=checkpoint is not None, experiment=tracking.experiment_name(dataset_name),
                              run_name=name, params=params, tags=tags) as run:
        for epoch in tqdm(range(len(history) + 1, recipe.epochs + 1), desc="ssl epochs", disable=not progress):
            epoch_started = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=torch_device)
            for batch in shuffled_batches(len(data.x_train), recipe.batch_size, generator, torch_device):
                x = data.x_train[batch].float() / 255
                # Views in [0, 1], then the dataset's standardisation (its statistics are on the 0–255 scale).
                x0, x1 = (data.normalize(255 * make_view(x, config.views, generator)) for _ in range(2))
                with autocast(torch_device, precision):
                    loss = model.loss(x0, x1)
                train_step(loss, optimizer, scheduler, recipe.grad_clip)
                loss_sum += loss.detach() * len(batch)
            row = {"epoch": epoch, "ssl_loss": loss_sum.item() / len(data.x_train),
                   "knn_acc": _monitor(model.backbone, data, config, precision),
                   "seconds": time.perf_counter() - epoch_started}
            history.append(row)
            run.log_epoch(row)
            torch_save({"fingerprint": fingerprint, "model": model.state_dict(), "buffers": _unsaved_buffers(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "history": history,
                        "wall_seconds": resumed_seconds + time.perf_counter() - started}, checkpoint_path)
        record = {
            "dataset": dataset_name, "method": config.method, "arch": config.arch, "seed": seed,
            "epochs": recipe.epochs, "final_ssl_loss": history[-1]["ssl_loss"], "knn_acc": history[-1]["knn_acc"],
            "history": history, "wall_seconds": resumed_seconds + time.perf_counter() - started,
            "device": str(torch_device), "precision": precision, "run_key": run.key,
            "git_commit": tags["git_commit"], "config": config.to_dict(), "dataset_sha256": data_sha256,
            "feature_dim": int(feature_dim),
            "versions": {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")},
        }
        run.log_summary({"knn_acc": record["knn_acc"], "final_ssl_loss": record["final_ssl_loss"],
                         "wall_seconds": record["wall_seconds"]})
        save_backbone(out_dir / "backbone.pt", model.backbone, arch=config.arch, in_channels=channels,
                      image_size=height, mean=data.mean, std=data.std)
        write_json(out_dir / "metrics.json", record)
    checkpoint_path.unlink()
    return record


def _monitor(backbone: torch.nn.Module, data: DeviceData, config: SSLConfig, precision: str) -> float:
    """kNN accuracy (%) of the test images against the training images in the backbone's feature space."""
    train = backbone_features(backbone, data.x_train, data.normalize, precision=precision)
    test = backbone_features(backbone, data.x_test, data.normalize, precision=precision)
    return knn_accuracy(train, data.y_train, test, data.y_test, data.num_classes, k=config.knn_k, t=config.knn_t)


def _unsaved_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers ``state_dict`` leaves out (lightly's memory bank and its pointer are non-persistent), which a
    resumed run needs to continue exactly where the killed one stopped."""
    saved = model.state_dict()
    return {name: buffer.detach().clone() for name, buffer in model.named_buffers() if name not in saved}


def _load_unsaved_buffers(model: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    for name, buffer in model.named_buffers():
        if name in buffers:
            buffer.copy_(buffers[name])
