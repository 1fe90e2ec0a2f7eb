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
``regular`` (the study's evaluation prompt, "Only answer yes or no"), ``user_study`` (the
variant that allows a refusal) or ``gpt5`` (the official GPT-5 variant: its prompt, question and
taller question band; faces only, see ``_panel``). ``refusal``: what a reply that is neither yes
nor no counts as: ``none`` (default: no answer, as the official user-study evaluation
``categorize_response``) or ``no`` (as the official main evaluation, ``normalize_response``). The
evaluation model's false-positive rate (``eval_fpr``, FP / (FP + TN) over the panels the judge
says no to) reads the stored answers, so it counts refusals among the judge's "no" with
``refusal=no`` and leaves them out with ``refusal=none``; the note counts them either way.

Transport (how answers are fetched, not what they are: kept out of the cell's identity and the
column's label, so changing one never re-evaluates a cell under a new column; the model is in
both): ``rps`` (at most this many requests per second), ``timeout`` (a wall-clock deadline on one
request, reply body included: a server that trickles its reply is cut off), ``retries`` (a
request that gets 429, a 5xx, no connection or no reply in time is retried with exponential
backoff, 1, 2, 4 ... s, or the server's ``Retry-After``), ``total`` (seconds all requests of one
cell may take), ``give_up`` (failed panels in a row after which the judge stops). A redirect is
never followed (the key is never sent to another address), a reply over 1 MiB is cut off, a
malformed reply is a failed answer. When the judge stops (``give_up`` failures in a row, or
``total`` spent) the cell stores null with the reason, and the next ``run`` asks again (a judge
that stored null is retried). URLs in notes and messages are shown without their userinfo and
query string. The model's name and the counts of yes / no / refusals / failures are stored as the
judge's note.

Deliberate differences from the official code: a request that fails after its retries is no answer
with the reason in the note (the official code skips the image). Prompts, question and panel for
digits (not in the study): see ``_panel``. The HTTP client is the standard library's
``http.client`` (one POST per panel; no proxy support): no further dependency, no extra to install.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, EvalContext, Judge, Param, Verdicts

from . import _panel

ENV_URL, ENV_MODEL, ENV_KEYS = (
    "REINV_BENCH_MLLM_URL",
    "REINV_BENCH_MLLM_MODEL",
    ("REINV_BENCH_MLLM_KEY", "OPENAI_API_KEY"),
)
RETRY_STATUS = {408, 409, 429} | set(range(500, 600))
MAX_REPLY = 2**20  # bytes of one reply (a chat completion's yes or no is a few hundred)
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


