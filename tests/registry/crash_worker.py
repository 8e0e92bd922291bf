"""Run in a subprocess by test_registry_crash.py. For each crash point, a forked child commits two
skills to BASE/POINT, starts a second write and is killed with SIGKILL at that point (no cleanup, no
atexit, no flush: like kill -9). Forking after the imports and the model load keeps each case cheap.
Prints one line per point: ``POINT STATUS`` (STATUS is -9 when SIGKILL ended the child).

    python crash_worker.py MODEL BASE POINT [POINT ...]
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_helpers import make_skill  # noqa: E402

FIRST = ["s0", "s1"]
SECOND = ["s2", "s3", "s4"]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_call(owner, attr: str, n: int) -> None:
    """Replace ``owner.attr`` so that its ``n``-th call dies right after doing its work."""
    original = getattr(owner, attr)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        out = original(*args, **kwargs)
        if calls[0] == n:
            die()
        return out

    setattr(owner, attr, wrapper)


def scenario(registry_dir: str, model, point: str, report_fd: int | None = None) -> None:
    from skillsoup.registry import SkillRegistry
    from skillsoup.registry.index import SkillIndex
    from skillsoup.registry.store import StateStore

    if point != "external":  # commit skill by skill, to stop between the steps of one skill
        import skillsoup.registry.registry as registry_module

        registry_module._CHUNK = 1
    reg = SkillRegistry.open(registry_dir, embedder="hash:32")
    reg.add([make_skill(n) for n in FIRST], model)

    second, replace = [make_skill(n) for n in SECOND], False
    if point == "state-before-rename":  # s3's state bytes are in a temp file, not yet renamed
        original, calls = os.replace, [0]

        def replace_(src, dst, *a, **k):
            if str(dst).endswith(".safetensors"):
                calls[0] += 1
                if calls[0] == 2:  # s2's file, then s3's
                    die()
            return original(src, dst, *a, **k)

        os.replace = replace_
    elif point == "after-state":  # s3's state file is complete, nothing in the index
        kill_at_call(StateStore, "put", 2)
    elif point == "mid-demos":  # half of s3's demonstration rows are in the index
        from chromadb.api.models.Collection import Collection

        original_upsert, calls = Collection.upsert, [0]

        def upsert(self, ids, *args, **kwargs):
            if self.name == "demonstrations":
                calls[0] += 1
                if calls[0] == 2:
                    half = len(ids) // 2
                    original_upsert(self, ids[:half], *[a[:half] for a in args],
                                    **{k: v[:half] for k, v in kwargs.items()})
                    die()
            return original_upsert(self, ids, *args, **kwargs)

        Collection.upsert = upsert
    elif point == "after-demos":  # s3's state and demonstration rows are written, its skill row is not
        kill_at_call(SkillIndex, "put_demos_many", 2)
    elif point == "after-replace-commit":  # s0's new row is committed, its old rows and file remain
        second, replace = [make_skill("s0", n=3, description="version 2"), make_skill("s2")], True
        kill_at_call(SkillIndex, "put_skills", 1)
    elif point == "mid-remove":  # s1's skill row is deleted, its rows and file remain
        kill_at_call(SkillIndex, "delete_skill", 1)
        reg.remove("s1")
    elif point == "external":  # many skills in chunks of 32; the parent kills us in the second chunk
        second = [make_skill(f"x{i:02d}", n=6) for i in range(80)]

        def progress(done, total, name):
            os.write(report_fd, f"{name}\n".encode())

        reg.add(second, model, progress=progress)
    else:
        raise SystemExit(f"unknown crash point {point!r}")
    reg.add(second, model, replace=replace)


def run_forked(base: Path, model, point: str) -> int:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            scenario(str(base / point), model, point, write_fd)
        except BaseException as exc:  # noqa: BLE001  (report, then exit without cleanup)
            os.write(2, f"{point}: {exc!r}\n".encode())
            os._exit(3)
        os._exit(0)
    os.close(write_fd)
    if point == "external":
        with os.fdopen(read_fd) as lines:
            for line in lines:
                if line.strip() == "x45":
                    os.kill(pid, signal.SIGKILL)  # lands somewhere inside the next skills' writes
                    break
    else:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main() -> None:
    model_dir, base, *points = sys.argv[1:]
    import torch

    torch.set_num_threads(1)  # before any op: no thread pool to break the forks
    from skillsoup import load_model

    model = load_model(model_dir)
    for point in points:
        print(point, run_forked(Path(base), model, point), flush=True)


if __name__ == "__main__":
    main()
