"""``rlbmi``: Reinforcement-Learning-Based black-box Model Inversion.

Paper: Han, Choi, Lee, Park, Kim, Lee. "Reinforcement Learning-Based Black-Box Model Inversion
Attacks." CVPR 2023. Code: github.com/HanGyojin/RLB-MI @3a113bd (``SAC.py``: ``Actor``,
``Critic``, ``Agent``, ``ReplayBuffer``; ``attack.py::inversion``; ``main.py``;
``run_experiments.sh``).

The attack sees only the target's softmax scores: the harness hands it a ``BlackBox`` view (no
module, no gradients) and counts every image queried. Prior: GMI's public WGAN-GP generator (the
same cached artifact as ``gmi`` and ``brepmi``); no GAN is trained for it.

Per attacked identity y, a soft actor-critic agent (``SAC.py::Agent``) searches the latent space:

1. Agent: actor and two critics with two hidden layers of 256 (``main.py`` ``hidden_size=256``),
   ReLU; actor heads mu and log sigma (clamped to [-20, 2]), action tanh(mu + e sigma) with ONE
   scalar e ~ N(0, 1) per call shared by every dimension and every row of a batch, log-prob the
   mean (not the sum) over dimensions of N(mu, sigma).log_prob - log(1 - a^2 + 1e-6) (the
   official ``evaluate``/``get_action``). Adam lr 5e-4 (actor, critics, entropy temperature),
   gamma 0.99, tau 0.01, replay buffer 1e6, batch 256, learning from the first step at which the
   buffer holds more than 256 transitions, one update per step; entropy temperature learned
   (alpha = exp(log alpha), log alpha = 0, target entropy -dim(A) = -100), the critic targets
   using the alpha of the previous update (1 before the first), the actor loss
   alpha * log pi - Q1 (uniform action prior), soft target updates after every update. Every
   network is built after ``torch.manual_seed(seed)`` (so the two critics start equal); the
   critics' weights are re-drawn by ``Critic.reset_parameters`` (the actor's are not).
2. Episode (``attack.py::inversion``): state z ~ N(0, I_100); for each of ``steps`` (official
   ``max_step`` 1) steps: action a from the policy, z <- alpha_s z + (1 - alpha_s) a (official
   ``-alpha 0``: z = a), images G(z) and G(a) queried; reward
   2 log p_y(G(z)) + 2 log p_y(G(a)) + 8 log max(1e-7, p_y(G(z)) - max_{j != y} p_j(G(z)));
   ``done`` at the last step.
3. Selection: after every episode one test latent (a fresh z, moved by the policy) is queried;
   the reconstruction is the test image of highest p_y over all episodes (ties: the later one).
   40,000 episodes per identity (``run_experiments.sh``; its "simplified" command: 10,000);
   three queries per episode at one step.

The official script builds each identity's agent with the same seed, which re-seeds torch and
Python's ``random``: every identity draws the same latents, noise and replay indices. Here the
agents of ``batch_ids`` identities train together as one batch (batched matrix products, one
Adam over the stacked parameters, which is elementwise) drawing those shared numbers once, from a
generator seeded as the official torch stream (``ctx.seed`` in place of ``-seed 42``): a batched
run equals the official per-identity loop (tests/test_rlbmi.py compares the reward, one agent
update and whole attacks with transcriptions of the official functions).

Identities: the paper attacked all 1,000 CelebA identities; the released code's
``-n_target 100`` gives about half the paper's accuracy (RLB-MI issue #1; the code was fixed on
2023-05-04 to sample the 100 identities at random with seed 42). Here the attacked identities
are the scenario's target classes (the protocol card's "identities attacked": 300 of 1,000 on
``celeba64``), one reconstruction each; ``info["identities"]`` records how many.

Deliberate differences: log p is taken of max(p, smallest normal float32), so a probability
that underflows to 0 gives a finite reward (-87.3) instead of the official -inf, which would turn
the critics into NaN. The harness's seed replaces ``-seed 42``, and the scenario's classes replace
``random.sample(range(1000), n_target)``.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, ConfigError, Inversion, Param, Progress, no_progress

from ._gan import GAN_BUDGETS, GAN_PARAMS, GMIPrior
from ._latent import identity_batches


def reward(
    p_state: Tensor, p_action: Tensor, y: Tensor, weights=(2.0, 2.0, 8.0), floor: float = 1e-7
) -> Tensor:
    """The official reward (``attack.py::inversion``) of each row, from the target's
    probabilities of G(z) and G(a): w1 log p_y(G(z)) + w2 log p_y(G(a)) + w3 log max(floor,
    p_y(G(z)) - max_{j != y} p_j(G(z))), in float64 as the official Python floats."""
    p_state, p_action = p_state.double(), p_action.double()
    tiny = torch.finfo(torch.float32).tiny
    py = p_state.gather(1, y[:, None]).squeeze(1)
    other = p_state.scatter(1, y[:, None], -math.inf).amax(1)
    s1 = py.clamp_min(tiny).float().log().double()  # official: torch.log of the float32 softmax
    s2 = p_action.gather(1, y[:, None]).squeeze(1).clamp_min(tiny).float().log().double()
    s3 = (py - other).clamp_min(floor).log()
    return weights[0] * s1 + weights[1] * s2 + weights[2] * s3


class Linears(nn.Module):
    """``k`` independent linear layers at once: x (k, B, in) -> (k, B, out); each starts as a
    copy of ``layer``."""

    def __init__(self, layer: nn.Linear, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().t().repeat(k, 1, 1))
        self.bias = nn.Parameter(layer.bias.detach().repeat(k, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class Actor(nn.Module):
    """``SAC.py::Actor`` for k agents: fc1, fc2 (ReLU), heads mu and log sigma in [-20, 2]."""

    def __init__(self, layers: list[nn.Linear], k: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.mu, self.log_std = (Linears(lay, k) for lay in layers)

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc2(F.relu(self.fc1(state))))
        return self.mu(x), self.log_std(x).clamp(-20, 2)

    def evaluate(self, state: Tensor, e: Tensor, epsilon: float = 1e-6) -> tuple[Tensor, Tensor]:
        """``Actor.evaluate``: the squashed action with the scalar noise ``e`` and its log-prob,
        the mean over action dimensions."""
        mu, log_std = self(state)
        std = log_std.exp()
        action = torch.tanh(mu + e * std)
        log_prob = Normal(mu, std).log_prob(mu + e * std) - torch.log(1 - action.pow(2) + epsilon)
        return action, log_prob.mean(-1, keepdim=True)


class Critic(nn.Module):
    """``SAC.py::Critic`` for k agents: Q(s, a) from [s, a] through fc1, fc2 (ReLU), fc3."""

    def __init__(self, layers: list[nn.Linear], k: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (Linears(lay, k) for lay in layers)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        x = torch.cat((state, action), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def official_layers(state: int, action: int, hidden: int, seed: int):
    """The initial layers of one official agent (``SAC.py::Agent.__init__``) and torch's random
    state after them (each network re-seeds; the critics re-draw their weights with
    ``hidden_init``, whose "fan_in" is the output size), global state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = [nn.Linear(state, hidden), nn.Linear(hidden, hidden)]
        actor += [nn.Linear(hidden, action), nn.Linear(hidden, action)]
        torch.manual_seed(seed)  # critic1; critic2 and both targets: the same seed, the same draws
        critic = [nn.Linear(state + action, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)]
        with torch.no_grad():
            for lay in critic[:2]:
                lim = 1.0 / math.sqrt(lay.weight.size(0))
                lay.weight.uniform_(-lim, lim)
            critic[2].weight.uniform_(-3e-3, 3e-3)
        return actor, critic, torch.get_rng_state()


