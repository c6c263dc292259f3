"""Frozen timm feature extractors, their registry and their weight sources."""

from uad.encoders.encoder import Encoder
from uad.encoders.registry import EncoderSpec, get_spec, list_encoders, register_encoder
from uad.encoders.weights import EncoderWeightsError

__all__ = ["Encoder", "EncoderSpec", "EncoderWeightsError", "get_spec", "list_encoders", "register_encoder"]
