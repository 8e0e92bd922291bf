"""Importing skillsoup_kernels without triton raises ImportError (what dispatch catches), not another error."""

from __future__ import annotations

import subprocess
import sys


def test_import_without_triton_raises_import_error():
    code = (
        "import sys\n"
        "sys.modules['triton'] = None  # as if triton were not installed\n"
        "try:\n"
        "    import skillsoup_kernels\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ImportError: skillsoup_kernels needs triton" in done.stdout
    assert "pip install -e .[triton]" in done.stdout
