"""ctranslate2's side of scripts/bench-voice.sh: features, encoder and decoding (greedy, or beam
search with the beam size given) with timestamps, seeking across 30-second windows as Whisper does; prints the transcript, the
real-time factor (best of 3) and the process's peak RSS."""
import resource
import sys
import time
import wave

import ctranslate2
import numpy as np

model_dir, filters_npz, clip, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
beam = int(sys.argv[5]) if len(sys.argv) > 5 else 1
N_FFT, HOP, N_SAMPLES, FRAMES = 400, 160, 480000, 3000
filters = np.load(filters_npz)["mel_80"].astype(np.float32)
window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

with open(model_dir + "/vocabulary.txt", encoding="utf-8") as f:
    vocab = f.read().split("\n")
SOT, TB = vocab.index("<|startoftranscript|>"), vocab.index("<|0.00|>")

with wave.open(clip) as w:
    audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def log_mel(x):
    x = np.pad(np.concatenate([x, np.zeros(N_SAMPLES, np.float32)]), N_FFT // 2, mode="reflect")
    n = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]))
    power = (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2)[:-1].T
    log = np.log10(np.maximum(filters @ power, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32",
                                   intra_threads=threads, inter_threads=1)


def transcribe():
    mel = log_mel(audio)
    content = len(audio) // HOP
    seek, tokens_all, windows = 0, [], 0
    while seek < content:
        seg = np.ascontiguousarray(mel[:, seek:seek + FRAMES], dtype=np.float32)[None]
        ids = model.generate(ctranslate2.StorageView.from_array(seg), [[SOT]], beam_size=beam)[0].sequences_ids[0]
        windows += 1
        size = min(FRAMES, content - seek)
        ts = [t >= TB for t in ids]
        single_end = len(ids) >= 2 and not ts[-2] and ts[-1]
        cons = [i for i in range(1, len(ids)) if ts[i - 1] and ts[i]]
        advance = size
        if cons and not single_end and ids[cons[-1] - 1] - TB > 0:
            advance = min((ids[cons[-1] - 1] - TB) * 2, size)
        tokens_all += [t for t in ids if t < TB]
        seek += max(advance, 1)
    return tokens_all, windows


best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    toks, windows = transcribe()
    best = min(best, time.perf_counter() - t0)
dur = len(audio) / 16000
print(len(toks), "text tokens,", windows, "windows")
print(f"audio {dur:.2f} s; transcription {best:.3f} s (best of 3, {threads} threads, beam {beam}); "
      f"real-time factor {dur / best:.2f}x; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
