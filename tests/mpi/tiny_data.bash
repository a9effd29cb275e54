# shellcheck shell=bash
# Sourced by tests/mpi/*.sh (not a test itself: run_tests.sh runs *.sh only). tiny_data BIN DIR:
# DIR/base (sd1-tiny, seed 5) and DIR/inst.h5, DIR/class.h5 from the image fixtures, as
# tests/mpi/train_mpi.sh makes them. Returns non-zero on failure.
tiny_data() {
  local bin=$1 dir=$2 fx=tests/fixtures/images k p
  "$bin" init-model --preset sd1-tiny --seed 5 --out "$dir/base" > /dev/null 2>&1 || return 1
  mkdir -p "$dir/inst" "$dir/class"
  cp $fx/exif1_le_60x34.jpg $fx/gray_77x99.jpg $fx/progressive_161x120.jpg "$dir/inst/"
  cp $fx/cmyk_53x41.jpg $fx/exif6_40x24.png $fx/graya_70x40.png $fx/rgb16_50x33.png "$dir/class/"
  for k in inst class; do
    p="photo of unqtkn dog"
    [ $k = class ] && p="photo of a dog"
    "$bin" prepare --images "$dir/$k" --prompt "$p" --model "$dir/base" --out "$dir/$k.h5" 2> /dev/null || return 1
  done
}