class Retry(Failed):
    """A request worth trying again (429, a 5xx, no connection, no reply in time)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


def redact(url: str) -> str:
    """``url`` without its userinfo and query string (what notes and messages show)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unreadable URL>"
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class MLLMJudge(Judge):
    """A vision-language model behind an OpenAI-compatible endpoint answers MI-Eval-MLLM's question
    on its panel (the reconstruction beside four private images of its class); refusals (or, with
    ``refusal=no``, "no") and failed requests are no answer, and the model's name is recorded."""

    name = "mllm"
    params = {
        "url": Param(
            "", f"base URL of the OpenAI-compatible API, e.g. http://host:8000/v1 (default: ${ENV_URL})"
        ),
        "model": Param("", f"the served model's name (default: ${ENV_MODEL})"),
        "prompt": Param(
            "regular",
            "regular (answer yes or no) | user_study (a refusal is allowed) | gpt5 (the official GPT-5 "
            "variant, faces only)",
            choices=("regular", "user_study", "gpt5"),
        ),
        "refusal": Param(
            "none",
            "a reply that is neither yes nor no counts as: none (no answer, the official user-study "
            "evaluation) | no (the official main evaluation); eval_fpr reads the stored answers",
            choices=("none", "no"),
            new=True,
        ),
        "rps": Param(2.0, "at most this many requests per second", low=0.01),
        "retries": Param(5, "retries of a request that gets 429, a 5xx, no connection or no reply", low=0),
        "timeout": Param(120.0, "seconds one request may take, reply included (wall clock)", low=1.0),
        "total": Param(
            86400.0,
            "seconds all requests of one cell may take (then the cell stores null)",
            low=1.0,
            new=True,
        ),
        "give_up": Param(3, "failed panels in a row after which the judge stops", low=1, new=True),
        "seed": Param(0, "seed of the private images drawn for each panel"),
        "kind": Param(
            "auto",
            "what the classes are: auto (as the scenario declares) | face | object | dog | digit",
            choices=("auto", *_panel.KINDS),
            new=True,
        ),
    }
    transport = ("url", "rps", "retries", "timeout", "total", "give_up")

    def kind(self, scenario) -> str:
        kind = _panel.resolve(self.config["kind"], scenario, 'give --judge "mllm[kind=...]"')
        if self.config["prompt"] == "gpt5" and kind != "face":
            raise ValueError(
                f"mllm[prompt=gpt5]: the official GPT-5 variant asks about faces; scenario "
                f"{getattr(scenario, 'name', scenario)!r} has {kind} classes: give prompt=regular"
            )
        return kind

    def check(self, scenario=None) -> dict[str, str]:
        """At plan time: the endpoint and the model are given and the URL is usable (an error
        otherwise); the model read from the environment, which belongs to the cell's identity."""
        self.endpoint()
        if scenario is not None:
            self.kind(scenario)
        return {} if self.config["model"] else {"model": self.endpoint()[1]}

    def protocol_note(self, scenario) -> str:
        try:
            kind = self.kind(scenario)
        except ValueError as exc:
            return f"mllm: {exc}"
        model = self.config["model"] or os.environ.get(ENV_MODEL) or f"the model ${ENV_MODEL} names"
        refusal = "no" if self.config["refusal"] == "no" else "no answer"
        return (
            f"{model}, behind an OpenAI-compatible endpoint, is asked MI-Eval-MLLM's question "
            f'"{self.question(kind)}" on a panel of the reconstruction beside four private training '
            f"images of its class ({self.config['prompt']} prompt); refusals count as {refusal}, failed "
            "requests are no answer."
        )

    def question(self, kind: str) -> str:
        return (
            " ".join(_panel.GPT5_QUESTION.split())
            if self.config["prompt"] == "gpt5"
            else _panel.QUESTIONS[kind]
        )

    def endpoint(self) -> tuple[str, str]:
        """(chat-completions URL, model name) from the options, else the environment; a URL that
        is not http(s)://host/... is an error."""
        url = self.config["url"] or os.environ.get(ENV_URL, "")
        model = self.config["model"] or os.environ.get(ENV_MODEL, "")
        if not url or not model:
            raise ConfigError(
                f"mllm needs an endpoint and a model: --judge 'mllm[url=http://host:8000/v1,model=NAME]' "
                f"or set {ENV_URL} and {ENV_MODEL}"
            )
        try:
            parts = urllib.parse.urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"mllm: url {redact(url)!r} is not an http:// or https:// address with a host "
                "(e.g. http://host:8000/v1)"
            )
        path = parts.path.rstrip("/")
        path = path if path.endswith("/chat/completions") else path + "/chat/completions"
        return urllib.parse.urlunsplit(parts._replace(path=path, fragment="")), model

    def judge(self, ctx: EvalContext) -> Verdicts:
        kind = self.kind(ctx.scenario)
        url, model = self.endpoint()
        shown = redact(url)
        prompt = {"regular": _panel.PROMPTS, "user_study": _panel.USER_STUDY}.get(self.config["prompt"])
        prompt = _panel.GPT5_PROMPT if prompt is None else prompt[kind]
        gpt5 = self.config["prompt"] == "gpt5"
        question = _panel.GPT5_QUESTION if gpt5 else _panel.QUESTIONS[kind]
        band = _panel.GPT5_QUESTION_H if gpt5 else _panel.QUESTION_H
        priv = ctx.data.private_train
        rng = random.Random(self.config["seed"])
        pace = Pace(self.config["rps"])
        end = time.monotonic() + self.config["total"]
        answers: list[bool | None] = []
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        in_a_row = 0
        total = len(ctx.inversion.labels)
        for chunk in ctx.inversion.chunks():
            for image, label in zip(chunk.images, chunk.labels.tolist()):
                shown_priv = _panel.pick_private((priv.y == label).nonzero().flatten().tolist(), rng)
                png = _panel.png(_panel.panel(image, list(priv.x[shown_priv].to("cpu")), question, band))
                try:
                    reply = self.ask(url, model, prompt, png, pace, end)
                except Failed as exc:
                    answers.append(None)
                    counts["failed"] += 1
                    reasons[str(exc)] += 1
                    in_a_row += 1
                    if in_a_row >= self.config["give_up"] or time.monotonic() >= end:
                        why = (
                            f"{in_a_row} panel(s) in a row failed"
                            if in_a_row >= self.config["give_up"]
                            else f"its total of {self.config['total']:g} s is spent"
                        )
                        raise RuntimeError(
                            f"mllm: {model} at {shown} gave up after {len(answers)} of {total} panels, "
                            f"{why}: {exc}"
                        ) from None
                    continue
                in_a_row = 0
                verdict = categorize(reply)
                counts[verdict] += 1
                if self.config["refusal"] == "no":
                    answers.append(verdict == "yes")  # official normalize_response: anything else is no
                else:
                    answers.append({"yes": True, "no": False}.get(verdict))
        why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        note = (
            f"{model} at {shown} ({self.config['prompt']} prompt): {counts['yes']} yes, {counts['no']} no, "
            f"{counts['refuse']} refused, {counts['failed']} failed"
            + (f" ({why})" if why else "")
            + ("; refusals counted as no" if self.config["refusal"] == "no" else "")
        )
        return Verdicts(answers, note)

    def ask(
        self, url: str, model: str, prompt: str, png: bytes, pace: Pace, end: float = float("inf")
    ) -> str | None:
        """The model's reply to one panel (None: a refusal without text), retried with backoff on
        429, 5xx, lost connections and replies past the deadline; ``Failed`` with the reason
        otherwise (also when the cell's total time ``end``, a ``time.monotonic()``, is reached)."""
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
        data = json.dumps(body).encode()
        tries = self.config["retries"] + 1
        reason = "no try"
        for attempt in range(tries):
            left = end - time.monotonic()
            if left <= 0:
                raise Failed(f"{reason}; the cell's total time is spent")
            pace.wait()
            try:
                return reply_text(post(url, data, headers, min(self.config["timeout"], left)))
            except Retry as exc:
                reason, wait = str(exc), exc.wait
            if attempt < tries - 1:
                time.sleep(min(wait if wait is not None else 2.0**attempt, max(end - time.monotonic(), 0)))
        raise Failed(f"{reason} after {tries} tries")


