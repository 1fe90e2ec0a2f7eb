"""Issue 30 items 7, 17 and 18: the MLLM judge against hostile or failing servers on 127.0.0.1 only
(a body trickled byte by byte, a redirect to another port, a huge body, a server that dies after
one answer, malformed replies, a slow server against the total budget); its identity (transport
options out, the model in), null answers asked again by the next run, plan-time checks of url and
model, URLs redacted; ``refusal=no|none`` and the official GPT-5 variant (hosytuyen/MI-Eval-MLLM
@89010bc, utility.py: ``create_concatenated_images_with_labels`` and
``ChatGPTProcessor.process_image`` with ``model_name == "gpt-5"``, transcribed below)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch
from reinv_judges import _panel
from reinv_judges.mllm import MLLMJudge, redact

from reinv_bench.api import EvalContext, Inversion, Split

# utility.py @89010bc, verbatim: ChatGPTProcessor.process_image's prompt for model_name == 'gpt-5', and
# create_concatenated_images_with_labels' question (faces) and question band for it
OFFICIAL_GPT5_PROMPT = "You are a vision analysis assistant. You may only compare observable visual features and overall facial similarity. Do not infer identity. Taking into account the face aging, lighting different hair styles, wearing and not wearing of eye glasses or other accessory, do the task in the image. Only answer yes or no"  # noqa: E501
OFFICIAL_GPT5_QUESTION = "Based on only facial features and ignoring identity, \n are the faces in Image A and Set B visually similar?"  # noqa: E501
OFFICIAL_GPT5_QUESTION_SPACE_HEIGHT = 80


def chat(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


class Server:
    """A local HTTP server on 127.0.0.1 whose POST handler is ``handle(handler, n)`` (n: the
    request's number, from 1); every request is recorded (path, headers)."""

    def __init__(self, handle):
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append((self.path, dict(self.headers)))
                try:
                    handle(self, len(server.requests))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(handler, body: bytes, status: int = 200, headers=()):
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def server():
    made = []

    def make(handle):
        made.append(Server(handle))
        return made[-1]

    yield make
    for s in made:
        s.close()


def context(n=3, kind="digit", name="mnist") -> EvalContext:
    g = torch.Generator().manual_seed(0)
    priv = Split(torch.rand(20, 1, 28, 28, generator=g) * 2 - 1, torch.arange(20) % 4)
    inv = Inversion(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.arange(n) % 4)
    return EvalContext(
        SimpleNamespace(name=name, class_kind=kind),
        SimpleNamespace(private_train=priv),
        inv,
        None,
        None,
        torch.device("cpu"),
    )


def judge(url, **options) -> MLLMJudge:
    return MLLMJudge({"url": url, "model": "stub-vl", "rps": 1000.0, "retries": 0, **options})


# ---------------------------------------------------------------------------------------------
# Item 17: bounded requests


def test_a_trickled_body_is_cut_off_at_the_request_deadline(server):
    def trickle(h, n):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(100):  # a byte every 0.1 s: each read is quick, the reply never ends
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.1)

    s = server(trickle)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"gave up after 1 of 3 panels.*no reply within 1 s after 1 tries"):
        judge(s.url, timeout=1.0, give_up=1).judge(context(3))
    assert time.monotonic() - start < 5  # the socket timeout alone never fires: 10 s and more before


def test_a_trickled_header_is_cut_off_too(server):
    def trickle(h, n):
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(50):
            h.wfile.write(f"X-Slow-{i}: 1\r\n".encode())
            h.wfile.flush()
            time.sleep(0.1)

    s = server(trickle)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="no reply within 1 s"):
        judge(s.url, timeout=1.0, give_up=1).judge(context(1))
    assert time.monotonic() - start < 4


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(server, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_MLLM_KEY", "sk-secret-42")
    other = server(lambda h, n: reply(h, chat("yes")))
    s = server(lambda h, n: reply(h, b"", 307, [("Location", f"{other.url}/chat/completions")]))
    with pytest.raises(RuntimeError, match="HTTP 307 redirect not followed"):
        judge(s.url).judge(context(3))
    assert other.requests == []  # nothing (and no key) reached the other port
    assert s.requests[0][1]["Authorization"] == "Bearer sk-secret-42"


def test_a_huge_body_is_cut_off_at_the_byte_cap(server):
    block = b"a" * 2**20

    def huge(h, n):
        h.send_response(200)
        h.send_header("Content-Length", str(64 * len(block)))
        h.end_headers()
        for _ in range(64):
            h.wfile.write(block)

    s = server(huge)
    v = judge(s.url, give_up=5).judge(context(2))  # (two panels: under give_up)
    assert v.answers == [None, None] and "reply larger than 1048576 bytes" in v.note


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_a_server_that_dies_after_one_answer_stops_the_judge(server):
    seen = []

    def first_then_die(h, n):
        reply(h, chat("yes"))
        seen.append(n)
        threading.Thread(target=s2.close).start()  # the server goes away after its first answer

    s2 = server(first_then_die)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"gave up after 4 of 20 panels, 3 panel\(s\) in a row failed"):
        judge(s2.url, retries=1, give_up=3).judge(context(20))
    assert seen == [1] and time.monotonic() - start < 30  # backoff 1 s per failed panel, not 750 s


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"choices": [{"message": {"content": [{"text": 5}, {"text": None}]}}]}).encode(),
        json.dumps({"choices": [{"message": ["not", "a", "dict"]}]}).encode(),
        b"[" * 100000 + b"]" * 100000,  # deep nesting
        b"\xff\xfe not utf-8",
        json.dumps({"choices": [{"message": {"content": {"text": "yes"}}}]}).encode(),
    ],
    ids=["parts-not-text", "message-a-list", "deep-nesting", "not-utf8", "content-a-dict"],
)
def test_a_malformed_reply_is_a_failed_answer_not_an_exception(server, body):
    s = server(lambda h, n: reply(h, chat("yes") if n % 2 else body))
    v = judge(s.url).judge(context(3))
    assert v.answers[0] is True and v.answers[2] is True
    assert v.answers[1] is None or v.answers[1] in (True, False)  # the list of parts: "5 None" is no answer
    assert "failed" in v.note


