#!/usr/bin/env bash
# Dependencies point down only (DESIGN.md "Layers"; docs/ARCHITECTURE.md): every
# `#include "dreambooth/<layer>/..."` in include/dreambooth/<L>/ and src/<L>/ names a layer at or below L.
#   core < backend, kernels, cuda (compat), emu < nn < models < io, text < diffusion, optim < dist
#   < pipelines < cli
# Usage: tests/cli/layering.sh [BUILD_DIR] (the build folder is not used)
set -uo pipefail
cd "$(dirname "$0")/../.."
declare -A rank=([core]=0 [backend]=1 [kernels]=1 [cuda]=1 [emu]=1 [nn]=2 [models]=3 [io]=4 [text]=4 [diffusion]=5 [optim]=5 [dist]=6
                 [pipelines]=7 [cli]=8)
bad=0; files=0
for layer in "${!rank[@]}"; do
  for dir in "include/dreambooth/$layer" "src/$layer"; do
    [ -d "$dir" ] || continue
    while IFS= read -r f; do
      files=$((files + 1))
      while IFS= read -r dep; do
        [ -n "${rank[$dep]+x}" ] || { echo "FAIL $f: includes unknown layer '$dep'"; bad=$((bad + 1)); continue; }
        if [ "${rank[$dep]}" -gt "${rank[$layer]}" ]; then
          echo "FAIL $f ($layer) includes dreambooth/$dep/ (a higher layer)"
          bad=$((bad + 1))
        fi
      done < <(sed -n 's|^#include "dreambooth/\([a-z_]*\)/.*|\1|p' "$f")
    done < <(find "$dir" -name '*.h' -o -name '*.cpp' -o -name '*.cuh' -o -name '*.cu')
  done
done
[ $bad -eq 0 ] || exit 1
echo "layering: $files files, every include points down"
