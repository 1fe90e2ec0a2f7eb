"""Data: splits, a scenario's loaded data, training recipes and the ``Scenario`` protocol.
Re-exported by ``reinv_bench.api``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from reinv_bench.contract.datachecks import Problem, generic_checks
from reinv_bench.contract.images import ImageFiles


@dataclass
class Split:
    x: Tensor | ImageFiles  # (N, C, H, W) in [-1, 1]; ImageFiles: decoded from files on demand
    y: Tensor | None  # (N,) int64, or None where the attacker gets no labels

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ScenarioData:
    private_train: Split
    private_test: Split
    public: Split  # unlabelled
    eval_train: Split  # what the evaluation model learns from
    eval_test: Split
    digest: str  # identifies the exact split; stored with every result
    source: str  # where the images came from, in words
    pretrain: Split | None = None  # labelled public-domain data a defense may pretrain on (TL)


@dataclass(frozen=True)
class TrainRecipe:
    """How a classifier is trained in one budget (the paper budget cites its source)."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = ()  # fractions of the epochs where lr *= gamma
    gamma: float = 0.1
    augment: str = ""  # "" | "flip" (KEDMI/GMI 64 px) | "ppa" (PPA/MIDRE 224 px); see train.augment
    # the weights kept: "last" (the last epoch's; no choice made on test data) | "best_test" (the
    # epoch with the best accuracy on the private test split, as the official training scripts) |
    # "best_val_loss" (AT-AT's: train on 80 %, the lowest loss on the other 20 %; train_classifier)
    select: str = "last"

    def spec(self) -> dict[str, Any]:
        """The recipe as step specs and rows hold it; ``select`` only when not the default, so
        that the steps keyed before it existed keep their keys."""
        out = asdict(self)
        if out["select"] == "last":
            del out["select"]
        return out


CLASS_KINDS = ("face", "digit", "object", "dog")  # what a scenario's classes can be (Scenario.class_kind)


class Scenario:
    """A privacy setting: private identities, public data, image shape, evaluation protocol."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when load() or a recipe changes: enters every step key
    num_classes: int
    image_shape: tuple[int, int, int]
    default_arch: str
    eval_arch: str
    eval_num_classes: int
    description: str = ""
    protocol: str = ""  # evaluation protocol ("64px", "224px", ...): decides the default metrics,
    # and rows of different protocols are never ranked together
    # metrics run by default besides those of the protocol (a scenario of its own protocol asking
    # for builtin ones, e.g. ("knn_dist",)); --metric still picks exactly the metrics named
    default_metrics: ClassVar[tuple[str, ...]] = ()
    public_labels: bool = False  # load() fills ScenarioData.pretrain: a defense may pretrain there
    # what the classes are (one of CLASS_KINDS: faces, handwritten digits, object classes, dog
    # breeds), or None: not declared. The judges' network and question follow from it, never from
    # the scenario's name (a judge that needs it refuses an undeclared scenario at plan time)
    class_kind: ClassVar[str | None] = None
    # the protocol's own attack hyperparameters where they differ from the attack's paper defaults
    # (attack name -> {param: value}); a value the user gives wins; they show in the label
    attack_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def load(self, data_root: Path | None) -> ScenarioData:
        raise NotImplementedError

    def target_classes(self) -> list[int]:
        """The classes an attack reconstructs (all, unless the protocol fixes a subset)."""
        return list(range(self.num_classes))

    def recipe(self, role: str, budget: str, arch: str = "") -> TrainRecipe:
        """Training recipe of the target ("target", of architecture ``arch``), evaluation model
        ("eval") or a defense's pretraining on public data ("pretrain")."""
        raise NotImplementedError

    def check(self, data_root: Path | None, sample: int = 1000, decode: bool = True) -> list[Problem]:
        """Every problem of the data ``load(data_root)`` would read, at once (``reinv-bench data
        check``). The default runs the generic checks of ``reinv_bench.contract.datachecks.generic_checks``
        (the data loads, every class has training images, labels in range, splits disjoint, a
        sample of ``sample`` image files decodes, 0: all; ``decode=False``: none); a scenario
        adds its own (layout, list files, identity counts) and calls ``super().check`` once its
        layout is sound."""
        return generic_checks(self, data_root, sample, decode)

    def class_names(self, data_root: Path | None) -> list[str] | None:
        """The name of each class, in label order (a digit, an identity), or None: "class i"."""
        return None