def test_the_cell_stops_when_its_total_time_is_spent(server):
    def slow(h, n):
        time.sleep(0.6)
        reply(h, chat("yes"))

    s = server(slow)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"its total of 1.5 s is spent"):
        judge(s.url, total=1.5, give_up=10).judge(context(10))
    assert time.monotonic() - start < 4


# ---------------------------------------------------------------------------------------------
# Item 18: identity, retry of null answers, plan-time checks, redaction


def plan_of(judges):
    import sys

    from reinv_bench.engine.plan import Request, expand
    from reinv_bench.registry.lookup import load

    req = Request(["meanimg"], ["none"], archs=["tiny"], budget="smoke", judges=judges)
    return expand(req, load(extra=(sys.modules["conftest"],)), data_digest=lambda n: "d")


def test_transport_options_are_kept_out_of_the_identity_and_the_label(monkeypatch):
    a = plan_of(["mllm[url=http://127.0.0.1:1/v1,model=m,timeout=5,retries=1,rps=3,total=60,give_up=2]"])
    b = plan_of(["mllm[url=http://127.0.0.1:2/v1,model=m]"])
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    assert a.cells[0].judges[0]["label"] == b.cells[0].judges[0]["label"] == "mllm[model=m]"
    assert a.cells[0].judges[0]["config"]["url"] == "http://127.0.0.1:1/v1"  # the run still has it
    other = plan_of(["mllm[url=http://127.0.0.1:2/v1,model=other]"])  # the model stays in
    assert (
        other.cells[0].cell_id != a.cells[0].cell_id
        and other.cells[0].judges[0]["label"] == "mllm[model=other]"
    )
    monkeypatch.setenv("REINV_BENCH_MLLM_MODEL", "env-vl")  # a model from the environment too
    env = plan_of(["mllm[url=http://127.0.0.1:2/v1]"])
    assert env.cells[0].judges[0]["label"] == "mllm[model=env-vl]"
    assert env.cells[0].judges[0]["config"]["model"] == "env-vl"
    assert env.cells[0].cell_id != a.cells[0].cell_id


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mllm[url=ftp://127.0.0.1/v1,model=m]", "is not an http:// or https:// address"),
        ("mllm[url=http:///v1,model=m]", "is not an http:// or https:// address"),
        ("mllm[url=http://127.0.0.1:1/v1]", "needs an endpoint and a model"),
    ],
)
def test_url_and_model_are_checked_at_plan_time(spec, match, monkeypatch):
    from reinv_bench.contract.config import ConfigError

    monkeypatch.delenv("REINV_BENCH_MLLM_MODEL", raising=False)
    monkeypatch.delenv("REINV_BENCH_MLLM_URL", raising=False)
    with pytest.raises(ConfigError, match=match) as err:
        plan_of([spec])
    assert "\n" not in str(err.value)


