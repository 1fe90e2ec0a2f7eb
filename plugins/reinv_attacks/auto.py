"""``auto``: the worst-case ensemble, a fixed and documented list of attacks per threat model and
scenario, in the spirit of AutoAttack (Croce and Hein, ICML 2020, ``fra31/auto-attack``: a point
is robust only if every member of a fixed ensemble fails) and of the adaptive-attack guidance of
Carlini et al. 2019 and Tramèr et al. 2020 (issue 29; METHODS.md section 12).

The harness runs every member as a cell of its own, at the run's budget with the member's own
parameters (its row stays in the store), then pools the members' final candidates per identity
and keeps the best by the target's own confidence in the identity, never by the evaluation model
or a judge (``reinv_bench.results.ensemble``), with a permuted-identity null beside it.

A member the installation does not have (``adaptive+`` and ``transfer+`` arrive with their own
plugins) is left out with a warning before the run, and the ensemble's row records the members it
pooled (``config["attack"]["members"]``), so ensembles of other member sets are never averaged
together. A stronger threat model may run a weaker one's attacks: white-box includes the
black-box (rlbmi) and label-only (brepmi) attacks.

    reinv-bench run -a auto -d re                      # white-box ensemble of the scenario
    reinv-bench run -a "auto[members=gmi/brepmi]" ...  # another member list (recorded in the row)
"""

from __future__ import annotations

from reinv_bench.api import THREAT_MODELS, ConfigError, EnsembleAttack, Param, hookimpl

_ADAPTIVE = ("adaptive+gmi", "adaptive+kedmi", "adaptive+plgmi", "adaptive+lomma+gmi")
_DIGITS = ("gmi", "kedmi", "plgmi", "lomma+gmi", "brepmi", "rlbmi", *_ADAPTIVE, "transfer+gmi")
_FACES64 = (*_DIGITS, "ifgmi", "adaptive+ifgmi")
_FACES224 = ("ppa", "ifgmi", "adaptive+ppa", "adaptive+ifgmi", "transfer+ppa")

# (threat model, scenario) -> member specs; scenario "*": every scenario without its own entry.
# A threat model absent here has no ensemble: `auto[threat=...]` says so in one line.
MEMBERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("white-box", "mnist"): _DIGITS,
    ("white-box", "mnist-gmi"): _DIGITS,
    ("white-box", "celeba64"): _FACES64,
    ("white-box", "celeba64-ffhq"): _FACES64,
    ("white-box", "facescrub224-ffhq"): _FACES224,
    ("black-box", "*"): ("rlbmi", "brepmi"),
    ("label-only", "*"): ("brepmi",),
}


class Auto(EnsembleAttack):
    name = "auto"
    version = 1
    params = {
        "threat": Param("white-box", "the attacker's access (its members)", choices=THREAT_MODELS),
        "keep": Param(0, "candidates kept per identity (0: the fewest any member makes per identity)", low=0),
        "members": Param("", "member attack specs separated by / (empty: the documented list)"),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        self.threat_model = self.config["threat"]

    def members(self, scenario: str) -> tuple[str, ...]:
        if self.config["members"]:
            return tuple(m.strip() for m in self.config["members"].split("/") if m.strip())
        threat = self.config["threat"]
        found = MEMBERS.get((threat, scenario), MEMBERS.get((threat, "*")))
        if not found:
            raise ConfigError(
                f"auto: no ensemble for threat model {threat} on scenario {scenario}; give "
                f"auto[members=A/B/...] or one of: {', '.join(sorted({t for t, _ in MEMBERS}))}"
            )
        return found

    def keep(self) -> int:
        return int(self.config["keep"])

    def selection(self) -> str:
        n = self.keep() or "as many as its sparsest member makes"
        return f"ensemble: per identity, {n} of the members' pooled candidates, by the target's confidence"


@hookimpl
def register_attacks():
    return [Auto]
