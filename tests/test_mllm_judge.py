"""Issue 19: the multimodal-model judge (``mllm``) against a local stub of an OpenAI-compatible
``/v1/chat/completions`` server (``http.server`` in a thread): yes, no, refusals (in words, in the
``refusal`` field), a malformed reply, a 500 then success, a 429 with Retry-After, a 400 that is
not retried, a server that always fails and one that is not there; the request's layout, the key
read from the environment and never stored, the rate limit; a real run whose cell keeps its
metrics when the judge's server fails. The panel, the prompts and the reply parser are compared
with transcriptions of MI-Eval-MLLM's official code (hosytuyen/MI-Eval-MLLM @89010bc, utility.py)
written here."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch
from reinv_judges import _panel, mllm
from reinv_judges.mllm import MLLMJudge, categorize

from reinv_bench.api import EvalContext, Inversion, Split

# ---------------------------------------------------------------------------------------------
# Transcriptions of the official code (hosytuyen/MI-Eval-MLLM @89010bc, utility.py)


def official_is_refusal(response):  # utility.py::is_refusal, verbatim
    if response is None:
        return True
    response_lower = response.strip().lower()
    refusal_phrases = [
        "cannot", "can't", "unable to", "refuse", "decline",
        "not able to", "not allowed", "not permitted", "not appropriate",
        "i cannot", "i can't", "i'm unable", "i refuse",
        "i don't", "i do not", "i won't", "i will not",
        "sorry,", "i apologize", "not comfortable", "not ethical",
        "cannot determine", "cannot identify", "cannot recognize",
        "cannot answer", "unable to determine", "unable to identify",
        "unable to recognize", "unable to answer", "i'm not able",
        "i cannot determine", "i cannot identify", "i cannot recognize",
        "i cannot answer", "i'm not comfortable", "i decline",
        "i refuse to", "i will not answer", "i won't answer",
    ]  # fmt: skip
    for phrase in refusal_phrases:
        if phrase in response_lower:
            return True
    if len(response_lower) < 3:
        return True
    if "yes" not in response_lower and "no" not in response_lower:
        affirmative_words = ["correct", "true", "same", "match", "identical"]
        negative_words = ["incorrect", "false", "different", "not the same", "not match"]
        if not any(word in response_lower for word in affirmative_words + negative_words):
            return True
    return False


def official_categorize_response(response):  # utility.py::categorize_response, verbatim
    if response is None:
        return "refuse"
    response_lower = response.strip().lower()
    response_normalized = re.sub(r"[^\w\s]", " ", response_lower)
    response_normalized = " ".join(response_normalized.split())
    if re.search(r"\byes\b", response_normalized):
        return "yes"
    if re.match(r"^yes[\s,\.!?]", response_lower) or re.search(r"[\s,\.!?]yes[\s,\.!?]*$", response_lower):
        return "yes"
    if re.search(r"\bno\b", response_normalized):
        if (
            not re.search(r"\bnot\b", response_normalized)
            and not re.search(r"\bnothing\b", response_normalized)
            and not re.search(r"\bnow\b", response_normalized)
            and not re.search(r"\bknow\b", response_normalized)
            and not re.search(r"\bknown\b", response_normalized)
        ):
            return "no"
    if re.match(r"^no[\s,\.!?]", response_lower) or re.search(r"[\s,\.!?]no[\s,\.!?]*$", response_lower):
        words = response_normalized.split()
        if "no" in words and "not" not in words and "nothing" not in words:
            return "no"
    if official_is_refusal(response_lower):
        return "refuse"
    return "refuse"


# utility.py::get_prompt_for_image (regular and user_study) and the questions of
# create_concatenated_images_with_labels, verbatim
OFFICIAL_PROMPTS = {
    "object": "You are an expert in CIFAR100 object recognition. Taking into account different lighting, angles, backgrounds, and variations in appearance, do the task in the image. Only answer yes or no",  # noqa: E501
    "face": "You are an expert in face recognition. Taking into account the face aging, lighting, different hair styles, wearing and not wearing of eye glasses or other accessory, do the task in the image. Only answer yes or no",  # noqa: E501
    "dog": "You are an expert in dog breed recognition. Taking into account different lighting, angles, backgrounds, and variations in appearance, do the task in the image. Only answer yes or no",  # noqa: E501
}
OFFICIAL_USER_STUDY = {
    "object": "You are an expert in CIFAR100 object recognition. Look at the image carefully. Does Image A depict the same object class as the images in Set B? Only answer yes or no. If you cannot determine or are not comfortable answering, you may refuse to answer.",  # noqa: E501
    "face": "You are an expert in face recognition. Look at the image carefully. Does Image A depict the same individual as the images in Set B? Only answer yes or no. If you cannot determine or are not comfortable answering, you may refuse to answer.",  # noqa: E501
    "dog": "You are an expert in dog breed recognition. Look at the image carefully. Does Image A depict the same breed as the images in Set B? Only answer yes or no. If you cannot determine or are not comfortable answering, you may refuse to answer.",  # noqa: E501
}
OFFICIAL_QUESTIONS = {
    "object": "Does Image A depict the same object class as the images in Set B?",
    "face": "Does Image A depict the same individual as the images in Set B?",
    "dog": "Does Image A depict the same breed as the images in Set B?",
}

REPLIES = [
    "Yes", "yes.", "YES!", "No", "no.", " No ", "Yes, they are the same person.", "No, they are different.",
    "No, I don't know.", "no, I do not know", "I don't know", "Not sure", "No, not the same",
    "nothing to say, no", "I now see: no", "known, no.", "I'm sorry, I can't help with that.",
    "I cannot determine identity.", "Unclear", "", "?", "yes no", "nope", "Yesterday", "noon", "No_",
    "The answer is: no", "Answer: Yes", "no!", "No? maybe", "It is not possible to say; no",
    "Yes\nNo", "I know no one", "no, nothing", "Non", "knows no", "NO.", "yes_no", None,
]  # fmt: skip


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_parsing_is_the_official_categorize_response(reply):
    assert categorize(reply) == official_categorize_response(reply)


def test_prompts_and_questions_are_the_official_ones():
    for kind in ("object", "face", "dog"):
        assert _panel.PROMPTS[kind] == OFFICIAL_PROMPTS[kind]
        assert _panel.USER_STUDY[kind] == OFFICIAL_USER_STUDY[kind]
        assert _panel.QUESTIONS[kind] == OFFICIAL_QUESTIONS[kind]
    # what the classes are comes from the scenario's declaration (Scenario.class_kind), never its name
    from reinv_bench.registry.lookup import load

    reg = load()
    assert [
        _panel.kind_of(reg.get("scenario", s)) for s in ("celeba64", "facescrub224-ffhq", "mnist-gmi")
    ] == [
        "face",
        "face",
        "digit",
    ]
    assert "same digit" in _panel.QUESTIONS["digit"]


def test_panel_has_the_official_layout():
    """create_concatenated_images_with_labels: Image A at (0, 0), 224 px; 100 px of white; Set B
    at x = 324 + 224 j; a 50-px label band and a 50-px question band below: 1220 x 324."""
    rec = torch.full((3, 64, 64), -1.0)  # black
    privs = [torch.full((1, 28, 28), v) for v in (-0.5, 0.0, 0.5, 1.0)]  # grey levels
    img = _panel.panel(rec, privs, _panel.QUESTIONS["face"])
    assert img.size == (224 + 100 + 4 * 224, 224 + 50 + 50) == (1220, 324)
    assert img.getpixel((112, 112)) == (0, 0, 0)
    assert img.getpixel((224 + 50, 112)) == (255, 255, 255)  # the gap
    for j, v in enumerate((-0.5, 0.0, 0.5, 1.0)):
        g = round((v + 1) * 127.5)
        assert img.getpixel((324 + 224 * j + 112, 112)) == (g, g, g)
    band = [img.getpixel((x, y)) for x in range(0, 1220, 2) for y in range(274, 324)]
    assert any(p[0] > 200 and p[1] < 80 and p[2] < 80 for p in band)  # the question in red
    label = [img.getpixel((x, y)) for x in range(0, 224) for y in range(224, 274)]
    assert any(p == (0, 0, 0) for p in label)  # "Image A" in black


def test_private_images_are_sampled_then_padded_as_the_official_code():
    import random

    rng = random.Random(0)
    four = _panel.pick_private(list(range(10)), rng)
    assert len(four) == 4 == len(set(four))  # random.sample: no repeat
    padded = _panel.pick_private([7, 8], rng)
    assert padded[:2] == [7, 8] and len(padded) == 4 and set(padded) <= {7, 8}
    assert _panel.pick_private([], rng) == []


# ---------------------------------------------------------------------------------------------
# The stub server


class Stub:
    """An OpenAI-compatible endpoint that plays ``script`` (one entry per request, the last one
    repeated): a reply text, or (status, body bytes, headers)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append((self.path, dict(self.headers), json.loads(body)))
                step = stub.script[min(len(stub.requests), len(stub.script)) - 1]
                if isinstance(step, str):
                    step = (200, chat(step), {})
                status, payload, headers = step
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chat(text, **message) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, **message},
                    "finish_reason": "stop",
                }
            ],
        }  # fmt: skip
    ).encode()


