// The CLIP BPE merge list (gzip), embedded read-only. See bpe_simple_vocab_16e6.LICENSE.txt.
  .section .rodata
  .global db_clip_bpe_gz
  .global db_clip_bpe_gz_size
  .balign 16
db_clip_bpe_gz:
  .incbin "src/text/bpe_simple_vocab_16e6.txt.gz"
db_clip_bpe_gz_end:
  .balign 8
db_clip_bpe_gz_size:
  .quad db_clip_bpe_gz_end - db_clip_bpe_gz
  .section .note.GNU-stack,"",@progbits
