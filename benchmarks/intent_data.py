"""Public intent datasets for the routing benchmark, and the protocol that turns one into skills,
a labelled fit set and a test set (used by bench_routing_real.py).

The data is read from a cache folder outside git (``--data DIR``), filled once with:

    git clone https://github.com/clinc/oos-eval DIR/oos-eval                               # CC BY 3.0
    git clone https://github.com/PolyAI-LDN/task-specific-datasets DIR/task-specific-datasets  # CC BY 4.0
    git clone https://github.com/xliuhw/NLU-Evaluation-Data DIR/NLU-Evaluation-Data        # CC BY 4.0

(the last one holds two large CSV files that are not needed; only ``CrossValidation/`` is read).

Datasets:
    clinc150   150 intents; its own out-of-scope queries are the "no skill" queries (Larson et al. 2019)
    banking77  77 fine-grained banking intents (Casanueva et al. 2020)
    hwu64      64 home-assistant intents, the KFold_1 split (Liu et al. 2019)

Protocol (seeded; every choice is made on the train split, the test split is only evaluated):
    - datasets without out-of-scope queries hold ``n_held_out`` intents out entirely: their queries
      are "no skill"; half of them give the fit set's nulls, the other half appear only in the test
    - each remaining intent becomes a skill with ``n_demos`` demonstrations from the train split and
      a description made from its name ("card_arrival" -> "card arrival")
    - the fit set: ``n_fit`` more train queries per skill, plus nulls making ``null_share`` of it
    - the test set: the test split's queries of the skills, and every null query of the test split
      (clinc150: its out-of-scope test queries; others: the held-out intents' test queries)
    - ``split="dev"`` replaces the test split by queries of the train split that neither the
      demonstrations nor the fit set use (clinc150: its validation split), for development
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("clinc150", "banking77", "hwu64")
HWU_FOLD = "NLU-Evaluation-Data/CrossValidation/autoGeneFromRealAnno/autoGene_2018_03_22-13_01_25_169/CrossValidation/KFold_1"

Pair = tuple[str, "str | None"]  # (query, intent or None)


@dataclass(frozen=True)
class RawDataset:
    name: str
    train: list[Pair]  # intent None: out of scope
    test: list[Pair]
    dev: list[Pair] | None = None  # a validation split, when the dataset has one


@dataclass(frozen=True)
class Task:
    """One dataset under the protocol: skills (name -> (description, demonstration inputs)), the
    labelled fit set and the evaluation set, as {"query", "skill"} dicts (skill None: no skill)."""

    name: str
    skills: dict[str, tuple[str, list[str]]]
    fit: list[dict]
    test: list[dict]
    held_out: tuple[str, ...]  # intents with no skill


class DataMissing(Exception):
    pass


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissing(f"{path} is missing; fill the data folder as the docstring of benchmarks/intent_data.py says")
    return path


def load(name: str, root: Path) -> RawDataset:
    root = Path(root)
    if name == "clinc150":
        data = json.loads(_need(root / "oos-eval/data/data_full.json").read_text(encoding="utf-8"))

        def part(split: str) -> list[Pair]:
            return [(q, i) for q, i in data[split]] + [(q, None) for q, _ in data[f"oos_{split}"]]

        return RawDataset(name, part("train"), part("test"), part("val"))
    if name == "banking77":
        def rows(split: str) -> list[Pair]:
            with _need(root / f"task-specific-datasets/banking_data/{split}.csv").open(encoding="utf-8", newline="") as f:
                return [(r["text"], r["category"]) for r in csv.DictReader(f)]

        return RawDataset(name, rows("train"), rows("test"))
    if name == "hwu64":
        fold = _need(root / HWU_FOLD)

        def read(folder: Path) -> list[Pair]:
            out = []
            for path in sorted(folder.glob("*.csv")):
                with path.open(encoding="utf-8", newline="") as f:
                    for r in csv.DictReader(f, delimiter=";"):
                        text = (r.get("answer_from_anno") or "").strip()
                        if text:
                            out.append((text, f"{r['scenario']}_{r['intent']}"))
            return out

        return RawDataset(name, read(fold / "trainset"), read(fold / "testset/csv"))
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def skill_name(intent: str) -> str:
    return intent.lower().replace(" ", "_").replace("-", "_")


def make_task(raw: RawDataset, n_demos: int = 10, n_fit: int = 20, null_share: float = 0.03,
              n_held_out: int = 10, split: str = "test", seed: int = 0) -> Task:
    rng = random.Random(seed)
    by_intent: dict[str | None, list[str]] = defaultdict(list)
    for q, i in raw.train:
        by_intent[i].append(q)
    intents = sorted(i for i in by_intent if i is not None)
    has_oos = None in by_intent
    held = [] if has_oos else rng.sample(intents, n_held_out)
    in_fit_held, test_only_held = held[: len(held) // 2], held[len(held) // 2 :]
    skills, fit, leftover = {}, [], []
    for intent in intents:
        if intent in held:
            continue
        pool = list(by_intent[intent])
        rng.shuffle(pool)
        demos, queries = pool[:n_demos], pool[n_demos : n_demos + n_fit]
        leftover += [{"query": q, "skill": skill_name(intent)} for q in pool[n_demos + n_fit :]]
        skills[skill_name(intent)] = (intent.replace("_", " "), demos)
        fit += [{"query": q, "skill": skill_name(intent)} for q in queries]
    null_pool = list(by_intent[None]) if has_oos else [q for i in in_fit_held for q in by_intent[i]]
    rng.shuffle(null_pool)
    n_null = round(len(fit) * null_share / (1 - null_share))
    fit += [{"query": q, "skill": None} for q in null_pool[:n_null]]
    rng.shuffle(fit)

    if split == "test":
        pairs = raw.test
        test = [{"query": q, "skill": None if (i is None or i in held) else skill_name(i)} for q, i in pairs]
    elif split == "dev":
        if raw.dev is not None:
            test = [{"query": q, "skill": None if i is None else skill_name(i)} for q, i in raw.dev]
        else:  # unused train queries of the skills, and of the held-out intents (all of the test-only ones)
            rng.shuffle(leftover)
            per_skill: dict[str, int] = defaultdict(int)
            test = []
            for row in leftover:
                if per_skill[row["skill"]] < 20:
                    per_skill[row["skill"]] += 1
                    test.append(row)
            test += [{"query": q, "skill": None} for i in test_only_held for q in by_intent[i][:40]]
            test += [{"query": q, "skill": None} for q in null_pool[n_null : n_null + 20 * len(in_fit_held)]]
    else:
        raise ValueError(f"split is 'test' or 'dev', got {split!r}")
    return Task(raw.name, skills, fit, test, tuple(held))
