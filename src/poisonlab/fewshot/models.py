"""Conv-4 ProtoNet and AutoProtoNet: encoder, optional decoder, ProtoNet head with a learnable scale.

From the repository (psandovalsegura/AdversarialQuerying @ 9992e0eb, ``models/autoprotonet.py``,
``models/protonet_embedding.py``, ``models/classification_heads.py``), written here from its description:

- encoder: 4 × [Conv3×3 (no bias) → BN → LeakyReLU(0.1) → MaxPool 2], 64 channels; the embedding is the
  flattened last map (64×2×2 = 256-d at 32 px, 64×5×5 = 1,600-d at 84 px);
- decoder (``conv4-ae`` only): 4 × [ConvTranspose 2×2 stride 2 → BN → Conv3×3 (no bias) → ReLU],
  64→64→64→64→C channels, so reconstructions are ≥ 0 like the unnormalised [0, 1] inputs;
- head: prototypes are the mean support embedding a class; logits = scale · (−‖q − c‖² / d), d the
  embedding's size, ``scale`` a learnable scalar starting at 1.0;
- inputs are pixels / 255, not standardised (the repository's ``Normalize`` is commented out), so the
  reconstruction target is the input itself.

Chosen here: the decoder's ``output_padding`` per block is derived from the encoder's map sizes, so a decoded
image always has the input's size. At 84 px this is the repository's ``output_padding=1`` on the second
block (5→10→21→42→84), at 32 px none (2→4→8→16→32), and at 28 px (MNIST unpadded) the first two
(1→3→7→14→28).

Initialisation follows the two repository classes: ``conv4`` (its ``ProtoNetEmbedding``) draws conv weights
from N(0, 2/(9·out_channels)); ``conv4-ae`` (its ``AutoProtoNetEmbedding``, where that loop is commented
out) keeps PyTorch's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.registry import ConfigError, Registry

WIDTH = 64  # h_dim = z_dim = 64
BLOCKS = 4
LEAKY_SLOPE = 0.1  # the repository's --activation LeakyReLU default
MIN_IMAGE_SIZE = 2 ** BLOCKS  # each pool needs at least 2 px to halve

FEWSHOT_ARCHS: Registry[Callable[..., ProtoNet]] = Registry("few-shot arch")


def map_sizes(image_size: int) -> list[int]:
    """Side of the feature map before and after each encoder block: [image_size, …, embedding side]."""
    sizes = [image_size]
    for _ in range(BLOCKS):
        sizes.append(sizes[-1] // 2)  # MaxPool2d(2) floors
    return sizes


def _encoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.MaxPool2d(2),
    )


def _decoder_block(in_channels: int, out_channels: int, output_padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, output_padding=output_padding),
        nn.BatchNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
    )


def class_prototypes(support: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Mean support embedding a class: (E, S, D) embeddings, (E, S) labels 0..way-1 → (E, way, D)."""
    one_hot = F.one_hot(labels, way).to(support.dtype).transpose(1, 2)  # (E, way, S)
    return one_hot @ support / one_hot.sum(2, keepdim=True)


def negative_distance(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """−‖q − c‖² / d for every query and prototype: (E, Q, D), (E, N, D) → (E, Q, N).

    Expanded as ‖q‖² − 2 q·c + ‖c‖², as the repository does: one batched matrix product, no (E, Q, N, D)
    difference tensor (3.8 GB for a 20-way 84-px training batch of 8 episodes).
    """
    squared = (query.square().sum(2, keepdim=True) - 2 * query @ prototypes.transpose(1, 2)
               + prototypes.square().sum(2).unsqueeze(1))
    return -squared / query.shape[2]


class ProtoNet(nn.Module):
    """A Conv-4 embedding with the ProtoNet head, and a decoder when it is an AutoProtoNet."""

    def __init__(self, in_channels: int, image_size: int, *, decoder: bool) -> None:
        super().__init__()
        sizes = map_sizes(image_size)
        channels = (in_channels, *[WIDTH] * BLOCKS)
        self.encoder = nn.Sequential(*[_encoder_block(channels[i], channels[i + 1]) for i in range(BLOCKS)])
        self.embedding_shape = (WIDTH, sizes[-1], sizes[-1])
        self.decoder = None
        if decoder:
            # Block j doubles side sizes[B-j] up to sizes[B-j-1]: 2·s + output_padding.
            paddings = [sizes[BLOCKS - j - 1] - 2 * sizes[BLOCKS - j] for j in range(BLOCKS)]
            out = (*[WIDTH] * (BLOCKS - 1), in_channels)
            self.decoder = nn.Sequential(*[_decoder_block(WIDTH, out[j], paddings[j]) for j in range(BLOCKS)])
        self.scale = nn.Parameter(torch.ones(1))  # the head's learnable scale, initialised to 1.0

    @property
    def embedding_dim(self) -> int:
        return math.prod(self.embedding_shape)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) → flat embeddings (B, D)."""
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Flat embeddings (B, D) → images (B, C, H, W); only an AutoProtoNet has a decoder."""
        if self.decoder is None:
            raise ConfigError("this few-shot model has no decoder (arch conv4); decoding needs conv4-ae")
        return self.decoder(z.view(-1, *self.embedding_shape))

    def logits(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """The head: scale · (−‖q − c‖² / d), (E, Q, D) and (E, N, D) → (E, Q, N)."""
        return self.scale * negative_distance(query, prototypes)


def _check_sizes(arch: str, in_channels: int, image_size: int) -> None:
    for field, value, minimum in (("in_channels", in_channels, 1), ("image_size", image_size, MIN_IMAGE_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"few-shot arch '{arch}': {field} must be an integer >= {minimum}, got {value!r}")


@FEWSHOT_ARCHS.register("conv4")
def conv4(*, in_channels: int, image_size: int) -> ProtoNet:
    """ProtoNet's Conv-4 (the repository's ``ProtoNetEmbedding`` with LeakyReLU), no decoder."""
    _check_sizes("conv4", in_channels, image_size)
    model = ProtoNet(in_channels, image_size, decoder=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # N(0, 2/n), n = k·k·out_channels: the repository's ProtoNetEmbedding init.
            n = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / n))
    return model


@FEWSHOT_ARCHS.register("conv4-ae")
def conv4_ae(*, in_channels: int, image_size: int) -> ProtoNet:
    """AutoProtoNet's Conv-4 encoder + decoder (the repository's ``AutoProtoNetEmbedding``), default init."""
    _check_sizes("conv4-ae", in_channels, image_size)
    return ProtoNet(in_channels, image_size, decoder=True)


def build_fewshot_model(arch: str, *, in_channels: int, image_size: int) -> ProtoNet:
    """``arch`` untrained, its weights channels_last: measured on a 2-core CPU, Conv-4 on 1-channel 32-px
    images embeds 2.5–3× faster than in NCHW (the first conv, one input channel, is the slow one)."""
    model = FEWSHOT_ARCHS.build(arch, in_channels=in_channels, image_size=image_size)
    return model.to(memory_format=torch.channels_last)
