"""Model backends: Mamba / Mamba-2 with explicit, injectable state."""

from skillsoup.models.base import StateModel
from skillsoup.models.loading import load_model, model_fingerprint

__all__ = ["StateModel", "load_model", "model_fingerprint"]
