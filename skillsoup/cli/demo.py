"""``skillsoup demo``: show, on a real model folder, that an injected state equals reading the
demonstrations, and what it saves."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
from rich.table import Table

from skillsoup.cli import app
from skillsoup.cli.common import console, quiet_libraries


def _demo_model_dir(tmp: Path) -> Path:
    """A small random Mamba checkpoint with a character tokenizer, saved like any HF checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast

    chars = ["<pad>", "<s>", "</s>", "<unk>"] + [chr(c) for c in range(32, 127)] + ["\n"]
    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()  # characters join back without spaces
    torch.manual_seed(0)
    config = MambaConfig(hidden_size=256, num_hidden_layers=4, state_size=16, vocab_size=len(chars),
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    MambaForCausalLM(config).save_pretrained(tmp)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp)
    return tmp


@app.command()
def demo(
    model: str = typer.Option(None, "--model", "-m", help="Checkpoint folder or hub id (default: a small random model)."),
) -> None:
    """Capture a state from demonstrations, inject it, and compare with reading them in the prompt."""
    quiet_libraries()
    import torch

    from skillsoup import load_model

    with tempfile.TemporaryDirectory() as tmp:
        m = load_model(model or _demo_model_dir(Path(tmp)))
        demos = "".join(f"Input: {w}\nOutput: {w.upper()}\n" for w in ["cat", "river", "lamp", "stone"] * 8)
        query = "Input: garden\nOutput:"
        demo_ids, query_ids = m.encode(demos), m.encode(query)
        t0 = time.perf_counter()
        state = m.capture(demo_ids)
        t_capture = time.perf_counter() - t0
        t0 = time.perf_counter()
        injected, _ = m.forward(query_ids, state, logits="last")
        t_injected = time.perf_counter() - t0
        t0 = time.perf_counter()
        in_prompt, _ = m.forward(demo_ids + query_ids, logits="last")
        t_prompt = time.perf_counter() - t0
        err = float((injected - in_prompt).norm() / in_prompt.norm())
        table = Table(title=f"{m.arch} model, {len(demo_ids)} demonstration tokens, {len(query_ids)} query tokens")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("capture demonstrations", f"{t_capture * 1e3:.1f} ms")
        table.add_row("query from injected state", f"{t_injected * 1e3:.1f} ms")
        table.add_row("demonstrations + query in the prompt", f"{t_prompt * 1e3:.1f} ms")
        table.add_row("speed-up of the query", f"{t_prompt / t_injected:.1f}x")
        table.add_row("relative logit difference", f"{err:.2e}")
        table.add_row("same next token", str(bool(torch.argmax(injected) == torch.argmax(in_prompt))))
        console.print(table)
