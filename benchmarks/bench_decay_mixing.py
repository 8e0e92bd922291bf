"""How close decay mixing of demonstration chunks comes to one pass, on the bundled demo model.

For each demo skill: chunks = its rendered demonstrations, read after BOS (as skill states are).
Every method is compared with one pass over BOS + all demonstrations (the skill state):
  decay        mix_decay(capture_chunks(..., context="previous"))  (exact for one layer)
  decay-none   mix_decay(capture_chunks(..., context="none"))      (chunks read independently)
  mean         plain State Soup mixing: equal-weight mix of each demonstration's own state
  last         the state after BOS + the last demonstration only
Columns: relative ssm error per layer (mean over skills), max |logit difference| for the first answer
token over skills x probe queries, how often that top token agrees with the one pass's, and how
often the whole greedy answer is the one pass's. Usage:
    python benchmarks/bench_decay_mixing.py [--demos 8] [--probes 5] [--skills N]
"""

from __future__ import annotations

import argparse
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("decay", "decay-none", "mean", "last")


def method_states(model, skill, start):
    from skillsoup import mix
    from skillsoup.models.chunks import capture_chunks
    from skillsoup.states.decay import mix_decay

    chunks = [skill.render_demonstration(d) for d in skill.demonstrations]
    own = [model.capture(model.encode(c), start) for c in chunks]  # each demonstration after BOS
    return {
        "decay": mix_decay(capture_chunks(model, chunks, start=start)),
        "decay-none": mix_decay(capture_chunks(model, chunks, context="none", start=start)),
        "mean": mix(own, [1.0] * len(own)),
        "last": own[-1],
    }, chunks


def answer(model, skill, probe: str, state) -> str:
    """Greedy answer to one rendered query, cut at the skill's stop strings."""
    return "".join(model.generate(probe, state, max_new_tokens=32, temperature=0, stop=skill.stop_strings()))


def measure(model, skills, n_probes: int):
    """-> {method: (per-layer mean ssm rel error, max |logit diff|, top-1 agreement, same answer)}."""
    from skillsoup.models.chunks import chunk_ids

    start = model.neutral_state()
    errors = {m: [] for m in METHODS}
    diffs = {m: 0.0 for m in METHODS}
    agree = {m: [] for m in METHODS}
    same = {m: [] for m in METHODS}
    for skill in skills:
        states, chunks = method_states(model, skill, start)
        one_pass = model.capture(chunk_ids(model, chunks), start)
        probes = [skill.render_query(t.input) for t in skill.tests[:n_probes]]
        want = [model.forward(p, one_pass, logits="last")[0] for p in probes]
        answers = [answer(model, skill, p, one_pass) for p in probes]
        for name, state in states.items():
            errors[name].append([float((a - b).norm() / b.norm()) for a, b in zip(state.ssm, one_pass.ssm)])
            for p, w in zip(probes, want):
                got = model.forward(p, state, logits="last")[0]
                diffs[name] = max(diffs[name], float((got - w).abs().max()))
                agree[name].append(float(got.argmax() == w.argmax()))
            for p, w in zip(probes, answers):
                same[name].append(float(answer(model, skill, p, state) == w))
    return {
        m: (torch.tensor(errors[m]).mean(0).tolist(), diffs[m], sum(agree[m]) / len(agree[m]),
            sum(same[m]) / len(same[m])) for m in METHODS
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, default=8, help="demonstrations (chunks) per skill")
    parser.add_argument("--probes", type=int, default=5, help="held-out queries per skill")
    parser.add_argument("--skills", type=int, default=0, help="first N demo skills (0 = all)")
    args = parser.parse_args(argv)

    from skillsoup import load_model
    from skillsoup.demo import DEMO_MODEL_DIR, corpus

    torch.set_num_threads(1)
    model = load_model(DEMO_MODEL_DIR)
    names = [s.name for s in corpus.SKILLS][: args.skills or None]
    skills = [corpus.skill_object(n, n_demos=args.demos, n_tests=args.probes) for n in names]
    results = measure(model, skills, args.probes)
    layers = " | ".join(f"ssm err L{i}" for i in range(model.num_layers))
    print(f"demo model ({model.num_layers} layers), {len(skills)} skills x {args.demos} demonstrations, "
          f"{args.probes} probe queries each; errors vs one pass over BOS + all demonstrations")
    print(f"| method | {layers} | max abs logit diff | top-1 agrees | same greedy answer |")
    print("|---" * (model.num_layers + 4) + "|")
    for m, (errs, diff, agree, same) in results.items():
        print(f"| {m} | " + " | ".join(f"{e:.2e}" for e in errs) + f" | {diff:.3g} | {agree:.0%} | {same:.0%} |")
    return results


if __name__ == "__main__":
    main()
