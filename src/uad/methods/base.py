"""What every method's network shares: a frozen encoder, a trainable part, and one typed output.

A network is a plain `nn.Module`, free of Lightning, so that training (`uad.module.AnomalyModule`),
prediction, export and the import of official checkpoints all work on the same object. It is split in two
at the frozen/trainable boundary:

- `extract(images) -> Features`: everything the frozen encoder computes, reduced to exactly what the
  trainable part consumes (a named set of tensors: a feature cache can store it);
- `reconstruct(features, size) -> NetOutput`: the trainable part, with the method's training-time noise,
  ending in the anomaly map at `size`.

`forward(images)` chains the two; `loss(output, step)` is the method's objective.

A memory-bank method (PatchCore) is fitted, not trained by gradients: it subclasses `MemoryBankNet`, whose
`fit(features, class_id)` builds the bank from the features of every training image at once (the
`AnomalyModule` collects them over one epoch, from every rank under DDP, and calls `fit` from Lightning's
`on_train_epoch_end` hook). A network that keeps one bank per class sets `uses_class_id`:
`forward(images, class_id)` then hands the batch's class ids (B,) to `reconstruct` as `features["class_id"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec

UNKNOWN_CLASS = -1  # the class id of an image outside the trained classes (a per-class net searches all)
Features = dict[str, Tensor]  # what the trainable part consumes, by name; all tensors batch-first


@dataclass
class NetOutput:
    """A network's output: the anomaly map, the network's own image score when its paper defines one (the
    protocol uses it with `score: net`; None: the protocol scores the map), plus the named intermediate
    tensors its loss needs and `mode=describe` prints. `output["name"]` reads any of them."""

    anomaly_map: Tensor  # (B, 1, H, W) at the input resolution, float32
    tensors: dict[str, Any] = field(default_factory=dict)
    image_score: Tensor | None = None  # (B,)

    def __getitem__(self, name: str) -> Any:
        if name in ("anomaly_map", "image_score"):
            return getattr(self, name)
        return self.tensors[name]

    def maps(self) -> dict[str, Tensor]:
        """Every map the network offers, by name: `anomaly_map` (its own) and each (B, 1, h, w) tensor among
        the named ones (the protocol's `map_name` chooses one to evaluate)."""
        batch = self.anomaly_map.shape[0]
        named = {
            name: t
            for name, t in self.tensors.items()
            if isinstance(t, Tensor) and t.ndim == 4 and t.shape[:2] == (batch, 1)
        }
        return {"anomaly_map": self.anomaly_map, **named}


class AnomalyNet(nn.Module):
    """Base network: a frozen `Encoder` plus the trainable modules a subclass adds.

    Subclasses implement `extract`, `reconstruct` and `loss`; optionally the classmethod `default_taps`.
    The encoder has no trainable parameters and stays in eval mode (`Encoder.train` ignores the flag).
    """

    uses_class_id: bool = False  # True: `reconstruct` reads features["class_id"] (B,), or None when unknown
    cnn_variant: type[AnomalyNet] | None = None  # the subclass that `cls(encoder)` builds on a CNN encoder

    def __new__(cls, *args: Any, **kwargs: Any) -> AnomalyNet:
        """`cls(cnn_encoder, ...)` builds `cls.cnn_variant` where the class itself names one (the papers of
        Dinomaly and ViTAD define ViT models; their CNN variants are this suite's), as `pathlib.Path(...)`
        builds a `PosixPath`: one config `_target_` serves every backbone, and the paper's code has no
        branch."""
        encoder = kwargs.get("encoder", args[0] if args else None)  # none when a copy or pickle rebuilds it
        variant = cls.__dict__.get("cnn_variant")  # the class's own: its subclasses build themselves
        if variant is not None and encoder is not None and encoder.spec.kind == "cnn":
            cls = variant
        return super().__new__(cls)

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...] | None:
        """Encoder taps this method wants for `spec` when `backbone.taps` is not set (None: the spec's)."""
        return None

    # -- the method's own part --------------------------------------------------------------------

    def extract(self, images: Tensor) -> Features:
        raise NotImplementedError

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        raise NotImplementedError

    def loss(self, output: NetOutput, step: int = 0) -> Tensor | dict[str, Tensor]:
        """Scalar loss, or a dict whose "loss" entry is optimised (the others are logged). `step` is the
        optimiser step, for schedules inside the loss (Dinomaly's hard-mining ramp)."""
        raise NotImplementedError

    # -- shared behaviour -------------------------------------------------------------------------

    def forward(self, images: Tensor, class_id: Tensor | None = None) -> NetOutput:
        """The map of `images`; `class_id` (B,) reaches `reconstruct` only in a net that `uses_class_id`."""
        with torch.no_grad():
            features = self.extract(images)
        if self.uses_class_id:
            features = {**features, "class_id": class_id}
        return self.reconstruct(features, tuple(images.shape[-2:]))

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {name: module for name, module in self.named_children() if name != "encoder"}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The state a checkpoint carries: everything but the frozen encoder (rebuilt from its weights)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    @torch.no_grad()
    def parameter_counts(self) -> dict[str, Any]:
        per_module = {
            name: sum(p.numel() for p in module.parameters() if p.requires_grad)
            for name, module in self.trainable_modules().items()
        }
        return {
            "trainable_params": sum(p.numel() for p in self.trainable_parameters()),
            "frozen_params": sum(p.numel() for p in self.parameters() if not p.requires_grad),
            "per_module": {k: v for k, v in per_module.items() if v},
        }


class MemoryBankNet(AnomalyNet):
    """A network fitted in one pass without gradients: `fit` builds its bank from the training features.
    The bank is part of its state (buffers), so checkpoints carry it like trained weights. It has no loss.
    Any caller can fit it: `net.fit(net.extract(images), class_id)`."""

    def fit(self, features: Features, class_id: Tensor) -> None:
        """Build the bank from `features` (from `extract`, the N training images in a fixed order: the
        dataset's) and their class ids (N,), replacing any earlier bank."""
        raise NotImplementedError

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        raise TypeError(f"{type(self).__name__} is fitted from its training features; it has no loss")
