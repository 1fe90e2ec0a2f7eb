#!/bin/bash
# The 64-px paper recipe on the fake face tree of reinv_bench.testing, for a few steps: shows the
# official-width PLG-MI cGAN and the identity-batched KEDMI/GMI inversions (300 classes in
# batches of 60) run, and prints each step's seconds and peak GPU memory (the `peak_gib` of its
# artifact record). Prints figures; asserts nothing.
#
#     DEV=cuda bash benchmarks/paper_memory.sh   # GI/GS/IT: cGAN iterations, GAN steps, attack iterations;
#                                               # EXTRA: more run options (EXTRA="--gpus 0": a worker process)
FACES=${FACES:-/tmp/reinv-faces}; WD=${WD:-/tmp/reinv-paper-memory}; DEV=${DEV:-cuda}
python3 -c "from pathlib import Path; from reinv_bench.testing import make_celeba; make_celeba(Path('$FACES'))"
reinv-bench run --workdir "$WD" --data-root "$FACES" --scenario celeba64 --budget paper --device "$DEV" --no-baseline \
  -d none -a "plgmi[gan_iters=${GI:-20},iters=${IT:-20}]" -a "kedmi[gan_steps=${GS:-100},iters=${IT:-20}]" \
  -a "gmi[gan_steps=${GS:-100},iters=${IT:-20}]" --recipe "target:epochs=1" --recipe "eval:epochs=1" --metric attack_acc $EXTRA
python3 - "$WD" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1], "artifacts").rglob("*.json"), key=lambda p: p.stat().st_mtime):
    m = json.loads(f.read_text()).get("meta") or {}
    print(f"{m.get('kind', '?'):8s} {m.get('seconds', 0):8.1f} s  peak {m.get('peak_gib', float('nan')):7.2f} GiB  {m.get('device')}")
PY
