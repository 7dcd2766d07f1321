#!/usr/bin/env bash
# Trains one shipped model set from nothing: data, tokenizer, FLAM, monolithic, sample episodes.
# Usage: scripts/train-shipped.sh AGENTS [DATA_ROOT]   e.g. scripts/train-shipped.sh 4  -> checkpoints/multigrid-4/
# Each stage resumes if its checkpoint folder exists, so an interrupted run continues where it stopped.
set -euo pipefail
agents=${1:?usage: scripts/train-shipped.sh AGENTS [DATA_ROOT]}
data_root=${2:-data}
flam=${FLAM:-.venv/bin/flam}
set_dir=checkpoints/multigrid-$agents
data=$data_root/multigrid-$agents

resume_flag() { [ -f "$1/config.json" ] && echo --resume || true; }

[ -f "$data/manifest.json" ] || \
  $flam data generate --world multigrid --agents "$agents" --episodes 1000 --steps 32 --seed 0 --out "$data"
$flam train tokenizer --data "$data" --out "$set_dir/tokenizer" $(resume_flag "$set_dir/tokenizer")
for arch in flam monolithic; do
  $flam train lam --arch "$arch" --tokenizer "$set_dir/tokenizer" --data "$data" --out "$set_dir/$arch" \
    $(resume_flag "$set_dir/$arch")
done
$flam data subset "$data" --split test --count 8 --out "$set_dir/episodes" --overwrite
