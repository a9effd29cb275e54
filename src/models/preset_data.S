/* The model presets (src/models/presets/*.json), embedded as NUL-terminated strings.
   Assembled with the repository root as the working directory. */
        .section .rodata
        .balign 16
        .globl db_preset_sd1_tiny
db_preset_sd1_tiny:
        .incbin "src/models/presets/sd1-tiny.json"
        .byte 0
        .balign 16
        .globl db_preset_sd2_tiny
db_preset_sd2_tiny:
        .incbin "src/models/presets/sd2-tiny.json"
        .byte 0
        .balign 16
        .globl db_preset_sd15
db_preset_sd15:
        .incbin "src/models/presets/sd15.json"
        .byte 0
        .balign 16
        .globl db_preset_sd21
db_preset_sd21:
        .incbin "src/models/presets/sd21.json"
        .byte 0
        .section .note.GNU-stack,"",@progbits
