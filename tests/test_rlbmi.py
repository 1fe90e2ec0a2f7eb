"""RLB-MI against transcriptions of its official code (written here, in the official structure,
with the source named on each): the reward, the SAC agent's initialisation and update, whole
attacks (batched identities vs the official per-identity loop), the paper budget; the black-box
isolation; a smoke run on the digits through the harness.

Official repository: HanGyojin/RLB-MI @3a113bd (``SAC.py``, ``attack.py``, ``main.py``,
``run_experiments.sh``).
"""

import math
import random
from collections import deque, namedtuple
from copy import deepcopy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributions import MultivariateNormal, Normal

from reinv_attacks.rlbmi import RLBMI, Agents, reward, rlb_attack
from reinv_bench.api import BlackBox

# ---- SAC.py, transcribed (device: CPU; the official draws its noise on the CPU too) -----------

GAMMA = 0.99
TAU = 1e-2
HIDDEN_SIZE = 256
BUFFER_SIZE = int(1e6)
BATCH_SIZE = 256
LR_ACTOR = 5e-4
LR_CRITIC = 5e-4
FIXED_ALPHA = None
device = torch.device("cpu")


def hidden_init(layer):  # SAC.py::hidden_init
    fan_in = layer.weight.data.size()[0]
    lim = 1.0 / np.sqrt(fan_in)
    return (-lim, lim)


