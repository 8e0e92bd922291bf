"""skillsoup: route agent skills by retrieving and mixing Mamba states (State Soup)."""

import logging

from skillsoup.errors import SkillsoupError
from skillsoup.mixing import mix, mix_ref
from skillsoup.models import StateModel, load_model
from skillsoup.state import SkillState

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["SkillState", "SkillsoupError", "StateModel", "load_model", "mix", "mix_ref", "__version__"]