def test_userinfo_and_query_are_redacted(server):
    assert redact("http://user:pw@host:8000/v1?token=abc#x") == "http://host:8000/v1"
    s = server(lambda h, n: reply(h, chat("yes")))
    url = s.url.replace("127.0.0.1", "alice:hunter2@127.0.0.1") + "?api_key=topsecret"
    v = judge(url).judge(context(1))
    assert v.answers == [True]
    assert "hunter2" not in v.note and "topsecret" not in v.note and "alice" not in v.note
    assert s.requests[0][1]["Authorization"] == "Basic " + base64.b64encode(b"alice:hunter2").decode()
    assert s.requests[0][0] == "/v1/chat/completions?api_key=topsecret"
    dead = f"http://bob:pw2@127.0.0.1:{free_port()}/v1?k=secret2"
    with pytest.raises(RuntimeError) as err:
        judge(dead, give_up=1).judge(context(1))
    assert "pw2" not in str(err.value) and "secret2" not in str(err.value)
    with pytest.raises(ValueError) as err:
        MLLMJudge({"url": "ftp://carol:pw3@x/?q=secret3", "model": "m"}).check(None)
    assert "pw3" not in str(err.value) and "secret3" not in str(err.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_a_judge_that_stored_null_is_asked_again_and_people_s_answers_stay(tmp_path, registry, invoke):
    from reinv_bench.results.judging import store_verdicts
    from reinv_bench.results.store import Store

    port = free_port()  # nobody listens there yet: the judge stores null
    spec = f"mllm[url=http://127.0.0.1:{port}/v1,model=vl,retries=0,give_up=1,rps=1000]"
    wd = tmp_path / "w"
    args = ["run", "-a", "meanimg", "--arch", "tiny", "-d", "none", "--budget", "smoke", "--quiet"]
    invoke(*args, "--judge", spec, "--workdir", wd, registry=registry, ok=True)
    store = Store(wd / "results.db")
    (row,) = store.rows()
    key = "judge[mllm[model=vl]]"
    assert row.status == "ok" and row.metrics[key] is None and "judge failed" in row.notes[key]
    people = [True] + [None] * (len(row.outcomes) - 1)
    store_verdicts(store, row.cell_id, "human", people, "people")

    class Yes(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            reply(self, chat("yes"))

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Yes)  # the endpoint is back
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = invoke(*args, "--judge", spec, "--workdir", wd, registry=registry, ok=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "1 cell(s) already stored" not in out.output
    (again,) = Store(wd / "results.db").rows()
    assert again.cell_id == row.cell_id and again.metrics[key] == 1.0
    assert again.outcomes.per_reconstruction["judge[human]"] == [1.0] + [None] * (len(row.outcomes) - 1)
    assert again.metrics["judge[human]"] == 1.0 and again.config["metrics"]["judge[human]"] == 1


# ---------------------------------------------------------------------------------------------
# Item 7: refusals as "no" or no answer; the official GPT-5 variant


def test_refusal_no_counts_a_refusal_as_no_and_none_as_no_answer(server):
    replies = ["Yes", "I cannot determine that.", "No", "Unclear"]
    s = server(lambda h, n: reply(h, chat(replies[(n - 1) % 4])))
    as_none = judge(s.url).judge(context(4))
    as_no = judge(s.url, refusal="no").judge(context(4))
    assert as_none.answers == [True, None, False, None]
    assert as_no.answers == [True, False, False, False]  # the official main evaluation (normalize_response)
    assert "2 refused" in as_no.note and "refusals counted as no" in as_no.note
    # eval_fpr = FP / (FP + TN) over the panels the judge says no to: refusals count with refusal=no
    from reinv_bench.results.judging import derive, record
    from reinv_bench.results.outcomes import Outcomes
    from reinv_bench.results.store import Row

    def fpr(verdicts):
        out = Outcomes([0, 1, 2, 3], [0.5] * 4, {"attack_acc": [1.0, 1.0, 0.0, 1.0]})
        metrics, notes = {}, {}
        record(metrics, notes, out, "mllm", verdicts)
        labels = dict(scenario="mnist", protocol="p", arch="a", defense="none", attack="x", threat_model="w")
        row = Row(cell_id="c", **labels, seed=0, budget="smoke", metrics=metrics, notes=notes, outcomes=out)
        return derive(row, "attack_acc").metrics["eval_fpr[mllm]"]

    assert fpr(as_none) == 0.0  # judge no: panel 2 only (E no)
    assert fpr(as_no) == pytest.approx(2 / 3)  # judge no: 1 (E yes), 2 (E no), 3 (E yes)


def test_the_gpt5_variant_is_the_official_one():
    assert _panel.GPT5_PROMPT == OFFICIAL_GPT5_PROMPT and _panel.GPT5_QUESTION == OFFICIAL_GPT5_QUESTION
    assert _panel.GPT5_QUESTION_H == OFFICIAL_GPT5_QUESTION_SPACE_HEIGHT
    img = _panel.panel(torch.zeros(3, 8, 8), [torch.zeros(3, 8, 8)] * 4, OFFICIAL_GPT5_QUESTION, 80)
    assert img.size == (1220, 224 + 50 + 80)
    red = [
        y
        for x in range(0, 1220, 2)
        for y in range(274, 354)
        if img.getpixel((x, y))[0] > 200 > img.getpixel((x, y))[1]
    ]
    assert max(red) - min(red) > 40  # two lines of red text in the 80-px band


def test_the_gpt5_variant_sends_its_prompt_and_taller_panel(monkeypatch):
    bodies = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            reply(self, chat("no"))

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        v = judge(url, prompt="gpt5").judge(context(1, kind="face", name="celeba64"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert v.answers == [False]
    text, image = bodies[0]["messages"][0]["content"]
    assert text["text"] == OFFICIAL_GPT5_PROMPT
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(image["image_url"]["url"].split(",", 1)[1])))
    assert png.size == (1220, 354)
    with pytest.raises(ValueError, match="GPT-5 variant asks about faces"):
        judge(url, prompt="gpt5").judge(context(1))  # digits
