#!/usr/bin/env python3
"""Golden token ids for the C++ ClipTokenizer (tests/unit/test_tokenizer.cpp).

Builds CLIP tokenizer folders from open_clip's bpe_simple_vocab_16e6.txt.gz the way OpenAI CLIP and the
Hugging Face openai/clip-vit-large-patch14 files do (independently of the C++ writer), loads them with
transformers' CLIPTokenizer.from_pretrained and records the ids of every prompt for each variant:

  sd1        49408 tokens, pad "<|endoftext|>" (SD 1.x)
  sd2        49408 tokens, pad "!" (SD 2.x)
  tiny       1000 tokens (first 486 merges), pad "<|endoftext|>" (sd1-tiny test models)
  tiny_sd2   1000 tokens, pad "!"
  sd1_len16  sd1 with max_length 16 (truncation boundary)

Run with the reference environment:
  /opt/venvs/ref/bin/python tests/reference/make_tokenizer_golden.py [--out tests/golden/tokenizer]
"""
import argparse
import gzip
import json
import os
import random
import tempfile

import transformers
from transformers import CLIPTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB_GZ = os.path.join(REPO, "src", "text", "bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab(vocab_size):
    lines = gzip.open(VOCAB_GZ).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    merges = merges[: vocab_size - 514]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == vocab_size and len(set(vocab)) == vocab_size
    return vocab, merges


def write_folder(d, vocab_size, pad):
    vocab, merges = clip_vocab(vocab_size)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    def added(c):
        return {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    cfg = {
        "add_prefix_space": False,
        "bos_token": added("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": added("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added("<|endoftext|>"),
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    stm = {k: ({kk: vv for kk, vv in v.items() if kk != "__type"} if isinstance(v, dict) else v) for k, v in cfg.items() if k.endswith("_token")}
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2)
    return vocab, merges


def fnv1a64(data: bytes):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def prompts():
    p = []
    # DreamBooth and everyday prompts
    p += [
        "a photo of a dog", "a photo of sks dog", "photo of unqtkn dog", "photo of a dog", "photo of unqtkn dog in a bucket",
        "a photo of sks dog in a bucket", "a sks dog wearing a santa hat", "A photo of SKS dog on the beach, 4k, highly detailed",
        "portrait of zwx person, studio lighting, 85mm, f/1.8", "a dslr photo of a cat", "an oil painting of sks dog by Van Gogh",
        "a cute corgi puppy sitting in a field of flowers, golden hour", "photo of a man", "a photo of a woman smiling",
        "sks", "unqtkn", "zwx", "ohwx", "a photograph of an astronaut riding a horse", "masterpiece, best quality, ultra-detailed",
        "(masterpiece:1.2), (best quality), [blurry], {foo}", "a red car; a blue car: a green car.", "cat", "dog",
        "a painting in the style of greg rutkowski and alphonse mucha, trending on artstation",
        "a photo of sks dog, professional photography, bokeh, 50mm",
    ]
    # Empty, whitespace
    p += ["", " ", "   ", "\t", "\n", "\r\n", " \t\n ", "  a photo of a dog  ", "\ta\tphoto\tof\ta\tdog\t",
          "a\nphoto\nof\na\ndog", "a    photo     of a dog", "a\r\nphoto\r\n", "a\u00a0photo\u00a0of", "a\u3000photo\u3000of",
          "a\u2028b\u2029c", "a\u0085b\u000bc\u000cd", "a\u200bb\u200cc\u200dd", "a\u2003b\u2009c\u202fd\u205fe",
          "\u1680x\u180ey", "x\u001cy\u001dz\u001e\u001fw", "\ufeffbom at start"]
    # Case
    p += ["A PHOTO OF A DOG", "A Photo Of A Dog", "aPhOtOoFaDoG", "HELLO WORLD", "İstanbul", "ISTANBUL istanbul",
          "ΣΑΣ σας ΟΔΟΣ", "ß ẞ STRASSE", "Ǆ ǅ ǆ", "ﬁ ﬂ ﬀ ligatures", "Ⅻ ⅻ roman", "ＡＢＣ ａｂｃ fullwidth", "ᾈ ᾀ ΐ", "Ω Ω Å Å"]
    # Punctuation, symbols
    p += ["hello, world!", "hello world!!!", "what?!", "wait... what", "a -- b --- c", "(a) [b] {c} <d>", "a/b\\c|d",
          "@user #hashtag $100 %50 ^caret &amp *star", "~tilde `backtick` _under_score_", "\"quoted\" 'single'",
          "“smart quotes” ‘single’ «guillemets» „low“", "em—dash en–dash", "…ellipsis", "·•◦ bullets", "©®™ symbols",
          "°C °F ±5 ×2 ÷3", "→ ← ↑ ↓ ⇒", "★☆♥♦♣♠", "http://example.com/path?q=1&r=2#frag", "user@example.com",
          "C++ and C# and F#", "<html><body>hi</body></html>", "!", "!!", "!hello", "hello!", "a!b!c", "?!?!?!",
          ".,;:", "'", "''", "'''", "'s", "'S", "' s", "a'b'c'd", "--", "___", "...", "a.b.c", "e.g. i.e. etc.",
          "#1 #2 #3", "$ € £ ¥ ₹ ₿", "1/2 ½ ¾ ¼", "x² y³ z⁴ H₂O", "≤ ≥ ≠ ≈ ∞ √ ∑ ∫"]
    # Digits and numbers
    p += ["0", "7", "42", "1234567890", "3.14159", "1,000,000", "2023-11-24", "12:30pm", "v1.5", "sd2.1 768x768",
          "512x512", "4k 8k 16k uhd", "100%", "-5 +5", "1e-10", "0x1F", "007", "٣٤٥ arabic-indic", "४५६ devanagari",
          "一二三 四五六", "①②③", "Ⅰ Ⅱ Ⅲ", "௧௨௩", "〇", "१२३४५", "𝟙𝟚𝟛 math digits", "a1b2c3", "abc123def456"]
    # Contractions
    p += ["it's", "don't", "we're", "they've", "i'm", "you'll", "he'd", "IT'S", "DON'T", "We'Re", "It'S",
          "it’s curly", "rock'n'roll", "'twas", "y'all", "o'clock", "the dog's bowl", "the dogs' bowls", "can't won't shan't",
          "'stop'", "'re'", "''s", "!'s", "x'sy", "'ll'd", "I'd've", "'m a", "' m", "'ve got"]
    # Accents, combining marks (NFC and NFD forms)
    p += ["café", "cafe\u0301", "naïve", "nai\u0308ve", "résumé", "re\u0301sume\u0301", "Ångström", "A\u030angstro\u0308m",
          "e\u0301\u0301", "a\u0300\u0301\u0302\u0303", "\u0301leading mark", "x\u0338", "Zalgo: Z\u0351\u0364a\u035al\u0358g\u0352o",
          "ñ n\u0303 Ñ N\u0303", "ç c\u0327", "ő ű", "ṩ s\u0323\u0307 s\u0307\u0323", "ḍ̇", "ǖ u\u0308\u0304",
          "한국어 \u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165", "\u0928\u093f", "\u0915\u093c",
          # canonical reordering; tokenizers' NFC knows Unicode 9.0 only (later marks act as starters)
          "a\u0301\u0316", "a\u0316\u0301", "q\u0307\u0323", "\u1dc9\u1ac4\ua8c4", "x\u1dfc\u1df6", "o\U00010f46\u0301",
          "e\u0309\u2dfc\u1df6", "k\u0b4d\u089d", "\U00011935\U00011930 dives akuru", "\u1e0b\u0323 \u1e0d\u0307"]
    # European languages
    p += ["Über Größe und Maß", "Die Straße ist schön", "Ein Hund sitzt in einem Eimer", "Fräulein Müller",
          "Le chien est dans le seau", "L'été où j'ai vu l'éléphant", "Ça va? Très bien!", "garçon, où est la cœur",
          "œuvre Œ æ Æ", "Tiếng Việt có dấu", "Một con chó trong cái xô", "Phở bò và bánh mì", "Nguyễn Thị Minh Khai",
          "El niño comió paella en España", "¿Dónde está? ¡Aquí!", "São Paulo, coração", "Ελληνικά γράμματα",
          "Русский текст: собака в ведре", "Ёлка ЁЛКА", "Українська мова: ї є ґ", "Polski: żółć gęślą jaźń",
          "Čeština: příliš žluťoučký kůň", "Türkçe: ığüşöç İĞÜŞÖÇ", "Íslenska: þ ð Þ Ð", "Norsk: æ ø å Æ Ø Å"]
    # CJK, Korean, Arabic, Hebrew, Indic, Thai
    p += ["一只狗在桶里", "一張狗的照片", "東京タワーの写真", "ひらがな カタカナ ｶﾀｶﾅ", "日本語のテキストと English mixed",
          "漢字", "中文，标点。符号！", "「引用」『二重』", "한국어 텍스트", "강아지 사진", "한글ㄱㄴㄷ ㅏㅑ",
          "مرحبا بالعالم", "صورة كلب في دلو", "العربية: ١٢٣", "שלום עולם", "עברית עם ניקוד: שָׁלוֹם",
          "हिन्दी पाठ", "कुत्ते की तस्वीर", "বাংলা লেখা", "தமிழ் எழுத்து", "ภาษาไทย สุนัข", "ລາວ", "ქართული", "Հայերեն",
          "አማርኛ", "ᚠᛇᚻ runes", "𓀀𓀁 hieroglyphs", "𐍈 gothic", "ꙮ multiocular", "𠀀𠀁 ext-b", "龘"]
    # Emoji
    p += ["🐶", "a photo of a 🐶", "🐶🐱🐭", "🔥🔥🔥 lit", "👍", "👍🏽", "👍🏿 thumbs", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder",
          "🏳️‍🌈 flag", "🇺🇸🇫🇷🇯🇵 flags", "❤️ ❤", "☺️ ☺", "1️⃣ #️⃣", "🧑‍🚀", "😀😃😄😁😆😅😂🤣", "emoji🐶inside",
          "dog🐶dog", "🫠🫨 newer", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 scotland", "✌🏻✌🏼✌🏽✌🏾✌🏿", "🤷‍♀️🤷‍♂️"]
    # Special token literals
    p += ["<|endoftext|>", "<|startoftext|>", "hello <|endoftext|> world", "hello<|endoftext|>world",
          "<|startoftext|>a photo of a dog<|endoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|> mixed", "<|STARTOFTEXT|>",
          "<|endoftext|><|endoftext|><|endoftext|>", "<|endoftext", "endoftext|>", "< |endoftext| >", "<|end of text|>",
          "<<|endoftext|>>", "!<|endoftext|>!", "x<|startoftext|>y", "<|endoftext|>!!!", "a photo of <|endoftext|> sks dog",
          "<|startoftext|> <|STARTOFTEXT|> <|StartOfText|>", "ǃ<|endoftext|>", "<|endoftext|>\u0301", "＜|endoftext|＞"]
    # Code, mixed, odd
    p += ["def f(x): return x**2", "for (int i = 0; i < n; ++i) {}", "SELECT * FROM t WHERE a='b';", "$HOME/.config",
          "snake_case camelCase PascalCase kebab-case", "ALLCAPS_WITH_UNDERSCORE", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
          "abababababababababababab", "mississippi", "supercalifragilisticexpialidocious", "antidisestablishmentarianism",
          "pneumonoultramicroscopicsilicovolcanoconiosis", "the the the the the", "a a a a a a a", "aa aaa aaaa aaaaa",
          "zzzzzzzz", "qwertyuiop", "xyzzy plugh", "\u0000nul", "bell\u0007", "esc\u001b[31m red", "tab\tsep\tvalues",
          "\ufffd replacement", "\U0010fffd private", "\ue000 pua", "\u00ad soft hyphen", "a\u2060b word joiner",
          "\u200e\u200f direction marks", "\u202eRTL override", "ᠠᡳ mongolian", "\u1c89\u1c8a unicode 16",
          "\U00010d4a\U00010d50 garay \U00010d40", "\ua7cb\ua7cc latin ext"]
    # Long prompts (far over 77 tokens)
    long1 = ("a highly detailed photograph of sks dog sitting in a bucket in a sunny garden, with flowers, trees, "
             "a blue sky, white clouds, a wooden fence, a red barn, green grass, butterflies, bees, and a small pond "
             "reflecting the light, shot on a canon eos r5 with an 85mm lens at f/1.4, cinematic lighting, "
             "volumetric fog, ray tracing, unreal engine 5, octane render, 8k resolution, award winning, trending")
    p += [long1, long1.upper(), " ".join(["dog"] * 80), " ".join(["dog"] * 75), " ".join(["dog"] * 76),
          " ".join(["dog"] * 74), " ".join(["a"] * 200), "!" * 300, "🐶" * 100, "一只狗" * 60, "ab" * 500,
          ", ".join(f"tag{i}" for i in range(60)), "<|endoftext|>" * 90, "word " * 1000,
          "Über Größe " * 40, "it's " * 50, "1 2 3 4 5 6 7 8 9 0 " * 10]
    # Pseudo-random strings over an interesting alphabet (fixed seed)
    rng = random.Random(1234)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + list(" \t\n  ") +
                list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("éèêëÉÈàâäçñöüßœæøå") +
                ["\u0301", "\u0308", "\u0327", "\u0303", "\u00a0", "\u3000", "\u200d", "\ufe0f", "\U0001f3fd"] +
                list("狗猫写真한국어ひらがなمرحباשלוםहिन्दीσςΣ") + ["🐶", "👍", "❤", "🔥", "<|endoftext|>", "<|startoftext|>",
                "'s", "'t", "'ll", "İ", "ǅ", "½", "²", "٣", "१"])
    for n in range(60):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
        s = "".join(rng.choice(alphabet) for _ in range(length))
        if s not in p:
            p.append(s)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "tokenizer"))
    args = ap.parse_args()
    texts = prompts()
    assert len(texts) == len(set(texts)), "duplicate prompts"
    variants = [("sd1", 49408, "<|endoftext|>", 77), ("sd2", 49408, "!", 77), ("tiny", 1000, "<|endoftext|>", 77),
                ("tiny_sd2", 1000, "!", 77), ("sd1_len16", 49408, "<|endoftext|>", 16)]
    golden = {"transformers": transformers.__version__, "prompts": texts, "variants": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, vocab_size, pad, max_length in variants:
            d = os.path.join(tmp, name)
            os.makedirs(d)
            vocab, merges = write_folder(d, vocab_size, pad)
            tok = CLIPTokenizer.from_pretrained(d)
            # The vocabulary transformers ends up with is exactly the one written.
            assert tok.get_vocab() == {t: i for i, t in enumerate(vocab)}, name
            assert tok.pad_token_id == vocab.index(pad) and tok.model_max_length == 77
            ids = []
            for t in texts:
                padded = tok(t, padding="max_length", max_length=max_length, truncation=True)["input_ids"]
                unpadded = tok(t, max_length=max_length, truncation=True)["input_ids"]
                full = tok(t)["input_ids"]
                assert len(padded) == max_length
                assert padded == unpadded + [tok.pad_token_id] * (max_length - len(unpadded)), (name, t)
                assert unpadded[0] == tok.bos_token_id and unpadded[-1] == tok.eos_token_id
                ids.append({"ids": unpadded, "truncated": len(full) > max_length})
            golden["variants"].append({
                "name": name, "vocab_size": vocab_size, "pad_token": pad, "max_length": max_length,
                "pad_id": tok.pad_token_id, "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
                "vocab_fnv1a64": fnv1a64("\n".join(vocab).encode("utf-8")),
                "merges_fnv1a64": fnv1a64("\n".join(f"{a} {b}" for a, b in merges).encode("utf-8")),
                "encodings": ids,
            })
            print(f"{name}: {len(texts)} prompts, {sum(e['truncated'] for e in ids)} truncated")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "prompts.json")
    with open(path, "w", encoding="utf-8") as f:
        # One encoding per line keeps diffs readable.
        f.write(json.dumps(golden, ensure_ascii=True, separators=(",", ":")).replace('},{"ids"', '},\n{"ids"'))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
