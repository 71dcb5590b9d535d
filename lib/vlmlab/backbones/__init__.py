"""Backbones: the tiny pretrained LM, CL ViT and MIM ViT, their cache, and loaders for real checkpoints."""
from .real import load_real_backbones
from .store import KINDS, Backbones, ensure_backbones, load_backbones
from .vision import MAEDecoder, VisionEncoder

__all__ = ["Backbones", "ensure_backbones", "load_backbones", "KINDS", "VisionEncoder", "MAEDecoder", "load_real_backbones"]
