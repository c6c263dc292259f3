"""Frozen timm feature extractors, their registry and their weight sources (imported on first use:
`uad.utils.lazy`; the registry alone does not import timm)."""

from uad.utils.lazy import lazy_exports

_EXPORTS = {
    "Encoder": "uad.encoders.encoder",
    **dict.fromkeys(
        ("EncoderSpec", "get_spec", "list_encoders", "register_encoder"), "uad.encoders.registry"
    ),
    "EncoderWeightsError": "uad.encoders.weights",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
