"""State features: a SkillState -> one plain vector, for state routing (the State Soup retrieval idea).

This is the only routing module that touches tensors; the router gets numpy vectors from it.

The feature (``FEATURE``):
    layers   the last half of the recurrent layers (``range(L // 2, L)`` of the L layers holding a
             recurrent state; all of them for L = 1): the upper layers carry more of the task, the
             lower ones more of the last few characters. Attention layers of hybrid models are left
             out: their KV grows with the text and is no fixed-size summary of it.
    pool     the recurrent state averaged over its last dim: one value per channel, [d_in] (Mamba-1,
             over d_state), [h * p] (Mamba-2, over d_state) or [h * dk] (gated DeltaNet, over the
             value dim). The conv state (the last few inputs) is left out.
    norm     each layer's vector L2-normalised (so no layer dominates), concatenated, L2-normalised
    size     above MAX_DIM values, a seeded count sketch (each value added with a random sign to one
             of MAX_DIM buckets) keeps cosine similarities in expectation at a fixed size
Skill features come from the skill's stored state (BOS + its rendered demonstrations); the query's
from the state after BOS + the query in the default template (``Input: ...\\nOutput:``), optionally
preceded by one or two example pairs in the same template.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration, Skill

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.states.state import SkillState

FEATURE = "ssm-mean-d_state/last-half-layers/l2/v1"
MAX_DIM = 1024
_DEFAULT = Skill("default", "the default template", (), DEFAULT_TEMPLATE)


def feature_layers(num_layers: int) -> range:
    return range(num_layers // 2, num_layers) if num_layers > 1 else range(num_layers)


def state_vector(state: SkillState, row: int = 0) -> np.ndarray:
    """The FEATURE of batch row ``row`` of ``state``: float32 [<= MAX_DIM], unit norm."""
    parts = []
    recurrent = state.recurrent  # per recurrent layer, views of the flat buffer
    for j in feature_layers(len(recurrent)):
        v = recurrent[j][row].float().mean(dim=-1).reshape(-1).cpu().numpy().astype(np.float64)
        parts.append(v / max(np.linalg.norm(v), 1e-12))
    vec = np.concatenate(parts)
    if vec.size > MAX_DIM:
        bucket, sign = _sketch(vec.size)
        vec = np.bincount(bucket, weights=sign * vec, minlength=MAX_DIM)
    return (vec / max(np.linalg.norm(vec), 1e-12)).astype(np.float32)


@lru_cache(maxsize=8)
def _sketch(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(dim)  # seeded by the size: the same model always gets the same sketch
    return rng.integers(0, MAX_DIM, dim), rng.choice([-1.0, 1.0], dim)


def query_text(query: str, examples: Sequence[tuple[str, str]] = ()) -> str:
    """The text whose state is compared: example pairs, then the query, in the default template."""
    shots = "".join(_DEFAULT.render_demonstration(Demonstration(i, o)) for i, o in examples)
    return shots + _DEFAULT.render_query(query)


def query_vector(model: StateModel, query: str, examples: Sequence[tuple[str, str]] = ()) -> np.ndarray:
    """The FEATURE of the model's state after reading BOS + :func:`query_text`."""
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    ids = ([bos] if bos is not None else []) + model.encode(query_text(query, examples))
    return state_vector(model.capture(ids))
