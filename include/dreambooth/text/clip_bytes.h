#pragma once
// GPT-2 / CLIP byte-level alphabet: every byte maps to one printable Unicode character so that BPE
// works on arbitrary UTF-8 (bytes_to_unicode in OpenAI's code).
#include <array>
#include <cstdint>
#include <string>

namespace db {

// The 256 bytes in bytes_to_unicode order: printable ranges '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF,
// then the remaining bytes ascending (mapped to U+0100 onwards). Vocab ids 0..255 follow this order.
const std::array<uint8_t, 256>& clip_byte_symbol_order();

// UTF-8 encoding of the character that stands for byte b.
const std::string& clip_byte_symbol(uint8_t b);

}  // namespace db