class OfficialActor(nn.Module):  # SAC.py::Actor (reset_parameters is never called)
    def __init__(
        self, state_size, action_size, seed, hidden_size=32, init_w=3e-3, log_std_min=-20, log_std_max=2
    ):
        super().__init__()
        self.seed = torch.manual_seed(seed)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.fc1 = nn.Linear(state_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.mu = nn.Linear(hidden_size, action_size)
        self.log_std_linear = nn.Linear(hidden_size, action_size)

    def forward(self, state):
        x = F.relu(self.fc1(state), inplace=True)
        x = F.relu(self.fc2(x), inplace=True)
        mu = self.mu(x)
        log_std = self.log_std_linear(x)
        log_std = torch.clamp(log_std, self.log_std_min, self.log_std_max)
        return mu, log_std

    def evaluate(self, state, epsilon=1e-6):
        mu, log_std = self.forward(state)
        std = log_std.exp()
        dist = Normal(0, 1)
        e = dist.sample().to(device)
        action = torch.tanh(mu + e * std)
        log_prob = (Normal(mu, std).log_prob(mu + e * std) - torch.log(1 - action.pow(2) + epsilon)).mean(
            1, keepdim=True
        )
        return action, log_prob

    def get_action(self, state):
        mu, log_std = self.forward(state)
        std = log_std.exp()
        dist = Normal(0, 1)
        e = dist.sample().to(device)
        action = torch.tanh(mu + e * std).cpu()
        return action[0]


class OfficialCritic(nn.Module):  # SAC.py::Critic
    def __init__(self, state_size, action_size, seed, hidden_size=32):
        super().__init__()
        self.seed = torch.manual_seed(seed)
        self.fc1 = nn.Linear(state_size + action_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, 1)
        self.reset_parameters()

    def reset_parameters(self):
        self.fc1.weight.data.uniform_(*hidden_init(self.fc1))
        self.fc2.weight.data.uniform_(*hidden_init(self.fc2))
        self.fc3.weight.data.uniform_(-3e-3, 3e-3)

    def forward(self, state, action):
        x = torch.cat((state, action), dim=1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class OfficialReplayBuffer:  # SAC.py::ReplayBuffer
    def __init__(self, action_size, buffer_size, batch_size, seed):
        self.action_size = action_size
        self.memory = deque(maxlen=buffer_size)
        self.batch_size = batch_size
        self.experience = namedtuple(
            "Experience", field_names=["state", "action", "reward", "next_state", "done"]
        )
        self.seed = random.seed(seed)

    def add(self, state, action, reward, next_state, done):
        self.memory.append(self.experience(state, action, reward, next_state, done))

    def sample(self):
        experiences = random.sample(self.memory, k=self.batch_size)
        states = torch.from_numpy(np.vstack([e.state for e in experiences if e is not None])).float()
        actions = torch.from_numpy(np.vstack([e.action for e in experiences if e is not None])).float()
        rewards = torch.from_numpy(np.vstack([e.reward for e in experiences if e is not None])).float()
        next_states = torch.from_numpy(
            np.vstack([e.next_state for e in experiences if e is not None])
        ).float()
        dones = torch.from_numpy(
            np.vstack([e.done for e in experiences if e is not None]).astype(np.uint8)
        ).float()
        return (states, actions, rewards, next_states, dones)

    def __len__(self):
        return len(self.memory)


class OfficialAgent:  # SAC.py::Agent
    def __init__(self, state_size, action_size, random_seed, hidden_size, action_prior="uniform"):
        self.state_size = state_size
        self.action_size = action_size
        self.seed = random.seed(random_seed)
        self.target_entropy = -action_size
        self.alpha = 1
        self.log_alpha = torch.tensor([0.0], requires_grad=True)
        self.alpha_optimizer = optim.Adam(params=[self.log_alpha], lr=LR_ACTOR)
        self._action_prior = action_prior
        self.actor_local = OfficialActor(state_size, action_size, random_seed, hidden_size)
        self.actor_optimizer = optim.Adam(self.actor_local.parameters(), lr=LR_ACTOR)
        self.critic1 = OfficialCritic(state_size, action_size, random_seed, hidden_size)
        self.critic2 = OfficialCritic(state_size, action_size, random_seed, hidden_size)
        self.critic1_target = OfficialCritic(state_size, action_size, random_seed, hidden_size)
        self.critic1_target.load_state_dict(self.critic1.state_dict())
        self.critic2_target = OfficialCritic(state_size, action_size, random_seed, hidden_size)
        self.critic2_target.load_state_dict(self.critic2.state_dict())
        self.critic1_optimizer = optim.Adam(self.critic1.parameters(), lr=LR_CRITIC, weight_decay=0)
        self.critic2_optimizer = optim.Adam(self.critic2.parameters(), lr=LR_CRITIC, weight_decay=0)
        self.memory = OfficialReplayBuffer(action_size, BUFFER_SIZE, BATCH_SIZE, random_seed)

    def step(self, state, action, reward, next_state, done, step):
        self.memory.add(state, action, reward, next_state, done)
        if len(self.memory) > BATCH_SIZE:
            experiences = self.memory.sample()
            self.learn(step, experiences, GAMMA)

    def act(self, state):
        state = torch.from_numpy(state).float()
        return self.actor_local.get_action(state).detach()

    def learn(self, step, experiences, gamma, d=1):
        states, actions, rewards, next_states, dones = experiences
        next_action, log_pis_next = self.actor_local.evaluate(next_states)
        Q_target1_next = self.critic1_target(next_states, next_action.squeeze(0))
        Q_target2_next = self.critic2_target(next_states, next_action.squeeze(0))
        Q_target_next = torch.min(Q_target1_next, Q_target2_next)
        Q_targets = rewards + (gamma * (1 - dones) * (Q_target_next - self.alpha * log_pis_next.squeeze(0)))
        Q_1 = self.critic1(states, actions)
        Q_2 = self.critic2(states, actions)
        critic1_loss = 0.5 * F.mse_loss(Q_1, Q_targets.detach())
        critic2_loss = 0.5 * F.mse_loss(Q_2, Q_targets.detach())
        self.critic1_optimizer.zero_grad()
        critic1_loss.backward()
        self.critic1_optimizer.step()
        self.critic2_optimizer.zero_grad()
        critic2_loss.backward()
        self.critic2_optimizer.step()
        if step % d == 0:
            alpha = torch.exp(self.log_alpha)
            actions_pred, log_pis = self.actor_local.evaluate(states)
            alpha_loss = -(self.log_alpha * (log_pis + self.target_entropy).detach()).mean()
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()
            self.alpha = alpha
            if self._action_prior == "normal":
                policy_prior = MultivariateNormal(
                    loc=torch.zeros(self.action_size), scale_tril=torch.ones(self.action_size).unsqueeze(0)
                )
                policy_prior_log_probs = policy_prior.log_prob(actions_pred)
            elif self._action_prior == "uniform":
                policy_prior_log_probs = 0.0
            actor_loss = (
                alpha * log_pis.squeeze(0)
                - self.critic1(states, actions_pred.squeeze(0))
                - policy_prior_log_probs
            ).mean()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            self.soft_update(self.critic1, self.critic1_target, TAU)
            self.soft_update(self.critic2, self.critic2_target, TAU)

    def soft_update(self, local_model, target_model, tau):
        for target_param, local_param in zip(target_model.parameters(), local_model.parameters()):
            target_param.data.copy_(tau * local_param.data + (1.0 - tau) * target_param.data)


# ---- attack.py::inversion, transcribed (no files written; returns the best score too) ----------


def official_inversion(agent, G, T, alpha, z_dim=100, max_episodes=40000, max_step=1, label=0):
    best_score = 0
    for _ in range(1, max_episodes + 1):
        y = torch.tensor([label])
        z = torch.randn(1, z_dim)
        state = deepcopy(z.cpu().numpy())
        for t in range(max_step):
            action = agent.act(state)
            z = alpha * z + (1 - alpha) * action.clone().detach().reshape((1, len(action)))
            next_state = deepcopy(z.cpu().numpy())
            state_image = G(z).detach()
            action_image = G(action.clone().detach().reshape((1, len(action)))).detach()
            _, state_output = T(state_image)
            _, action_output = T(action_image)
            score1 = float(
                torch.mean(
                    torch.diag(torch.index_select(torch.log(F.softmax(state_output, dim=-1)).data, 1, y))
                )
            )
            score2 = float(
                torch.mean(
                    torch.diag(torch.index_select(torch.log(F.softmax(action_output, dim=-1)).data, 1, y))
                )
            )
            score3 = math.log(
                max(
                    1e-7,
                    float(torch.index_select(F.softmax(state_output, dim=-1).data, 1, y))
                    - float(
                        torch.max(
                            torch.cat(
                                (
                                    F.softmax(state_output, dim=-1)[0, :y],
                                    F.softmax(state_output, dim=-1)[0, y + 1 :],
                                )
                            ),
                            dim=-1,
                        )[0]
                    ),
                )
            )
            reward = 2 * score1 + 2 * score2 + 8 * score3
            done = t == max_step - 1
            agent.step(state, action, reward, next_state, done, t)
            state = next_state
        test_images = []
        test_scores = []
        for _ in range(1):
            with torch.no_grad():
                z_test = torch.randn(1, z_dim)
                for _t in range(max_step):
                    state_test = z_test.cpu().numpy()
                    action_test = agent.act(state_test)
                    z_test = alpha * z_test + (1 - alpha) * action_test.clone().detach().reshape(
                        (1, len(action_test))
                    )
                test_image = G(z_test).detach()
                test_images.append(test_image.cpu())
                _, test_output = T(test_image)
                test_score = float(
                    torch.mean(torch.diag(torch.index_select(F.softmax(test_output, dim=-1).data, 1, y)))
                )
            test_scores.append(test_score)
        mean_score = sum(test_scores) / len(test_scores)
        if mean_score >= best_score:
            best_score = mean_score
            best_images = torch.vstack(test_images)
    return best_images, best_score


# ---- helpers ------------------------------------------------------------------------------------

K_CLASSES, SHAPE = 5, (1, 4, 4)


def _tiny_models(seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(100, 16), nn.Tanh(), nn.Unflatten(1, SHAPE)).eval().requires_grad_(False)
    T = nn.Sequential(nn.Flatten(), nn.Linear(16, K_CLASSES)).eval().requires_grad_(False)
    with torch.no_grad():
        T[1].weight.mul_(8)
    return G, T


def _ours(k, seed, c=None):
    c = c or RLBMI().config
    return Agents(k, 100, 100, hidden=c.hidden, seed=seed, lr_actor=c.lr_actor, lr_critic=c.lr_critic)


def _pairs(ours: Agents, official: OfficialAgent, i: int = 0):
    """(ours, official) for every parameter of agent ``i`` (ours stores weights transposed)."""

    def lin(mine, theirs):
        return [(mine.weight[i].t(), theirs.weight), (mine.bias[i, 0], theirs.bias)]

    a, oa = ours.actor, official.actor_local
    out = lin(a.fc1, oa.fc1) + lin(a.fc2, oa.fc2) + lin(a.mu, oa.mu) + lin(a.log_std, oa.log_std_linear)
    for mine, theirs in (
        (ours.critic1, official.critic1),
        (ours.critic2, official.critic2),
        (ours.critic1_target, official.critic1_target),
        (ours.critic2_target, official.critic2_target),
    ):
        out += lin(mine.fc1, theirs.fc1) + lin(mine.fc2, theirs.fc2) + lin(mine.fc3, theirs.fc3)
    return out + [(ours.log_alpha[i].flatten(), official.log_alpha)]


# ---- the reward ---------------------------------------------------------------------------------


def test_reward_is_the_official():
    torch.manual_seed(0)
    y = torch.tensor([0, 3, 4, 1])
    s_out, a_out = torch.randn(4, K_CLASSES) * 3, torch.randn(4, K_CLASSES) * 3
    s_out[1, 3] = 9.0  # a confident row: the margin term above its floor
    c = RLBMI().config
    ours = reward(s_out.softmax(1), a_out.softmax(1), y, c.weights, c.floor)
    for i, label in enumerate(y.tolist()):  # attack.py::inversion, one image at a time
        yy = torch.tensor([label])
        so, ao = s_out[i : i + 1], a_out[i : i + 1]
        score1 = float(
            torch.mean(torch.diag(torch.index_select(torch.log(F.softmax(so, dim=-1)).data, 1, yy)))
        )
        score2 = float(
            torch.mean(torch.diag(torch.index_select(torch.log(F.softmax(ao, dim=-1)).data, 1, yy)))
        )
        p = F.softmax(so, dim=-1)
        score3 = math.log(
            max(
                1e-7,
                float(torch.index_select(p.data, 1, yy))
                - float(torch.max(torch.cat((p[0, :yy], p[0, yy + 1 :])))),
            )
        )
        assert ours[i].item() == pytest.approx(2 * score1 + 2 * score2 + 8 * score3, rel=1e-12, abs=1e-9)
    assert (ours[[0, 2, 3]] < ours[1]).all()


def test_reward_of_a_zero_probability_is_finite():
    p = torch.tensor([[1.0, 0.0]])
    assert torch.isfinite(reward(p, p, torch.tensor([1]))).all()


# ---- the agent ----------------------------------------------------------------------------------


def test_agent_starts_as_the_official():
    seed = 3
    official = OfficialAgent(100, 100, seed, HIDDEN_SIZE)
    official_state = torch.get_rng_state()
    ours = _ours(2, seed)
    for mine, theirs in _pairs(ours, official, 1):
        assert torch.equal(mine, theirs)
    assert torch.equal(ours.rng_state, official_state)  # the stream the episodes then draw from


def test_sac_update_is_the_official():
    """Three updates on random batches (some transitions not done: the discount counts; the
    second and third use the alpha of the update before): every parameter of the actor, both
    critics, both targets and log alpha equals the official update's."""
    seed, n = 5, 300
    c = RLBMI().config
    official = OfficialAgent(100, 100, seed, HIDDEN_SIZE)
    ours = _ours(1, seed, c)
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        official.memory.add(
            torch.rand(1, 100, generator=g).numpy() * 2 - 1,
            torch.rand(100, generator=g) * 2 - 1,
            float(torch.randn((), generator=g) * 5),
            torch.rand(1, 100, generator=g).numpy() * 2 - 1,
            bool(torch.rand((), generator=g) < 0.5),
        )
    random.seed(11)
    for it in range(3):
        batch = official.memory.sample()
        torch.manual_seed(100 + it)
        official.learn(0, batch, GAMMA)
        noise = torch.Generator().manual_seed(100 + it)
        ours.learn(
            tuple(t[None] for t in batch), lambda g=noise: torch.randn((), generator=g), c.gamma, c.tau
        )
        for mine, theirs in _pairs(ours, official):
            assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6), it
    assert torch.allclose(ours.alpha.flatten(), official.alpha.detach())
    assert not torch.allclose(ours.actor.fc1.weight, _ours(1, seed, c).actor.fc1.weight)  # it moved


def test_independent_agents_update_independently():
    """Agents of a batch with different data: each one's update is its own single-agent update."""
    seed, c = 2, RLBMI().config
    pair, single = _ours(2, seed, c), [_ours(1, seed, c), _ours(1, seed, c)]
    g = torch.Generator().manual_seed(0)
    batch = tuple(torch.rand(2, 16, d, generator=g) for d in (100, 100, 1, 100, 1))
    pair.learn(batch, lambda: torch.tensor(0.3), c.gamma, c.tau)
    for i, agent in enumerate(single):
        agent.learn(tuple(t[i : i + 1] for t in batch), lambda: torch.tensor(0.3), c.gamma, c.tau)
        for (name, p), q in zip(pair.named_parameters(), agent.parameters()):
            assert torch.allclose(p[i], q[0], rtol=1e-4, atol=1e-6), name


# ---- whole attacks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "alpha", "episodes"), [(1, 0.0, 120), (2, 0.4, 60)])
def test_batched_attack_is_the_official_per_identity_loop(steps, alpha, episodes, monkeypatch):
    """Two identities attacked together through the black box equal the official script
    (``main.py``: an agent seeded with the run seed per identity, ``attack.py::inversion``): the
    same test image selected, at the same confidence, with three queries per episode at one
    step (2 per step + 1 test). SAC batches of 16 (official 256) and 32 hidden units (official
    256, an argument of ``Agent``) so that the policy learns for most of the short run, and
    the image selected is one the learned policy made."""
    monkeypatch.setitem(globals(), "BATCH_SIZE", 16)
    G, T = _tiny_models()
    seed, labels = 7, [1, 3]
    c = RLBMI(
        {"batch_size": 16, "hidden": 32, "episodes": episodes, "steps": steps, "state_alpha": alpha}
    ).config
    want = []
    for label in labels:
        agent = OfficialAgent(100, 100, seed, 32)
        want.append(official_inversion(agent, G, lambda x: (None, T(x)), alpha, 100, episodes, steps, label))
    query = BlackBox(T)
    z, best, info = rlb_attack(G, query, torch.tensor(labels), c, z_dim=100, seed=seed)
    assert info["updates"] == episodes * steps - 16
    assert query.queries == len(labels) * episodes * (2 * steps + 1)
    for i, (image, score) in enumerate(want):
        assert best[i].item() == pytest.approx(score, abs=1e-5)
        assert torch.allclose(G(z[i : i + 1]), image, atol=1e-4)
    early = RLBMI({**c, "episodes": 16 // steps}).config
    _, before_learning, _ = rlb_attack(G, query, torch.tensor(labels), early, z_dim=100, seed=seed)
    assert (best > before_learning).all()


def test_paper_budget_is_the_official():
    # SAC.py constants; main.py Agent(hidden_size=256), z_dim 100; run_experiments.sh (paper):
    # -max_episodes 40000 -max_step 1 -alpha 0; attack.py: reward 2 score1 + 2 score2 + 8 score3
    c = RLBMI().config
    assert {
        "GAMMA": c.gamma,
        "TAU": c.tau,
        "BUFFER_SIZE": c.buffer,
        "BATCH_SIZE": c.batch_size,
        "LR_ACTOR": c.lr_actor,
        "LR_CRITIC": c.lr_critic,
        "hidden_size": c.hidden,
        "z_dim": RLBMI.z_dim,
        "max_episodes": c.episodes,
        "max_step": c.steps,
        "alpha": c.state_alpha,
        "reward": c.weights,
        "floor": c.floor,
    } == {
        "GAMMA": GAMMA,
        "TAU": TAU,
        "BUFFER_SIZE": BUFFER_SIZE,
        "BATCH_SIZE": BATCH_SIZE,
        "LR_ACTOR": LR_ACTOR,
        "LR_CRITIC": LR_CRITIC,
        "hidden_size": 256,
        "z_dim": 100,
        "max_episodes": 40000,
        "max_step": 1,
        "alpha": 0.0,
        "reward": (2.0, 2.0, 8.0),
        "floor": 1e-7,
    }
    assert RLBMI.threat_model == "black-box" and RLBMI.prior_kind == "gmi-gan"


def test_reward_weights_need_three_values():
    from reinv_bench.api import ConfigError

    with pytest.raises(ConfigError, match="weights=2/2/8"):
        RLBMI({"weights": "2/8"})


# ---- black-box isolation ------------------------------------------------------------------------


class _Spy(nn.Module):
    """A target that records every forward and whether gradients were enabled during it."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        self.calls.append(torch.is_grad_enabled())
        return self.net(x)


class _Watched(BlackBox):
    """The harness's black-box view, recording every attribute the attack reads of it (its own
    ``__call__`` reads the module, as the harness's does) and every answer it gives."""

    def __init__(self, model):
        object.__setattr__(self, "read", set())
        object.__setattr__(self, "answers", [])
        object.__setattr__(self, "inside", False)
        super().__init__(model)

    def __getattribute__(self, name):
        if name not in ("read", "answers", "inside") and not object.__getattribute__(self, "inside"):
            object.__getattribute__(self, "read").add(name)
        return object.__getattribute__(self, name)

    def __call__(self, x):
        object.__setattr__(self, "inside", True)
        try:
            out = super().__call__(x)
        finally:
            object.__setattr__(self, "inside", False)
        self.answers.append(out)
        return out


def test_black_box_attacker_only_calls_the_query_function(monkeypatch):
    """The attack gets the view, calls it, and reads nothing of it (not the module, its
    parameters or gradients); every forward of the target runs without gradients; the
    probabilities it gets carry no graph; the queries are counted and reported per identity."""
    G, T = _tiny_models()
    spy = _Spy(T)
    spy.requires_grad_(True)  # a gradient taken through the target would land here
    view = _Watched(spy)
    view.read.clear()
    monkeypatch.setattr(RLBMI, "load_prior", lambda self, prior, shape, dev: (G, None))

    class Ctx:
        scenario = type("S", (), {"image_shape": SHAPE})
        target, device, seed = view, torch.device("cpu"), 0

        @staticmethod
        def progress(i, n):
            pass

        @staticmethod
        def fp32():
            return torch.autocast("cpu", enabled=False)

    attack = RLBMI({"episodes": 40, "batch_size": 16, "hidden": 32, "batch_ids": 2}, budget="smoke")
    inv = attack.invert(Ctx, {"gmi-gan": {}}, [0, 2, 4])
    object.__setattr__(view, "inside", True)  # the test's own reads below are not recorded
    assert view.read == set(), view.read
    assert spy.calls and not any(spy.calls)
    assert all(p.grad is None for p in spy.parameters())
    assert all(not o.requires_grad and o.grad_fn is None for o in view.answers)
    assert view.queries == 3 * 40 * 3 == inv.info["queries_per_identity"] * inv.info["identities"]
    assert inv.images.shape == (3, *SHAPE) and inv.labels.tolist() == [0, 2, 4]


# ---- through the harness ------------------------------------------------------------------------


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_smoke_run_on_the_digits_records_the_queries(tmp_path):
    from reinv_bench.engine.plan import Request, expand
    from reinv_bench.engine.runner import Runner
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.store import Store

    reg = load()
    plan = expand(Request(["rlbmi"], ["none"], budget="smoke", metrics=["attack_acc"]), reg)
    Runner(reg, tmp_path, torch.device("cpu")).run(plan, Store(tmp_path / "results.db"))
    (row,) = Store(tmp_path / "results.db").rows()
    assert row["status"] == "ok", row["error"]
    assert row["threat_model"] == "black-box"
    c = RLBMI(budget="smoke").config
    classes = reg.get("scenario", row["scenario"]).target_classes()
    assert row["timings"]["queries"] == len(classes) * c.episodes * (2 * c.steps + 1)
