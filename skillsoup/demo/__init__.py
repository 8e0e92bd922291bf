"""The bundled demo model's world: its skills and corpus (``corpus``) and its character tokenizer
(``tokenizer``). The trained checkpoint lives in ``skillsoup/demo_model/`` and is made by
``scripts/train_demo_model.py``.

Where the bundled files are, in a checkout and in an installed wheel alike:

    from skillsoup.demo import model_dir, skills_dir
    model = skillsoup.load_model(model_dir())                 # the demo checkpoint folder
    skills = skillsoup.load_skills([skills_dir()])            # its 16 skills ("demo")
    skills_dir("demo-alternates"), skills_dir("pretrained")   # other answer formats; skills for real models
"""

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "demo_model"
SKILL_FOLDERS = ("demo", "demo-alternates", "pretrained")


def model_dir() -> Path:
    """The bundled demo model's folder (a Hugging Face checkpoint with its tokenizer)."""
    from skillsoup.errors import ModelLoadError

    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise ModelLoadError(f"the demo model is missing from {DEMO_MODEL_DIR}; reinstall skillsoup, or train it with "
                             "python scripts/train_demo_model.py")
    return DEMO_MODEL_DIR


def skills_dir(which: str = "demo") -> Path:
    """A folder of bundled skill files: "demo" (the demo model's 16 skills), "demo-alternates" (the
    other answer format of each of them) or "pretrained" (skills written for real checkpoints)."""
    from skillsoup.errors import SkillFileError
    from skillsoup.skills.loader import bundled_skills_root

    if which not in SKILL_FOLDERS:
        raise SkillFileError(f"no bundled skill folder {which!r}; choose one of {', '.join(SKILL_FOLDERS)}")
    root = bundled_skills_root()
    if root is None or not (root / which).is_dir():
        raise SkillFileError(f"the bundled skill files ({which}/) are missing; reinstall skillsoup, or pass your own "
                             "skill folder")
    return root / which


__all__ = ["DEMO_MODEL_DIR", "SKILL_FOLDERS", "model_dir", "skills_dir"]
