"""``mllm``: a vision-language model judges each reconstruction, as in MI-Eval-MLLM (Ho et al.,
CVPR 2026 Findings, arXiv 2505.03519; hosytuyen/MI-Eval-MLLM @89010bc, ``utility.py``): the
panel of ``create_concatenated_images_with_labels`` (the reconstruction beside four private
training images of its class, the question drawn in red; see ``_panel``) goes as one PNG with the
expert prompt of ``get_prompt_for_image`` to a model served behind an OpenAI-compatible
``/v1/chat/completions`` endpoint (vLLM, SGLang, hosted APIs), in the message layout of the
official ``ChatGPTProcessor.process_image``; the reply is read by the official
``categorize_response``: yes, no, or a refusal (no answer).

    reinv-bench run -a gmi -d none --judge "mllm[url=http://localhost:8000/v1,model=Qwen/Qwen2.5-VL-72B-Instruct]"

Options (``--judge "mllm[key=value,...]"``) or environment: ``url`` (``REINV_BENCH_MLLM_URL``: the
base URL, ``.../v1``), ``model`` (``REINV_BENCH_MLLM_MODEL``); the API key is read from
``REINV_BENCH_MLLM_KEY`` or ``OPENAI_API_KEY`` and never stored (vLLM needs none). ``prompt``:
``regular`` (the study's evaluation prompt, "Only answer yes or no") or ``user_study`` (the
variant that allows a refusal). ``rps``: at most this many requests per second. A request that
gets 429, a 5xx or no connection is retried ``retries`` times with exponential backoff (1, 2, 4
... s, or the server's ``Retry-After``). The model's name and the counts of yes / no / refusals /
failures are stored as the judge's note.

Deliberate differences from the official code: a reply that is neither yes nor no is no answer
(the official main evaluation, ``normalize_response``, counts it as no, which would inflate the
evaluation model's false-positive rate; its user-study evaluation, ``categorize_response``, keeps
it apart as here); a request that fails after its retries is no answer with the reason in the
note (the official code skips the image); the server that answers none of the first three
panels stops the judge (the cell stores null with the reason) rather than failing every panel.
Prompts, question and panel for digits (not in the study): see ``_panel``. The HTTP client is the
standard library's ``urllib`` (one POST per panel): no further dependency, no extra to install.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter

from reinv_bench import hookimpl
from reinv_bench.api import EvalContext, Judge, Param, Verdicts

from . import _panel

ENV_URL, ENV_MODEL, ENV_KEYS = (
    "REINV_BENCH_MLLM_URL",
    "REINV_BENCH_MLLM_MODEL",
    ("REINV_BENCH_MLLM_KEY", "OPENAI_API_KEY"),
)
RETRY_STATUS = {408, 409, 429} | set(range(500, 600))
GIVE_UP_AFTER = 3  # panels that all failed, before any answer: the server is not answering
NEGATIONS = ("not", "nothing", "now", "know", "known")  # words that make a "no" ambiguous


def categorize(reply: str | None) -> str:
    """``"yes"``, ``"no"`` or ``"refuse"``: the official ``categorize_response`` (``utility.py``)
    in fewer steps: "yes" as a word wins; "no" as a word counts unless "not", "nothing", "now",
    "know" or "known" is there too, then only when the reply starts or ends with "no" and has no
    "not" or "nothing"; anything else is a refusal (its ``is_refusal`` branches all return it)."""
    if reply is None:
        return "refuse"
    lower = reply.strip().lower()
    words = re.sub(r"[^\w\s]", " ", lower).split()
    if "yes" in words:
        return "yes"
    if "no" in words:
        if not any(w in words for w in NEGATIONS):
            return "no"
        at_edge = re.match(r"^no[\s,\.!?]", lower) or re.search(r"[\s,\.!?]no[\s,\.!?]*$", lower)
        if at_edge and "not" not in words and "nothing" not in words:
            return "no"
    return "refuse"


class Failed(RuntimeError):
    """A panel got no reply: the reason, in one line."""


class MLLMJudge(Judge):
    """A vision-language model behind an OpenAI-compatible endpoint answers MI-Eval-MLLM's question
    on its panel (the reconstruction beside four private images of its class); refusals and
    failed requests are no answer, and the model's name is recorded."""

    name = "mllm"
    params = {
        "url": Param(
            "", f"base URL of the OpenAI-compatible API, e.g. http://host:8000/v1 (default: ${ENV_URL})"
        ),
        "model": Param("", f"the served model's name (default: ${ENV_MODEL})"),
        "prompt": Param(
            "regular",
            "regular (answer yes or no) | user_study (a refusal is allowed)",
            choices=("regular", "user_study"),
        ),
        "rps": Param(2.0, "at most this many requests per second", low=0.01),
        "retries": Param(5, "retries of a request that gets 429, a 5xx or no connection", low=0),
        "timeout": Param(120.0, "seconds to wait for one reply", low=1.0),
        "seed": Param(0, "seed of the private images drawn for each panel"),
        "kind": Param(
            "auto",
            "what the classes are: auto (from the scenario's name) | face | object | dog | digit",
            choices=("auto", *_panel.KINDS),
            new=True,
        ),
    }

    def kind(self, scenario: str) -> str:
        return _panel.resolve(self.config["kind"], scenario, 'give --judge "mllm[kind=...]"')

    def protocol_note(self, scenario) -> str:
        try:
            kind = self.kind(scenario.name)
        except ValueError as exc:
            return f"mllm: {exc}"
        model = self.config["model"] or os.environ.get(ENV_MODEL) or f"the model ${ENV_MODEL} names"
        return (
            f"{model}, behind an OpenAI-compatible endpoint, is asked MI-Eval-MLLM's question "
            f'"{_panel.QUESTIONS[kind]}" on a panel of the reconstruction beside four private training '
            f"images of its class ({self.config['prompt']} prompt); refusals and failed requests are no "
            "answer."
        )

    def endpoint(self) -> tuple[str, str]:
        """(chat-completions URL, model name) from the options, else the environment."""
        url = self.config["url"] or os.environ.get(ENV_URL, "")
        model = self.config["model"] or os.environ.get(ENV_MODEL, "")
        if not url or not model:
            raise ValueError(
                f"mllm needs an endpoint and a model: --judge 'mllm[url=http://host:8000/v1,model=NAME]' "
                f"or set {ENV_URL} and {ENV_MODEL}"
            )
        url = url.rstrip("/")
        return (url if url.endswith("/chat/completions") else url + "/chat/completions"), model

    def judge(self, ctx: EvalContext) -> Verdicts:
        kind = self.kind(ctx.scenario.name)
        url, model = self.endpoint()
        prompt = (_panel.PROMPTS if self.config["prompt"] == "regular" else _panel.USER_STUDY)[kind]
        priv = ctx.data.private_train
        rng = random.Random(self.config["seed"])
        pace = Pace(self.config["rps"])
        answers: list[bool | None] = []
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for chunk in ctx.inversion.chunks():
            for image, label in zip(chunk.images, chunk.labels.tolist()):
                shown = _panel.pick_private((priv.y == label).nonzero().flatten().tolist(), rng)
                png = _panel.png(_panel.panel(image, list(priv.x[shown].to("cpu")), _panel.QUESTIONS[kind]))
                try:
                    reply = self.ask(url, model, prompt, png, pace)
                except Failed as exc:
                    answers.append(None)
                    counts["failed"] += 1
                    reasons[str(exc)] += 1
                    if counts["failed"] >= GIVE_UP_AFTER and counts.total() == counts["failed"]:
                        raise RuntimeError(
                            f"mllm: {model} at {url} answered none of the first panels: {exc}"
                        ) from None
                    continue
                verdict = categorize(reply)
                counts[verdict] += 1
                answers.append({"yes": True, "no": False}.get(verdict))
        why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        note = (
            f"{model} at {url} ({self.config['prompt']} prompt): {counts['yes']} yes, {counts['no']} no, "
            f"{counts['refuse']} refused, {counts['failed']} failed" + (f" ({why})" if why else "")
        )
        return Verdicts(answers, note)

    def ask(self, url: str, model: str, prompt: str, png: bytes, pace: Pace) -> str | None:
        """The model's reply to one panel (None: a refusal without text), retried with backoff on
        429, 5xx and lost connections; ``Failed`` with the reason otherwise."""
        image = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        body = {  # official ChatGPTProcessor.process_image: one user message, the text then the image
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": image}},
                    ],
                }
            ],
        }
        headers = {"Content-Type": "application/json"}
        key = next((os.environ[k] for k in ENV_KEYS if os.environ.get(k)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        for attempt in range(self.config["retries"] + 1):
            pace.wait()
            try:
                with urllib.request.urlopen(request, timeout=self.config["timeout"]) as resp:
                    return reply_text(resp.read())
            except urllib.error.HTTPError as exc:
                reason, wait = f"HTTP {exc.code}", retry_after(exc.headers.get("Retry-After"))
                if exc.code not in RETRY_STATUS:
                    raise Failed(f"{reason} {exc.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason, wait = f"no reply ({getattr(exc, 'reason', exc)})", None
            if attempt < self.config["retries"]:
                time.sleep(wait if wait is not None else 2.0**attempt)
        raise Failed(f"{reason} after {self.config['retries'] + 1} tries")


def reply_text(raw: bytes) -> str | None:
    """The text of a chat-completions reply; None for a refusal (``message.refusal`` or a
    content filter) without text; ``Failed`` when it is not such a reply."""
    try:
        choice = json.loads(raw)["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise Failed(f"malformed reply ({raw[:60]!r})") from None
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not content and (message.get("refusal") or choice.get("finish_reason") == "content_filter"):
        return None
    if not isinstance(content, str):
        raise Failed(f"malformed reply ({raw[:60]!r})")
    return content


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (seconds only; a date is ignored), at most a minute."""
    try:
        return min(max(float(value), 0.0), 60.0) if value else None
    except ValueError:
        return None


class Pace:
    """At most ``rps`` requests per second: ``wait()`` before each one."""

    def __init__(self, rps: float) -> None:
        self.interval, self.last = 1.0 / rps, -float("inf")

    def wait(self) -> None:
        delay = self.last + self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.last = time.monotonic()


@hookimpl
def register_judges():
    return [MLLMJudge]
