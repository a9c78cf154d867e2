#!/usr/bin/env python3
"""Writes the tokenizer fixtures of tests/model with Hugging Face `tokenizers`,
the independent reference for src/hf/tokenizer.c.

    bash tools/reference/setup-venv.sh
    .venv-ref/bin/python tools/reference/make_tokenizer_fixtures.py tests/fixtures/model

Files written (all small):
  tok_llama3.json            byte-level BPE trained here with Llama 3's
                             pre-tokenizer (Split regex Isolated + ByteLevel
                             without regex), ignore_merges, Llama-3-style
                             special tokens and code tokens <a_0>..;
                             merges as [a, b] pairs (what tokenizers writes)
  tok_llama3_strmerges.json  the same with merges as "a b" strings
  tok_gpt2.json              GPT-2 style: one ByteLevel pre-tokenizer with
                             its regex and add_prefix_space
  tok_ignore_on.json,        hand-made vocabularies where ignore_merges
  tok_ignore_off.json        changes the result
  tok_cases.json             (text, ids) and (ids, decoded text) pairs
                             computed by tokenizers for every file above
"""
import json
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PROMPT_HEAD = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n### Instruction:\nBased on the "
    "items that the user has interacted with: "
)
PROMPT_TAIL = (
    ", can you determine what item would be recommended to the user next?"
    "\n\n### Response:"
)

CORPUS = [
    PROMPT_HEAD + "<a_1><b_2><c_3><d_0>, <a_4><b_5><c_6><d_0>" + PROMPT_TAIL,
    "The quick brown fox jumps over the lazy dog. It's the dog's day; they're "
    "sure we'll see what I'd do and what you've done.",
    "Fender Stratocaster Electric Guitar, 3-Tone Sunburst, Maple Fingerboard",
    "Guitar strings (10-46), 3 pack. Capo for acoustic and electric guitars!",
    "Ernie Ball Regular Slinky Nickel Wound Electric Guitar Strings - 10-46 Gauge",
    "Item 1234567 costs $19.99 in 2023; 42 units shipped on 2023-10-05.",
    "Numbers: 1 12 123 1234 12345 123456 1234567 3.14159 2.71828 1,000,000",
    "Crème brûlée, café au lait, naïve résumé, Übermaß, São Paulo, Kraków.",
    "日本語のテキストと中文分词测试。한국어 문장도 있습니다。",
    "Привет, мир! Как дела? Ελληνικά γράμματα. مرحبا بالعالم. שלום עולם.",
    "Emoji: 😀 😃 👍🏽 🇺🇸 ❤️ 🎸 🥁",
    "Whitespace:\n\n\ttabs\tand  double  spaces   and\r\nwindows lines\n",
    "def f(x):\n    return x ** 2  # squares\n\nprint(f(3))\n",
    "User reviews: 5 stars!!! Great sound... would buy again :) -- J.",
]

CODE_TOKENS = [f"<{lvl}_{i}>" for lvl in "abcd" for i in range(8)]
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>"] + CODE_TOKENS

FIXED_CASES = [
    "",
    PROMPT_HEAD,
    ", ",
    PROMPT_TAIL,
    PROMPT_HEAD + "<a_1><b_2><c_3><d_0>, <a_7><b_0><c_5><d_1>" + PROMPT_TAIL + "<a_3><b_3><c_3><d_3>",
    "<|begin_of_text|>" + PROMPT_HEAD,
    "1", "12", "123", "1234", "12345", "1234567890", "0007", "3.14159", "2023-10-05",
    "v1.2.3", "$1,234.56", " 42", "x1y22z333", "１２３４", "٣٤٥", "²³", "Ⅻ Ⅷ",
    "it's", "IT'S", "we'll", "WE'LL", "they're", "THEY'RE", "I'm", "you'd", "can't",
    "'s", "'LL", "'ll", "don't stop", "x'ſ", "O'Neil's", "rock'n'roll", "''s",
    "\n", "\n\n", "\n\n\n", "a\n\nb", "   ", "a   b", "a\tb", "\t\t", " \n ", "line1\r\nline2",
    "trailing   ", "   leading", "a \n\n b", "\u00a0nbsp", "a\u2028b", "a\u0085b",
    "\u3000full width space", "a\u000bb\u000cc", "x\r\r\ny", "!!!\n\n", "?\n", ". \n\n",
    "café", "naïve résumé", "Ünïcödé", "cafe\u0301", "e\u0301\u0301", "日本語のテキスト",
    "中文分词测试", "한국어", "Привет, мир!", "مرحبا", "שלום", "ℌ𝔢𝔩𝔩𝔬",
    "emoji 😀👍🏽🇺🇸", "👨‍👩‍👧", "½ ² Ⅻ ٣", "ﬁ ligature", "\u200bzero\u200dwidth",
    "<a_0>", "<a_0><b_1><c_2><d_3>", "item <a_1>, <a_2>", "<|begin_of_text|>hello<|end_of_text|>",
    "<a_0", "<<a_0>>", "<a_00>", "zz<|begin_of_text|>", "pesos peso", "zzz<", "<|begin_of_text|",
    "Fender Stratocaster", "unseenwordsareheretoo", "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "--------------------------------", "=====  ====", "a" * 60, "ab" * 30,
    " " * 1000 + "x", "\n" * 300, "é" * 200,
]

