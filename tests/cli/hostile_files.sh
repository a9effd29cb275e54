#!/usr/bin/env bash
# Hostile model files through the real binary: each must fail with exit 1 and ONE line that names
# the file, never a signal. Usage: tests/cli/hostile_files.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0; passes=0
"$bin" init-model --preset sd1-tiny --out "$tmp/good" >/dev/null 2>&1 || { echo "FAILED: init-model"; exit 1; }

# make_case NAME: copy the good model, let python-free shell surgery damage the UNet weights file
case_dir() { rm -rf "$tmp/$1"; cp -r "$tmp/good" "$tmp/$1"; echo "$tmp/$1"; }
w=unet/diffusion_pytorch_model.safetensors

check() {  # NAME DIR EXPECTED_SUBSTRING
  local name=$1 dir=$2 want=$3 out rc
  out=$("$bin" inspect "$dir" 2>&1 >/dev/null); rc=$?
  local lines; lines=$(printf '%s\n' "$out" | grep -c .)
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$out" == *"$want"* ]]; then
    passes=$((passes + 1)); echo "ok   $name: $out"
  else
    fails=$((fails + 1)); echo "FAIL $name: exit $rc, $lines lines: $out"
  fi
}

d=$(case_dir truncated); truncate -s 5000 "$d/$w"; check truncated "$d" "$w"
d=$(case_dir oversized); printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$d/$w" conv=notrunc status=none; check oversized-header "$d" "$w"
# header length read from the file, then rewrite the first data_offsets end to point past the data
d=$(case_dir range)
python_free_patch() {  # FILE SED_EXPR: edit the JSON header in place, keeping its length
  local f=$1 expr=$2 n hdr new
  n=$(od -An -tu8 -N8 "$f" | tr -d ' ')
  hdr=$(dd if="$f" bs=1 skip=8 count="$n" status=none)
  new=$(printf '%s' "$hdr" | sed -E "$expr")
  [ ${#new} -eq ${#hdr} ] || { echo "patch changed the header length" >&2; return 1; }
  printf '%s' "$new" | dd of="$f" bs=1 seek=8 conv=notrunc status=none
}
python_free_patch "$d/$w" 's/"data_offsets":\[0,([0-9]+)\]/"data_offsets":[9,\1]/' ; check range-or-size "$d" "$w"
# craft FILE JSON DATA_BYTES: a safetensors file with the given header and that many zero data bytes
craft() {
  local f=$1 json=$2 nbytes=$3 n=${#2}
  printf "$(printf '\\x%02x' $((n & 255)) $(((n >> 8) & 255)) 0 0 0 0 0 0)" > "$f"
  printf '%s' "$json" >> "$f"
  head -c "$nbytes" /dev/zero >> "$f"
}
d=$(case_dir outofrange)
craft "$d/$w" '{"conv_in.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}' 8
check out-of-range "$d" "$w"
d=$(case_dir overlap)
craft "$d/$w" '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12
check overlapping "$d" "$w"
d=$(case_dir blocktype); sed -i 's/"DownBlock2D"/"FancyBlock2D"/' "$d/unet/config.json"; check unknown-block-type "$d" "unet/config.json"

echo "hostile files: $passes passed, $fails failed"
[ $fails -eq 0 ]
