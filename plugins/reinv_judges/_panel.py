"""The panel a human or a vision-language model judges: MI-Eval-MLLM's layout (Ho et al., CVPR 2026
Findings, arXiv 2505.03519; hosytuyen/MI-Eval-MLLM @89010bc, ``utility.py``,
``create_concatenated_images_with_labels``).

One reconstruction ("Image A", 224 px) on the left, a 100-px white gap, then four private
training images of the class it was attacked for ("Set of Images B", 224 px each); below, the two
labels (30 pt, black) in a 50-px band and the question (35 pt, red) in another 50-px band:
1220 x 324 px, white background. The question follows the official ``get_dataset_type_from_path``
(faces: "same individual", CIFAR: "same object class", dog breeds: "same breed"), and the
model's prompt is the official ``get_prompt_for_image`` (task "regular": the main evaluation;
"user_study": the variant that allows a refusal). The official GPT-5 variant (``model_name ==
"gpt-5"`` in ``create_concatenated_images_with_labels`` and ``ChatGPTProcessor.process_image``):
an 80-px question band (1220 x 354 px), the face question "Based on only facial features and
ignoring identity, / are the faces in Image A and Set B visually similar?" on two lines, and the
"vision analysis assistant" prompt in place of either task's.

Deliberate differences:
- what the classes are comes from the scenario's declaration (``Scenario.class_kind``: face,
  digit, object, dog), not from its name as the official reads a folder's ("mnist" is inside
  "fmnist"); an undeclared scenario is refused with the reason (``kind`` names it) instead of
  being asked the dog-breed question, the official fallback;
- digits (MNIST, not in the study): the question asks for "the same digit" and the prompt is the
  official object prompt with handwriting in place of lighting and angles;
- the GPT-5 variant on faces only: its prompt speaks of faces whatever the dataset (the official
  applies it to every dataset);
- the official draws with the ``arial.ttf`` it ships; here Pillow's bundled font at the same
  sizes (Arial cannot be redistributed);
- private images are drawn from the private training split with the caller's seeded ``random.
  Random`` (the official ``random.sample`` of the class folder, padded with ``random.choice``
  when the class has fewer than four), and every image is resized with Pillow's default
  (bicubic) filter; the official resizes KEDMI/LOMMA/PLG-MI's private CelebA crops through
  torchvision's ``Resize`` (bilinear) instead.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from typing import Any

from reinv_bench.api import to_pil

SIZE = 224  # each image
GAP = 100  # white space between Image A and Set B
LABEL_H = 50  # band of the labels
QUESTION_H = 50  # band of the question
LABEL_PT, QUESTION_PT = 30, 35  # official font sizes for 4 images in Set B
SET_B = 4  # private images per panel

QUESTIONS = {
    "face": "Does Image A depict the same individual as the images in Set B?",
    "object": "Does Image A depict the same object class as the images in Set B?",
    "dog": "Does Image A depict the same breed as the images in Set B?",
    "digit": "Does Image A depict the same digit as the images in Set B?",  # not in the study
}
PROMPTS = {  # official get_prompt_for_image, task_type="regular"
    "object": "You are an expert in CIFAR100 object recognition. Taking into account different lighting, "
    "angles, backgrounds, and variations in appearance, do the task in the image. Only answer yes or no",
    "face": "You are an expert in face recognition. Taking into account the face aging, lighting, different "
    "hair styles, wearing and not wearing of eye glasses or other accessory, do the task in the image. "
    "Only answer yes or no",
    "dog": "You are an expert in dog breed recognition. Taking into account different lighting, angles, "
    "backgrounds, and variations in appearance, do the task in the image. Only answer yes or no",
    "digit": "You are an expert in handwritten digit recognition. Taking into account different handwriting "
    "styles, stroke widths, and variations in appearance, do the task in the image. Only answer yes or no",
}
USER_STUDY = {  # official get_prompt_for_image, task_type="user_study": a refusal is allowed
    kind: f"You are an expert in {expert}. Look at the image carefully. {QUESTIONS[kind]} Only answer yes or "
    "no. If you cannot determine or are not comfortable answering, you may refuse to answer."
    for kind, expert in (
        ("object", "CIFAR100 object recognition"),
        ("face", "face recognition"),
        ("dog", "dog breed recognition"),
        ("digit", "handwritten digit recognition"),
    )
}


# the official GPT-5 variant (create_concatenated_images_with_labels and ChatGPTProcessor.process_image
# when model_name == "gpt-5"): the face question on two lines in an 80-px band, and its own prompt
GPT5_QUESTION = (
    "Based on only facial features and ignoring identity, \n "
    "are the faces in Image A and Set B visually similar?"
)
GPT5_QUESTION_H = 80
GPT5_PROMPT = (
    "You are a vision analysis assistant. You may only compare observable visual features and overall "
    "facial similarity. Do not infer identity. Taking into account the face aging, lighting different hair "
    "styles, wearing and not wearing of eye glasses or other accessory, do the task in the image. Only "
    "answer yes or no"
)

KINDS = tuple(QUESTIONS)


def kind_of(scenario: Any) -> str | None:
    """What a scenario's classes are, as it declares them (``Scenario.class_kind``); None when it
    declares nothing. Never read from its name."""
    kind = getattr(scenario, "class_kind", None)
    return kind if kind in KINDS else None


def resolve(kind: str, scenario: Any, how: str) -> str:
    """``kind`` unless it is "auto", else the kind the scenario declares; ``how``: how the user
    names it, for the error when the scenario declares none."""
    found = kind_of(scenario) if kind == "auto" else kind
    if found is None:
        name = getattr(scenario, "name", scenario)
        raise ValueError(
            f"scenario {name!r} does not declare what its classes are (Scenario.class_kind: "
            f"{', '.join(KINDS)}), and the panel's question depends on it: {how} ({'|'.join(KINDS)})"
        )
    return found


def pick_private(indices: list[int], rng: random.Random, k: int = SET_B) -> list[int]:
    """``k`` of a class's private image indices: a sample without replacement, padded with random
    choices when the class has fewer (the official code's rule)."""
    if not indices:
        return []
    if len(indices) >= k:
        return rng.sample(indices, k)
    return list(indices) + [rng.choice(indices) for _ in range(k - len(indices))]


def panel(reconstruction: Any, privates: list[Any], question: str, question_h: int = QUESTION_H):
    """The official panel (see the module docstring) as a Pillow RGB image; ``question_h``: the
    question band's height (80 px in the GPT-5 variant)."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(privates)
    width, height = SIZE + GAP + SIZE * n, SIZE + LABEL_H + question_h
    out = Image.new("RGB", (width, height), (255, 255, 255))
    out.paste(to_pil(reconstruction).convert("RGB").resize((SIZE, SIZE)), (0, 0))
    for j, p in enumerate(privates):
        out.paste(to_pil(p).convert("RGB").resize((SIZE, SIZE)), (SIZE + GAP + SIZE * j, 0))
    draw = ImageDraw.Draw(out)
    label, big = ImageFont.load_default(LABEL_PT), ImageFont.load_default(QUESTION_PT)
    draw.text((SIZE / 2, SIZE + 25), "Image A", fill="black", font=label, anchor="mm")
    draw.text(
        (SIZE + GAP + SIZE * n / 2, SIZE + 25), "Set of Images B", fill="black", font=label, anchor="mm"
    )
    draw.text((width / 2, SIZE + LABEL_H + 25), question, fill="red", font=big, anchor="mm")
    return out


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The human judging page: one self-contained file (images as data: URIs, inline script, no network)

ANSWERS = ("yes", "no", "unsure")

CSS = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}
.item{border-top:1px solid #ccc;padding:.8em 0}.item img{max-width:100%;height:auto}
.item button{font-size:1.05em;margin-right:.6em;padding:.3em 1.2em;border:1px solid #888;
background:#f4f4f4;border-radius:4px;cursor:pointer}
.item button[aria-pressed=true]{background:#2a6;color:#fff}
.item button.no[aria-pressed=true]{background:#c33}.item button.unsure[aria-pressed=true]{background:#888}
#bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:2px solid #222;z-index:1}
#save{font-size:1.1em;padding:.4em 1.5em;font-weight:bold}
"""

SCRIPT = """
const meta = JSON.parse(document.getElementById('export').textContent);
const key = 'reinv-bench-judge-' + meta.export_id;
const answers = Object.assign({}, JSON.parse(localStorage.getItem(key) || '{}'));
function show() {
  document.querySelectorAll('.item').forEach(el => {
    el.querySelectorAll('button').forEach(b =>
      b.setAttribute('aria-pressed', String(answers[el.dataset.i] === b.value)));
  });
  document.getElementById('count').textContent = Object.keys(answers).length;
}
document.querySelectorAll('.item button').forEach(b => b.addEventListener('click', () => {
  answers[b.closest('.item').dataset.i] = b.value;
  localStorage.setItem(key, JSON.stringify(answers));
  show();
}));
document.getElementById('save').addEventListener('click', () => {
  const out = {format: meta.format, version: meta.version, export_id: meta.export_id,
    items: meta.items.map((it, i) => Object.assign({}, it, {answer: answers[i] || null}))};
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(out, null, 1)], {type: 'application/json'}));
  a.download = 'answers-' + meta.export_id + '.json';
  document.body.appendChild(a);
  a.click();
  a.remove();
});
show();
"""


def page(meta: dict[str, Any], panels: list[str], title: str) -> str:
    """The judging page: ``meta`` (format, version, export_id, items: one dict per panel, saved
    back with its answer) and ``panels`` (each panel's data: URI), in the same order."""
    esc = html.escape
    blob = json.dumps(meta).replace("<", "\\u003c")  # no "</script>" can end the block early
    items = "".join(
        f'<section class="item" data-i="{i}" id="item-{i}"><p>Item {i + 1} of {len(panels)}</p>'
        f'<img alt="panel {i + 1}" src="{uri}"><div>'
        + "".join(f'<button class="{a}" value="{a}" aria-pressed="false">{a}</button>' for a in ANSWERS)
        + "</div></section>"
        for i, uri in enumerate(panels)
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
        "<p>Each panel shows a reconstruction (Image A) beside four private training images of the class "
        "it was made for (Set of Images B). Answer the question in red for each: <b>yes</b>, <b>no</b>, or "
        "<b>unsure</b> (stored as no answer). Answers are kept in this browser while you work; press "
        "<b>Save answers</b> to download them as a JSON file, then run "
        "<code>reinv-bench judge import FILE</code>.</p>"
        f'<div id="bar"><button id="save">Save answers</button> <span id="count">0</span> of '
        f"{len(panels)} answered (export {esc(meta['export_id'])})</div>{items}"
        f'<script type="application/json" id="export">{blob}</script><script>{SCRIPT}</script>'
        "</body></html>"
    )
