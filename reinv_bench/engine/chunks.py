"""How many classes one inversion step attacks (``--class-chunk``), and when chunking changes
the reconstructions."""

from __future__ import annotations

from reinv_bench.contract.attack import Attack
from reinv_bench.contract.data import Scenario

AUTO_CHUNK_BYTES = 2 * 2**30  # --class-chunk auto: host memory one inversion step's classes may hold
AUTO_CHUNK_CLASSES = 60  # auto, for an attack that estimates neither: the official scripts' identity batch


def _chunk(class_chunk: int | str, attack: Attack, image_shape: tuple[int, ...]) -> int:
    """Classes per inversion step. ``auto``: the attack's identity batch (``batch_ids``: the
    official scripts attack 60 identities at a time, and chunks aligned with it give the unchunked
    reconstructions); else as many classes as fit in ``AUTO_CHUNK_BYTES`` by the attack's
    ``memory_per_class`` estimate (PPA, IF-GMI); else ``AUTO_CHUNK_CLASSES``."""
    if class_chunk != "auto":
        return int(class_chunk)
    if batch := _batch_ids(attack):
        return batch
    chain = _chain(attack)
    per_class = next((b for a in chain if (b := a.memory_per_class(tuple(image_shape)))), None)
    return max(1, AUTO_CHUNK_BYTES // per_class) if per_class else AUTO_CHUNK_CLASSES


def _chain(attack: Attack) -> list[Attack]:
    """A wrapper attack, then the attack it wraps, and so on."""
    chain = [attack]
    while getattr(chain[-1], "base", None) is not None:
        chain.append(chain[-1].base)
    return chain


def _batch_ids(attack: Attack) -> int:
    """The attack's identity batch (``batch_ids``; 0: it has none)."""
    return int(next((a.config["batch_ids"] for a in _chain(attack) if a.config.get("batch_ids")), 0))


def reshaping_chunk(class_chunk: int | str, attack: Attack, scenario: Scenario) -> int:
    """The classes per inversion step when chunking changes the reconstructions, else 0: the step
    is chunked and its chunks are not whole identity batches of the attack (each class draws from
    its own random stream, but an identity batch's loss is their mean, so a chunk that splits one
    optimises other batches; an attack without identity batches draws one stream over every class
    it attacks, PPA's crops say). Such a cell records ``class_chunk`` in its config: its rows are
    another setting, never averaged nor compared with unchunked ones (issue 30, item 13)."""
    classes = scenario.target_classes()
    chunk = _chunk(class_chunk, attack, scenario.image_shape)
    if attack.uses_eval_model() or not chunk or len(classes) <= chunk:
        return 0
    batch = _batch_ids(attack)
    return 0 if batch and chunk % batch == 0 else chunk