# Characters that stress the pre-tokenizer regex: letters, digits, marks,
# symbols, every kind of whitespace, apostrophes, CJK, emoji, long s.
POOL = (
    list("abcXYZ019 '\t\n\r.,!?-_()<>/\\\"")
    + ["s", "t", "re", "ve", "m", "ll", "d", "S", "LL"]
    + list("éÉñßøåçüÖ")
    + ["\u0301", "\u0308", "\u00a0", "\u0085", "\u2028", "\u2029", "\u3000", "\u200b", "\u000b", "\u000c"]
    + list("日本語中文한국Жж") + ["ſ", "\u212a", "ﬁ", "Ⅻ", "½", "²", "٣", "１", "😀", "👍🏽", "🇺🇸"]
    + ["€", "$", "©", "™", "→", "∑", "\u00ad", "\x7f", "\x01"]
)


def random_cases(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(POOL) for _ in range(rng.randint(1, 16))))
    return out


def llama3_pretokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train(tok, vocab_size):
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)


def make_llama3():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = llama3_pretokenizer()
    tok.decoder = decoders.ByteLevel()
    train(tok, 256 + 450)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # A normalized, non-special token: matched in a second pass, after the
    # special tokens, so "zz<|begin_of_text|>" keeps the special token whole.
    tok.add_tokens([AddedToken("zz<", normalized=True), AddedToken("peso", normalized=True)])
    return tok


def make_gpt2():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    train(tok, 256 + 250)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return tok


def make_ignore(ignore):
    """Merges b+c before a+b, so plain BPE turns "abc" into [a, bc] although
    "abc" is in the vocabulary; with ignore_merges it is one token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for extra in ["bc", "ab", "abc", "Ġa", "Ġab"]:
        vocab[extra] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("Ġ", "a"), ("Ġa", "b")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore))
    tok.pre_tokenizer = llama3_pretokenizer()
    tok.decoder = decoders.ByteLevel()
    return tok


def to_string_merges(path_in, path_out):
    with open(path_in, encoding="utf-8") as f:
        j = json.load(f)
    merges = j["model"]["merges"]
    assert merges and isinstance(merges[0], list), "expected merges as pairs"
    j["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    with open(path_out, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)


def encode_cases(tok, texts):
    return [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]


def decode_cases(tok, texts):
    """Whole encodings, single ids (partial UTF-8 -> U+FFFD) and runs with
    special tokens, with and without skip_special_tokens."""
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        for skip in (False, True):
            out.append({"ids": ids, "skip_special": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
        for i in ids[:3]:
            out.append({"ids": [i], "skip_special": False, "text": tok.decode([i], skip_special_tokens=False)})
    return out


def check_same(files, texts):
    toks = [Tokenizer.from_file(f) for f in files]
    for t in texts:
        ids = [k.encode(t, add_special_tokens=False).ids for k in toks]
        assert all(i == ids[0] for i in ids), (t, files)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/model"
    os.makedirs(outdir, exist_ok=True)
    path = lambda name: os.path.join(outdir, name)

    llama3 = make_llama3()
    llama3.save(path("tok_llama3.json"))
    to_string_merges(path("tok_llama3.json"), path("tok_llama3_strmerges.json"))
    gpt2 = make_gpt2()
    gpt2.save(path("tok_gpt2.json"))
    make_ignore(True).save(path("tok_ignore_on.json"))
    make_ignore(False).save(path("tok_ignore_off.json"))

    texts = FIXED_CASES + random_cases(300, seed=1234)
    check_same([path("tok_llama3.json"), path("tok_llama3_strmerges.json")], texts)
    decode_texts = [PROMPT_HEAD, "café 日本 😀", "<|begin_of_text|>hi<a_0><b_1>", "x'ſ\n\n"]
    ignore_texts = ["abc", "abcabc", "xabc", " abc", " ab", "abcd", "bcab", "a b c", "ABC abc"]
    sets = [
        {"files": ["tok_llama3.json", "tok_llama3_strmerges.json"],
         "encode": encode_cases(llama3, texts), "decode": decode_cases(llama3, decode_texts)},
        {"files": ["tok_gpt2.json"],
         "encode": encode_cases(gpt2, FIXED_CASES + random_cases(100, seed=99)),
         "decode": decode_cases(gpt2, decode_texts)},
        {"files": ["tok_ignore_on.json"], "encode": encode_cases(make_ignore(True), ignore_texts),
         "decode": []},
        {"files": ["tok_ignore_off.json"], "encode": encode_cases(make_ignore(False), ignore_texts),
         "decode": []},
    ]
    # Whether decode(encode(text)) == text for every text of a set, as
    # tokenizers decodes; false where add_prefix_space adds a space.
    for s, tok in zip(sets, [llama3, gpt2, make_ignore(True), make_ignore(False)]):
        s["roundtrip"] = all(tok.decode(c["ids"], skip_special_tokens=False) == c["text"] for c in s["encode"])
    cases = {"generator": "tools/reference/make_tokenizer_fixtures.py",
             "tokenizers_version": tokenizers.__version__, "sets": sets}
    with open(path("tok_cases.json"), "w", encoding="utf-8") as f:
        f.write(compact_json(cases) + "\n")


def compact_json(cases):
    """One case per line: small, and diffs stay readable."""
    dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    sets = []
    for s in cases["sets"]:
        body = ",\n".join(
            f' "{key}":[\n' + ",\n".join("  " + dump(c) for c in s[key]) + "]"
            for key in ("encode", "decode"))
        sets.append('{"files":' + dump(s["files"]) + ',"roundtrip":' + dump(s["roundtrip"]) +
                    ",\n" + body + "}")
    head = {k: v for k, v in cases.items() if k != "sets"}
    return dump(head)[:-1] + ',\n"sets":[\n' + ",\n".join(sets) + "]}"


if __name__ == "__main__":
    main()
