#!/usr/bin/env bash
# A subset of ICU's data library for the bundle (jobs/make_bundle.sh): the system libicudata.so.NN holds
# one ICU package (.dat, 31 MB for ICU 72: locales, collation, converters, break iterators, time zones),
# and dreambooth's tokenizer needs almost none of it.
#
#   jobs/bundle_icudata.sh SYSTEM_LIBICUDATA OUT_LIBICUDATA
#
# src/text/clip_tokenizer.cpp calls u_hasBinaryProperty, u_charType, UnicodeSet("[:age=9.0:]"),
# Normalizer2::getNFCInstance and u_strToLower with the root locale. ICU builds the data those read into
# libicuuc itself (uprops, ucase, ubidi, property names and NFC: the *_data.h files of icu4c/source/
# common), so the tokenizer loads nothing from the package. What this keeps is what the same APIs CAN
# load for other properties, so that any property query or UnicodeSet pattern still works:
#   uemoji.icu                 emoji properties (Emoji, Extended_Pictographic, ...: emojiprops.cpp)
#   ulayout.icu                Indic_Positional/Syllabic_Category, Vertical_Orientation (uprops.cpp)
#   unames.icu                 character names (Name, \N{...} in a UnicodeSet pattern: unames.cpp)
#   nfkc.nrm nfkc_cf.nrm       NFKC_QC, Changes_When_NFKC_Casefolded (loadednormalizer2impl.cpp)
#   icuver.res                 the data version (u_getDataVersion)
# Everything else (locale data, collation, converters, break rules, zones) is left out; ICU reports
# U_MISSING_RESOURCE_ERROR for them, which the tokenizer never asks for.
# The result keeps the system library's soname and its entry point (icudtNN_dat), so libicuuc loads it
# unchanged; tests/bundle/test_bundle_closure.sh runs the tokenizer's golden tests against it.
set -euo pipefail
src="$1" out="$2"
ITEMS=(uemoji.icu ulayout.icu unames.icu nfkc.nrm nfkc_cf.nrm icuver.res)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
soname=$(objdump -p "$src" | awk '$1 == "SONAME" {print $2}')
entry=$(nm -D --defined-only "$src" | awk '$3 ~ /^icudt[0-9]+_dat$/ {print $3}')
[[ -n "$soname" && -n "$entry" ]] || { echo "bundle_icudata: $src: no SONAME or icudtNN_dat symbol" >&2; exit 1; }
pkg=${entry%_dat}l # icudt72l: the package name (l: little-endian ASCII), the prefix of every item

# The package is the entry point's bytes: its address and size from nm, made a file offset through the
# section that holds it.
read -r addr size < <(nm -D -S --defined-only "$src" | awk -v e="$entry" '$4 == e {print $1, $2}')
read -r sec_addr sec_off < <(readelf -S -W "$src" | awk '$2 == ".rodata" {print $4, $5}')
skip=$((0x$addr - 0x$sec_addr + 0x$sec_off))
dd if="$src" of="$work/$pkg.dat" bs=1M iflag=skip_bytes,count_bytes skip="$skip" count=$((0x$size)) status=none

mkdir -p "$work/items" "$work/sub"
printf '%s\n' "${ITEMS[@]}" >"$work/items.txt"
icupkg -x "$work/items.txt" -d "$work/items" "$work/$pkg.dat"
for i in "${ITEMS[@]}"; do
  [[ -s "$work/items/$i" ]] || { echo "bundle_icudata: $i not in $src's package $pkg" >&2; exit 1; }
done
icupkg -s "$work/items" -a "$work/items.txt" new "$work/sub/$pkg.dat"

# genccode writes the package as an assembler array named icudtNN_dat, as ICU's own build does.
genccode -q -a gcc -e "${entry%_dat}" -d "$work" "$work/sub/$pkg.dat"
gcc -shared -nostdlib -Wl,-soname,"$soname" -o "$out" "$work/${pkg}_dat.S"
nm -D --defined-only "$out" | grep -q " $entry\$" || { echo "bundle_icudata: $out lacks $entry" >&2; exit 1; }
echo "[bundle_icudata] $out: ${#ITEMS[@]} items of $(icupkg -l "$work/$pkg.dat" | wc -l), $(stat -c %s "$out") bytes"
