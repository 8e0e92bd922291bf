"""Model backends with explicit, injectable state: Mamba, Mamba-2, FalconMamba (skillsoup's own
forward) and the hybrids Jamba, Zamba2, GraniteMoeHybrid, NemotronH, FalconH1, Qwen3-Next, Qwen3.5
(transformers' model from a rebuilt cache); :mod:`skillsoup.models.architectures` is the table."""

from skillsoup.models.base import StateModel
from skillsoup.models.loading import load_model, model_fingerprint

__all__ = ["StateModel", "load_model", "model_fingerprint"]
