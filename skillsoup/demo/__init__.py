"""The bundled demo model's world: its skills and corpus (``corpus``) and its character tokenizer
(``tokenizer``). The trained checkpoint lives in ``skillsoup/demo_model/`` and is made by
``scripts/train_demo_model.py``."""

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "demo_model"

__all__ = ["DEMO_MODEL_DIR"]