@pytest.fixture
def stub():
    servers = []

    def make(*script):
        servers.append(Stub(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def sleeps(monkeypatch):
    """Backoff sleeps recorded, not slept (the rate limit's sleeps too)."""
    slept = []
    monkeypatch.setattr(mllm.time, "sleep", slept.append)
    return slept


KINDS = {"mnist": "digit", "celeba64": "face", "facescrub224-ffhq": "face"}  # as the scenarios declare


def scene(name):
    return SimpleNamespace(name=name, class_kind=KINDS.get(name))


def context(n=3, scenario="mnist") -> EvalContext:
    g = torch.Generator().manual_seed(0)
    priv = Split(torch.rand(20, 1, 28, 28, generator=g) * 2 - 1, torch.arange(20) % 4)
    inv = Inversion(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.arange(n) % 4)
    return EvalContext(
        scene(scenario),
        SimpleNamespace(private_train=priv),
        inv,
        None,
        None,
        torch.device("cpu"),
    )


def judge(url, **options) -> MLLMJudge:
    return MLLMJudge({"url": url, "model": "stub-vl", "rps": 1000.0, **options})


def test_yes_no_and_refusals(stub, sleeps, monkeypatch):
    monkeypatch.delenv("REINV_BENCH_MLLM_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    s = stub(
        "Yes.",
        "No",
        "I'm sorry, I can't help with identifying people.",
        (200, chat(None, refusal="I can't assist with that."), {}),
    )
    v = judge(s.url).judge(context(4))
    assert v.answers == [True, False, None, None]
    assert "stub-vl" in v.note and "1 yes, 1 no, 2 refused, 0 failed" in v.note
    assert "sk-secret" not in v.note and "sk-secret" not in json.dumps(judge(s.url).config)
    path, headers, body = s.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-secret-123"
    # official ChatGPTProcessor.process_image: one user message, the prompt then the PNG panel
    assert body["model"] == "stub-vl" and [m["role"] for m in body["messages"]] == ["user"]
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": _panel.PROMPTS["digit"]}
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(image["image_url"]["url"].split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (1220, 324)


def test_user_study_prompt_and_environment_endpoint(stub, sleeps, monkeypatch):
    s = stub("yes")
    monkeypatch.setenv("REINV_BENCH_MLLM_URL", s.url)
    monkeypatch.setenv("REINV_BENCH_MLLM_MODEL", "env-model")
    monkeypatch.setenv("REINV_BENCH_MLLM_KEY", "k1")
    v = MLLMJudge({"prompt": "user_study", "rps": 1000.0}).judge(context(1, scenario="celeba64"))
    assert v.answers == [True] and "env-model" in v.note
    _, headers, body = s.requests[0]
    assert body["model"] == "env-model" and headers["Authorization"] == "Bearer k1"
    assert body["messages"][0]["content"][0]["text"] == OFFICIAL_USER_STUDY["face"]


def test_no_endpoint_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("REINV_BENCH_MLLM_URL", raising=False)
    monkeypatch.delenv("REINV_BENCH_MLLM_MODEL", raising=False)
    with pytest.raises(ValueError, match="REINV_BENCH_MLLM_URL") as err:
        MLLMJudge({}).judge(context(1))
    assert "\n" not in str(err.value)


def test_malformed_reply_is_no_answer_with_the_reason(stub, sleeps):
    s = stub("yes", (200, b"{not json", {}), (200, b'{"choices": []}', {}), "no")
    v = judge(s.url).judge(context(4))
    assert v.answers == [True, None, None, False]
    assert "2 failed" in v.note and "malformed reply" in v.note
    assert len(s.requests) == 4  # a malformed reply is not retried


def test_5xx_and_429_are_retried_with_backoff(stub, sleeps):
    s = stub((500, b"oops", {}), (503, b"busy", {}), "yes", (429, b"slow down", {"Retry-After": "3"}), "no")
    v = judge(s.url).judge(context(2))
    assert v.answers == [True, False] and "0 failed" in v.note
    assert len(s.requests) == 5
    backoff = [t for t in sleeps if t >= 0.5]  # the rate limit's waits are ~1 ms here
    assert backoff == [1.0, 2.0, 3.0]  # exponential, then the server's Retry-After


def test_a_400_is_not_retried(stub, sleeps):
    s = stub((400, b'{"error": "bad image"}', {}), "yes")
    v = judge(s.url).judge(context(2))
    assert v.answers == [None, True] and "HTTP 400" in v.note and len(s.requests) == 2


def test_a_server_that_always_fails_stops_the_judge_with_the_reason(stub, sleeps):
    s = stub((500, b"down", {}))
    with pytest.raises(
        RuntimeError,
        match=r"gave up after 3 of 10 panels, 3 panel\(s\) in a row failed: HTTP 500 .*after 3 tries",
    ):
        judge(s.url, retries=2).judge(context(10))
    assert len(s.requests) == 3 * 3  # three panels, three tries each: then it gives up


def test_a_server_that_is_not_there(sleeps):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match="no reply"):
        judge(f"http://127.0.0.1:{port}/v1", retries=1).judge(context(5))


def test_a_server_that_dies_after_one_answer_stops_the_judge(stub, sleeps):
    # issue 30 item 17: it went on panel after panel and stored the cell ok from 1 answer of 20
    s = stub("yes", (500, b"down", {}))
    with pytest.raises(RuntimeError, match=r"gave up after 4 of 20 panels, 3 panel\(s\) in a row failed"):
        judge(s.url, retries=1).judge(context(20))
    assert len(s.requests) == 1 + 3 * 2
    # a failure between answers does not count towards give_up
    s = stub("yes", (500, b"down", {}), "no", (500, b"down", {}), "yes")
    v = judge(s.url, retries=0, give_up=2).judge(context(5))
    assert v.answers == [True, None, False, None, True] and "2 failed" in v.note


def test_rate_limit(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(mllm.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(mllm.time, "sleep", lambda t: clock.__setitem__(0, clock[0] + t))
    pace = mllm.Pace(4.0)
    starts = []
    for _ in range(5):
        pace.wait()
        starts.append(clock[0])
        clock[0] += 0.01  # the request itself
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])] == [0.25] * 4


# ---------------------------------------------------------------------------------------------
# In a run: the judge's answers are stored with the cell; a failing server loses no metric


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_run_stores_the_model_judge_and_a_failing_server_loses_nothing(stub, tmp_path, registry, invoke):
    from reinv_bench.results.store import Store

    ok, down = stub("Yes"), stub((500, b"down", {}))
    specs = [
        f"mllm[url={s.url},model={m},retries=0,rps=1000]" for s, m in ((ok, "good-vl"), (down, "down-vl"))
    ]
    wd = tmp_path / "w"
    args = ["run", "-a", "meanimg", "--arch", "tiny", "-d", "none", "--budget", "smoke", "--quiet"]
    invoke(*args, "--judge", specs[0], "--judge", specs[1], "--workdir", wd, registry=registry, ok=True)
    (row,) = Store(wd / "results.db").rows()
    assert row.status == "ok" and row.metrics["attack_acc"] is not None
    good = next(k for k in row.metrics if k.startswith("judge[") and "good-vl" in k)
    bad = next(k for k in row.metrics if k.startswith("judge[") and "down-vl" in k)
    assert row.metrics[good] == 1.0 and row.outcomes.per_reconstruction[good] == [1.0] * len(row.outcomes)
    assert "good-vl" in row.notes[good]
    assert row.metrics[bad] is None and "HTTP 500" in row.notes[bad]
    assert row.outcomes.per_reconstruction[bad] == [None] * len(row.outcomes)
    assert len(ok.requests) == len(row.outcomes)


def test_the_protocol_card_names_the_model_and_the_question(monkeypatch):
    monkeypatch.delenv("REINV_BENCH_MLLM_MODEL", raising=False)
    note = MLLMJudge({"model": "Qwen2.5-VL-72B"}).protocol_note(scene("facescrub224-ffhq"))
    assert note.startswith("Qwen2.5-VL-72B,") and OFFICIAL_QUESTIONS["face"] in note


def test_a_scenario_whose_name_says_no_kind_is_refused_unless_kind_names_it(stub, sleeps):
    # the official fallback asks every other dataset for "the same breed"; here the reason, and kind=
    assert _panel.kind_of("chestxray") is None
    with pytest.raises(ValueError, match=r"'chestxray'.*mllm\[kind=\.\.\.\].*face\|object\|dog\|digit"):
        judge("http://unused").judge(context(1, scenario="chestxray"))
    assert "mllm[kind=" in MLLMJudge({}).protocol_note(scene("chestxray"))
    s = stub("yes")
    assert judge(s.url, kind="face").judge(context(1, scenario="chestxray")).answers == [True]
    assert s.requests[0][2]["messages"][0]["content"][0]["text"] == OFFICIAL_PROMPTS["face"]


def test_a_new_option_at_its_default_keeps_the_cell_ids(monkeypatch):
    monkeypatch.setenv("REINV_BENCH_MLLM_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("REINV_BENCH_MLLM_MODEL", "m")
    from reinv_bench.registry.components import resolve_judge
    from reinv_bench.registry.lookup import load

    reg = load()
    assert (
        resolve_judge(reg, "mllm", "quick")["config"]
        == resolve_judge(reg, "mllm[kind=auto]", "quick")["config"]
    )
    assert not {"kind", "refusal", "total", "give_up"} & set(resolve_judge(reg, "mllm", "quick")["config"])
    assert resolve_judge(reg, "mllm[kind=face]", "quick")["config"]["kind"] == "face"
