"""Writes a CTranslate2 Whisper directory with the multilingual vocabulary layout (51865 ids:
one more text token, so <|endoftext|> is 50257, the 99 language tokens 50259..50357 and the
timestamps from 50364) out of the English-only tiny.en one: the embedding matrix gets a zero
row at 50256, vocabulary.txt a text piece there and config.json's ids move up by one. The
weights are otherwise tiny.en's, so the network still hears English but has to be driven the
multilingual way (language detection, <|lang|><|transcribe|>), which tests that path against
ctranslate2 on the same files. No registry reachable here ships multilingual weights.

usage: whisper-multilingual.py SRC_DIR OUT_DIR"""
import json
import os
import struct
import sys

src, out = sys.argv[1], sys.argv[2]
PAD = 50256  # the id the multilingual vocabulary has one more text token at
LANGS = range(50259, 50259 + 99)  # the language tokens' ids in that vocabulary
buf = open(os.path.join(src, "model.bin"), "rb").read()
pos = 0


def take(fmt):
    global pos
    v = struct.unpack_from(fmt, buf, pos)
    pos += struct.calcsize(fmt)
    return v[0]


def string():
    global pos
    n = take("<H")
    s = buf[pos:pos + n - 1].decode()
    pos += n
    return s


def put_string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


version = take("<I")
assert version == 6, version
spec, revision, count = string(), take("<I"), take("<I")
parts = [struct.pack("<I", version), put_string(spec), struct.pack("<II", revision, count)]
for _ in range(count):
    name = string()
    rank = take("<B")
    shape = [take("<I") for _ in range(rank)]
    dtype, nbytes = take("<B"), take("<I")
    data = buf[pos:pos + nbytes]
    pos += nbytes
    if name == "decoder/embeddings/weight":
        rows, d = shape
        row = nbytes // rows
        data = bytearray(data[:PAD * row] + bytes(row) + data[PAD * row:])
        # tiny.en never trained its language tokens (their rows are nearly equal, so which one
        # wins is down to rounding): each gets a distinct text token's row instead.
        for i, lang in enumerate(LANGS):
            src_id = 1000 + 97 * i
            data[lang * row:(lang + 1) * row] = data[src_id * row:(src_id + 1) * row]
        data = bytes(data)
        shape = [rows + 1, d]
    parts += [put_string(name), struct.pack("<B", rank), struct.pack(f"<{rank}I", *shape),
              struct.pack("<BI", dtype, len(data)), data]
parts.append(buf[pos:])  # the aliases, unchanged
os.makedirs(out, exist_ok=True)
tmp = os.path.join(out, "model.bin.part")
with open(tmp, "wb") as f:
    f.write(b"".join(parts))

with open(os.path.join(src, "vocabulary.txt"), encoding="utf-8") as f:
    text = f.read()
vocab = text.rstrip("\n").split("\n")
assert len(vocab) == 51864 and vocab[PAD] == "<|endoftext|>", len(vocab)
vocab.insert(PAD, "")  # the empty piece multilingual vocabularies have there
with open(os.path.join(out, "vocabulary.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n" * text.endswith("\n"))

config = json.load(open(os.path.join(src, "config.json")))
shift = [k for k in ("suppress_ids", "suppress_ids_begin")]
for k in shift:
    config[k] = [i + 1 if i >= PAD else i for i in config[k]]
config["lang_ids"] = [i for i, p in enumerate(vocab)
                      if p.startswith("<|") and p.endswith("|>") and 2 <= len(p) - 4 <= 3
                      and p[2:-2].isalpha() and p[2:-2].islower()]
assert len(config["lang_ids"]) == 99 and config["lang_ids"][0] == 50259, config["lang_ids"][:3]
json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
os.replace(tmp, os.path.join(out, "model.bin"))