def post(url: str, data: bytes, headers: dict[str, str], timeout: float, cap: int = MAX_REPLY) -> bytes:
    """POST ``data`` to ``url`` and return the reply's body: the whole exchange within ``timeout``
    seconds of wall clock (a timer closes the connection then), no redirect followed, at most
    ``cap`` bytes read. ``Retry`` for what may pass (429, 5xx, no connection, no reply in time),
    ``Failed`` otherwise."""
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    cut = threading.Event()

    def deadline() -> None:
        cut.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, deadline)
    timer.daemon = True
    timer.start()
    late = f"no reply within {timeout:g} s"
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if parts.username is not None and "Authorization" not in headers:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers = {**headers, "Authorization": "Basic " + base64.b64encode(creds.encode()).decode()}
        conn.request("POST", path, data, headers)
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise Failed(f"HTTP {resp.status} redirect not followed (the request goes to the given URL only)")
        body, size = [], 0
        while True:
            part = resp.read1(65536)
            if not part:
                break
            size += len(part)
            if size > cap:
                raise Failed(f"reply larger than {cap} bytes")
            body.append(part)
        if cut.is_set():
            raise Retry(late)
        if resp.status >= 400:
            reason = f"HTTP {resp.status} {resp.reason}"
            if resp.status in RETRY_STATUS:
                raise Retry(reason, retry_after(resp.getheader("Retry-After")))
            raise Failed(reason)
        return b"".join(body)
    except Failed:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if cut.is_set():
            raise Retry(late) from None
        raise Retry(f"no reply ({type(exc).__name__}: {str(exc)[:80]})") from None
    finally:
        timer.cancel()
        conn.close()


def reply_text(raw: bytes) -> str | None:
    """The text of a chat-completions reply; None for a refusal (``message.refusal`` or a
    content filter) without text; ``Failed`` when it is not such a reply (whatever it holds)."""
    try:
        choice = json.loads(raw)["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not content and (message.get("refusal") or choice.get("finish_reason") == "content_filter"):
            return None
    except Exception:  # noqa: BLE001 - whatever the server sent: a failed answer, never the cell's
        content = None
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