class Agents(nn.Module):
    """``k`` official SAC agents (``SAC.py::Agent``, ``action_prior="uniform"``), one per
    attacked identity, updated together; agent i's update is exactly its own."""

    def __init__(
        self, k: int, state: int, action: int, *, hidden: int, seed: int, lr_actor: float, lr_critic: float
    ) -> None:
        super().__init__()
        actor, critic, self.rng_state = official_layers(state, action, hidden, seed)
        self.actor = Actor(actor, k)
        self.critic1, self.critic2 = Critic(critic, k), Critic(critic, k)
        self.critic1_target, self.critic2_target = Critic(critic, k), Critic(critic, k)
        self.critic1_target.requires_grad_(False)
        self.critic2_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(k, 1, 1))
        self.register_buffer("alpha", torch.ones(k, 1, 1))  # official self.alpha = 1 until the first update
        self.target_entropy = -action
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=lr_actor)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.opt_critic1 = torch.optim.Adam(self.critic1.parameters(), lr=lr_critic)
        self.opt_critic2 = torch.optim.Adam(self.critic2.parameters(), lr=lr_critic)

    @torch.no_grad()
    def act(self, state: Tensor, e: Tensor) -> Tensor:
        """``Actor.get_action``: tanh(mu + e sigma) for each agent's state (k, dim)."""
        mu, log_std = self.actor(state[:, None])
        return torch.tanh(mu + e * log_std.exp())[:, 0]

    def learn(self, batch: tuple[Tensor, ...], noise, gamma: float, tau: float) -> None:
        """``Agent.learn`` (d = 1, FIXED_ALPHA None) on each agent's batch (k, B, .): the critics on
        r + gamma (1 - done) (min Q_target(s', a') - alpha log pi(a'|s')), then alpha, the actor
        and the soft target updates. ``noise()`` gives the scalar e of each ``evaluate``."""
        states, actions, rewards, next_states, dones = batch
        with torch.no_grad():  # the official builds a graph here and detaches the targets
            next_action, log_pis_next = self.actor.evaluate(next_states, noise())
            q_next = torch.min(
                self.critic1_target(next_states, next_action), self.critic2_target(next_states, next_action)
            )
            q_targets = rewards + gamma * (1 - dones) * (q_next - self.alpha * log_pis_next)
        for critic, opt in ((self.critic1, self.opt_critic1), (self.critic2, self.opt_critic2)):
            loss = 0.5 * (critic(states, actions) - q_targets).pow(2).mean((1, 2)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        alpha = self.log_alpha.detach().exp()  # taken before the alpha step, as the official
        actions_pred, log_pis = self.actor.evaluate(states, noise())
        alpha_loss = -(self.log_alpha * (log_pis + self.target_entropy).detach()).mean((1, 2)).sum()
        self.opt_alpha.zero_grad()
        alpha_loss.backward()
        self.opt_alpha.step()
        self.alpha.copy_(alpha)
        self.critic1.requires_grad_(False)  # the official also fills critic1's grads here, zeroed unused
        actor_loss = (alpha * log_pis - self.critic1(states, actions_pred)).mean((1, 2)).sum()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()
        self.critic1.requires_grad_(True)
        with torch.no_grad():
            for local, target in ((self.critic1, self.critic1_target), (self.critic2, self.critic2_target)):
                for t, s in zip(target.parameters(), local.parameters()):
                    t.copy_(tau * s + (1.0 - tau) * t)


class Replay:
    """``SAC.py::ReplayBuffer`` of k agents (a deque of ``size``; ``random.sample`` of its
    positions, oldest first, from a ``random.Random(seed)``, the same for every agent)."""

    def __init__(self, k: int, size: int, dims: tuple[int, ...], seed: int, device) -> None:
        self.data = [torch.zeros(k, size, d, device=device) for d in dims]
        self.size, self.n, self.head, self.rng = size, 0, 0, random.Random(seed)

    def add(self, *rows: Tensor) -> None:
        for store, row in zip(self.data, rows):
            store[:, self.head] = row
        self.head = (self.head + 1) % self.size
        self.n = min(self.n + 1, self.size)

    def sample(self, batch: int) -> tuple[Tensor, ...]:
        pos = torch.tensor(self.rng.sample(range(self.n), batch))
        idx = ((pos + (self.head - self.n)) % self.size).to(self.data[0].device)
        return tuple(store[:, idx] for store in self.data)


def rlb_attack(
    G, query, y: Tensor, c, *, z_dim: int, seed: int, progress: Progress = no_progress
) -> tuple[Tensor, Tensor, dict]:
    """``attack.py::inversion`` for every identity of ``y`` at once, through ``query`` (images ->
    the target's probabilities) only, with the hyperparameters of config ``c`` (``RLBMI.params``).
    Returns (best test latent, its p_y, info)."""
    k, dev = len(y), y.device
    agents = Agents(k, z_dim, z_dim, hidden=c.hidden, seed=seed, lr_actor=c.lr_actor, lr_critic=c.lr_critic)
    agents.to(dev)
    gen = torch.Generator()
    gen.set_state(agents.rng_state)  # the official torch stream after building the agent

    def draw(*shape: int) -> Tensor:
        return torch.randn(shape, generator=gen).to(dev)

    memory = Replay(k, min(c.buffer, c.episodes * c.steps), (z_dim, z_dim, 1, z_dim, 1), seed, dev)
    best_z, best = torch.zeros(k, z_dim, device=dev), torch.zeros(k, device=dev, dtype=torch.float64)
    updates = 0
    for episode in range(c.episodes):
        z = draw(1, z_dim).expand(k, z_dim)
        state = z
        for t in range(c.steps):
            action = agents.act(state, draw())
            z = c.state_alpha * z + (1 - c.state_alpha) * action
            with torch.no_grad():
                p = query(G(torch.cat([z, action])))
            r = reward(p[:k], p[k:], y, c.weights, c.floor).float()
            done = torch.full((k,), float(t == c.steps - 1), device=dev)
            memory.add(state, action, r[:, None], z, done[:, None])
            if memory.n > c.batch_size:
                agents.learn(memory.sample(c.batch_size), draw, c.gamma, c.tau)
                updates += 1
            state = z
        z_test = draw(1, z_dim).expand(k, z_dim)
        for _ in range(c.steps):
            z_test = c.state_alpha * z_test + (1 - c.state_alpha) * agents.act(z_test, draw())
        with torch.no_grad():
            score = query(G(z_test)).gather(1, y[:, None]).squeeze(1).double()
        better = score >= best
        best = torch.where(better, score, best)
        best_z = torch.where(better[:, None], z_test, best_z)
        progress(episode + 1, c.episodes)
    return best_z, best, {"updates": updates, "best_confidence": best.mean().item()}


class RLBMI(GMIPrior):
    name = "rlbmi"
    iterations_param = "episodes"  # run --convergence doubles it (issue 29)
    threat_model = "black-box"
    params = {
        **GAN_PARAMS,
        "episodes": Param(40000, "episodes per identity (official run_experiments.sh: 40,000)", low=1),
        "steps": Param(1, "steps per episode (official -max_step: 1)", low=1),
        "state_alpha": Param(
            0.0, "state update z <- state_alpha z + (1 - state_alpha) a (official -alpha: 0)", low=0, high=1
        ),
        "hidden": Param(256, "hidden units of actor and critics (official main.py: 256)", low=1),
        "lr_actor": Param(5e-4, "Adam lr of the actor and of log alpha (official LR_ACTOR: 5e-4)", low=0.0),
        "lr_critic": Param(5e-4, "Adam lr of the critics (official LR_CRITIC: 5e-4)", low=0.0),
        "gamma": Param(0.99, "discount (official GAMMA: 0.99)", low=0.0, high=1.0),
        "tau": Param(1e-2, "soft target update (official TAU: 0.01)", low=0.0, high=1.0),
        "batch_size": Param(256, "SAC batch; learning starts above it (official BATCH_SIZE: 256)", low=1),
        "buffer": Param(1_000_000, "replay buffer size (official BUFFER_SIZE: 1e6)", low=1),
        "weights": Param((2.0, 2.0, 8.0), "reward weights of the three log terms (official: 2/2/8)"),
        "floor": Param(1e-7, "floor of the confidence margin in the reward (official: 1e-7)", low=0.0),
        "batch_ids": Param(
            50, "identities whose agents train together (memory only: results do not depend on it)", low=1
        ),
    }
    budgets = {
        "smoke": {**GAN_BUDGETS["smoke"], "episodes": 60, "batch_size": 32},
        "quick": {**GAN_BUDGETS["quick"], "episodes": 1000, "batch_size": 64},
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        if len(self.config.weights) != 3:
            raise ConfigError(
                f"rlbmi: weights takes three values, e.g. weights=2/2/8; got {self.config.weights}"
            )

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int]) -> Inversion:
        c = self.config
        G, _ = self.load_prior(priors[self.prior_kind], ctx.scenario.image_shape, ctx.device)
        batches = identity_batches(classes, c.batch_ids)
        images, infos = [], []
        for b, ids in enumerate(batches):
            with ctx.fp32():  # the agents learn in float32 whatever the run's precision
                z, _, info = rlb_attack(
                    G,
                    ctx.target,
                    torch.tensor(ids, device=ctx.device),
                    c,
                    z_dim=self.z_dim,
                    seed=ctx.seed,
                    progress=lambda i, n, b=b: ctx.progress(b * n + i, len(batches) * n),
                )
                with torch.no_grad():
                    images.append(G(z).cpu())  # the test image selected
            infos.append(info)
        return Inversion(
            torch.cat(images),
            torch.tensor(classes, dtype=torch.long),
            {
                "identities": len(classes),
                "queries_per_identity": c.episodes * (2 * c.steps + 1),
                "updates_per_identity": infos[0]["updates"],
                "best_confidence": sum(i["best_confidence"] * n for i, n in zip(infos, map(len, batches)))
                / len(classes),
            },
        )


@hookimpl
def register_attacks():
    return [RLBMI]
