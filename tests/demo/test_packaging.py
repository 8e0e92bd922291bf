"""An installed wheel carries the demo model and every bundled skill file, and skillsoup.demo finds
them outside the repository (before, the wheel had no skill files at all)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from skillsoup.demo import DEMO_MODEL_DIR, SKILL_FOLDERS, model_dir, skills_dir
from skillsoup.errors import SkillFileError
from skillsoup.skills import SKILL_FILE_SUFFIXES, load_skills

REPO = Path(__file__).resolve().parents[2]


def test_the_bundled_folders_in_a_checkout():
    assert model_dir() == DEMO_MODEL_DIR and (model_dir() / "model.safetensors").is_file()
    assert skills_dir() == REPO / "skills" / "demo"
    assert [skills_dir(w) for w in SKILL_FOLDERS] == [REPO / "skills" / w for w in SKILL_FOLDERS]
    assert len(load_skills([skills_dir()])) == 16
    with pytest.raises(SkillFileError, match="no bundled skill folder 'demos'; choose one of demo, demo-alternates"):
        skills_dir("demos")


@pytest.mark.slow
def test_the_wheel_holds_the_model_and_the_skill_files_and_finds_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("skillsoup-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"skillsoup/bundled_skills/{p.relative_to(REPO / 'skills').as_posix()}"
               for p in (REPO / "skills").rglob("*") if p.suffix in SKILL_FILE_SUFFIXES}
    assert len(shipped) > 30 and shipped <= names, sorted(shipped - names)
    assert {f"skillsoup/demo_model/{p.name}" for p in DEMO_MODEL_DIR.iterdir() if p.is_file()} <= names

    site = tmp_path / "site"  # installed as pip would, away from the repository
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import skillsoup\nfrom skillsoup import load_model, load_skills\nfrom skillsoup.demo import model_dir, skills_dir\n"
            "m = load_model(model_dir())\nskills = load_skills([skills_dir()])\n"
            "print(skillsoup.__file__, model_dir(), skills_dir('pretrained'), m.arch, len(skills), sep='\\n')")
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    package, model, pretrained, arch, n_skills = ran.stdout.strip().splitlines()[-5:]
    assert Path(package).parent == site / "skillsoup"
    assert Path(model) == site / "skillsoup" / "demo_model" and Path(pretrained) == site / "skillsoup" / "bundled_skills" / "pretrained"
    assert (arch, n_skills) == ("mamba", "16")
