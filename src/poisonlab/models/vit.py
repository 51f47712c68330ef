"""``vit-small``: a ViT-S (width 384, 6 heads, depth 12, MLP 1536) from torchvision's parts.

torchvision's ``VisionTransformer`` builds and initialises the layers; they are
then regrouped so ``body`` is a plain sequence of stages like every other arch:
patch embedding (+ class token, positions), the 12 encoder blocks, and the
final LayerNorm applied to the class token, whose output is the feature vector.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from poisonlab.models.base import MODELS, SMALL_IMAGE, Classifier, check_sizes
from poisonlab.registry import ConfigError

if TYPE_CHECKING:
    from torchvision.models import VisionTransformer

WIDTH, HEADS, DEPTH, MLP = 384, 6, 12, 1536


def patch_size(image_size: int) -> int:
    """4 px up to 64 px (CIFAR 8×8 tokens, MNIST 7×7); the ViT-S/16 patch above (ImageNet 14×14)."""
    return 4 if image_size <= SMALL_IMAGE else 16


class PatchEmbedding(nn.Module):
    """Image → token sequence: patches projected, class token prepended, positions added."""

    def __init__(self, vit: VisionTransformer, in_channels: int) -> None:
        super().__init__()
        self.image_size = vit.image_size
        self.conv_proj = nn.Conv2d(in_channels, WIDTH, vit.patch_size, stride=vit.patch_size)
        # The same init torchvision gives its own 3-channel projection.
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / (in_channels * vit.patch_size**2)))
        nn.init.zeros_(self.conv_proj.bias)
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            # Position embeddings fix the token count, so the input size is fixed too.
            raise ValueError(f"vit-small was built for {self.image_size}×{self.image_size} images, "
                             f"got {tuple(x.shape[-2:])}")
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        class_token = self.class_token.expand(x.shape[0], -1, -1)
        return self.dropout(torch.cat([class_token, tokens], dim=1) + self.pos_embedding)


class ClassTokenNorm(nn.Module):
    """Final LayerNorm on the class token only (the norm is per token, so this equals norm-then-select)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens[:, 0])


@MODELS.register("vit-small")
def vit_small(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # At least a 2×2 grid of 4-px patches.
    check_sizes("vit-small", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=8)
    patch = patch_size(image_size)
    if image_size % patch:
        raise ConfigError(
            f"arch 'vit-small': image_size must be a multiple of its patch size {patch}, got {image_size}; "
            "allowed: multiples of 4 from 8 to 64, multiples of 16 above 64"
        )
    from torchvision.models import VisionTransformer  # lazily: see models/__init__.py

    vit = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=DEPTH, num_heads=HEADS,
                            hidden_dim=WIDTH, mlp_dim=MLP)
    blocks = [(f"block{i + 1}", block) for i, block in enumerate(vit.encoder.layers)]
    stages = [("embed", PatchEmbedding(vit, in_channels)), *blocks, ("norm", ClassTokenNorm(vit.encoder.ln))]
    return Classifier(stages, WIDTH, num_classes)
