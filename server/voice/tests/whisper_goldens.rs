//! Whisper tiny.en against CTranslate2's goldens (`tests/fixtures/voice/goldens.json`, made by
//! `scripts/voice-goldens.sh`) on espeak-ng clips: exact token ids per window in both decoding
//! modes, greedy and with beam search (beam 5), word error rates across the sample-rate and format matrix, and a clip longer than one
//! 30-second window; and the multilingual path (language detection, `<|lang|><|transcribe|>`)
//! on the same weights in the multilingual vocabulary layout (`goldens-multilingual.json`).
//! Needs the weights: `scripts/fetch-voice-models.sh` and `scripts/make-whisper-multilingual.sh`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use trillim_runtime::ThreadPool;
use trillim_voice::audio::decode_16k_mono;
use trillim_voice::mel::{log_mel, WINDOW_SAMPLES};
use trillim_voice::whisper::{ModelFormat, Options, SpeechModel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/voice")
}

fn model() -> SpeechModel {
    let dir = std::env::var_os("TRILLIM_WHISPER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            cache.join("trillim/whisper-tiny.en-ct2")
        });
    SpeechModel::load_dir(&dir).unwrap_or_else(|e| {
        panic!("Whisper tiny.en is missing ({e}); run scripts/fetch-voice-models.sh first")
    })
}

fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
}

/// The same weights in Hugging Face's layout (`scripts/make-whisper-hf.sh`), f32 or f16.
fn hf_model(dtype: &str) -> SpeechModel {
    let dir = cache_root().join(format!("trillim/whisper-tiny.en-hf-{dtype}"));
    assert_eq!(
        ModelFormat::of(&dir),
        Some(ModelFormat::Hf),
        "{}",
        dir.display()
    );
    SpeechModel::load_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "Whisper tiny.en in HF layout is missing ({e}); run scripts/make-whisper-hf.sh first"
        )
    })
}

/// The same weights in the multilingual vocabulary layout (`scripts/make-whisper-multilingual.sh`).
fn multilingual_model() -> SpeechModel {
    let dir = cache_root().join("trillim/whisper-tiny-multilingual-layout-ct2");
    SpeechModel::load_dir(&dir).unwrap_or_else(|e| {
        panic!("the multilingual layout is missing ({e}); run scripts/make-whisper-multilingual.sh")
    })
}

fn goldens() -> Value {
    let text = std::fs::read_to_string(fixtures().join("goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn samples(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    decode_16k_mono(&bytes, 600).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hyp` against `reference`.
fn wer(reference: &str, hyp: &str) -> f64 {
    let (r, h) = (words(reference), words(hyp));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rw != hw))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// One window's tokens for a clip.
fn window_tokens(m: &SpeechModel, pool: &ThreadPool, clip: &[f32], timestamps: bool) -> Vec<u32> {
    let mut padded = clip.to_vec();
    padded.resize(clip.len() + WINDOW_SAMPLES, 0.0);
    let mel = log_mel(&padded, m.net.dims.n_mels);
    let enc = m.net.encode(pool, &mel.window(0));
    let cross = m.net.cross_kv(pool, &enc);
    let sot = m.sot_sequence("en", timestamps);
    m.decode_window(pool, &cross, &[], &sot, 0.0, 0).tokens
}

#[test]
fn tokens_equal_ctranslate2_on_every_clip() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    let mut mismatches = Vec::new();
    let clips = g["clips"].as_object().unwrap();
    for (id, entry) in clips {
        let clip = samples(&format!("{id}.wav"));
        for (mode, ts) in [("no_timestamps", false), ("timestamps", true)] {
            let want = ids(&entry[mode]["tokens"]);
            let got = window_tokens(&m, &pool, &clip, ts);
            if got != want {
                mismatches.push(format!(
                    "{id} {mode}: got {got:?} `{}`, want {want:?} `{}`",
                    m.vocab.decode(&got),
                    m.vocab.decode(&want)
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// One window's tokens with beam search.
fn window_tokens_beam(
    m: &SpeechModel,
    pool: &ThreadPool,
    clip: &[f32],
    timestamps: bool,
    beam: usize,
) -> Vec<u32> {
    let mut padded = clip.to_vec();
    padded.resize(clip.len() + WINDOW_SAMPLES, 0.0);
    let mel = log_mel(&padded, m.net.dims.n_mels);
    let enc = m.net.encode(pool, &mel.window(0));
    let cross = m.net.cross_kv(pool, &enc);
    let sot = m.sot_sequence("en", timestamps);
    m.decode_window_beam(pool, &cross, &[], &sot, beam).tokens
}

#[test]
fn beam_search_tokens_equal_ctranslate2_on_every_clip() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    let mut mismatches = Vec::new();
    for (id, entry) in g["clips"].as_object().unwrap() {
        let clip = samples(&format!("{id}.wav"));
        for (mode, ts) in [("no_timestamps", false), ("timestamps", true)] {
            let want = ids(&entry["beam5"][mode]["tokens"]);
            let got = window_tokens_beam(&m, &pool, &clip, ts, 5);
            if got != want {
                mismatches.push(format!(
                    "{id} {mode}: got {got:?} `{}`, want {want:?} `{}`",
                    m.vocab.decode(&got),
                    m.vocab.decode(&want)
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Every clip's tokens from `m` against CTranslate2's, greedy and beam 5, both modes.
fn all_goldens_mismatches(m: &SpeechModel, beams: &[usize]) -> Vec<String> {
    let pool = ThreadPool::new(2);
    let g = goldens();
    let mut mismatches = Vec::new();
    for (id, entry) in g["clips"].as_object().unwrap() {
        let clip = samples(&format!("{id}.wav"));
        for (mode, ts) in [("no_timestamps", false), ("timestamps", true)] {
            for &beam in beams {
                let want = if beam == 1 {
                    ids(&entry[mode]["tokens"])
                } else {
                    ids(&entry["beam5"][mode]["tokens"])
                };
                let got = if beam == 1 {
                    window_tokens(m, &pool, &clip, ts)
                } else {
                    window_tokens_beam(m, &pool, &clip, ts, beam)
                };
                if got != want {
                    mismatches.push(format!(
                        "{id} {mode} beam {beam}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    mismatches
}

#[test]
fn hf_safetensors_f32_tokens_equal_ctranslate2() {
    let m = hf_model("f32");
    let bad = all_goldens_mismatches(&m, &[1, 5]);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn hf_safetensors_f16_tokens_equal_ctranslate2() {
    let m = hf_model("f16");
    let bad = all_goldens_mismatches(&m, &[1]);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn hf_directory_errors_name_the_file() {
    let cache = cache_root().join("trillim/whisper-tiny.en-hf-f16");
    let tmp = std::env::temp_dir().join(format!("trillim-hf-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let err = |dir: &Path| SpeechModel::load_dir(dir).unwrap_err().to_string();
    assert!(err(&tmp).contains("neither"), "{}", err(&tmp));
    for f in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(cache.join(f), tmp.join(f)).unwrap();
    }
    // A truncated model.safetensors.
    std::fs::write(tmp.join("model.safetensors"), [1u8, 2, 3]).unwrap();
    let e = err(&tmp);
    assert!(e.contains("model.safetensors"), "{e}");
    // A valid container missing the weights.
    let empty = b"{}      ";
    let mut bytes = (empty.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(empty);
    std::fs::write(tmp.join("model.safetensors"), &bytes).unwrap();
    let e = err(&tmp);
    assert!(
        e.contains("model.safetensors: tensor `model.") && e.contains("is missing"),
        "{e}"
    );
    // A config that is not Whisper's.
    std::fs::write(tmp.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    let e = err(&tmp);
    assert!(e.contains("config.json") && e.contains("whisper"), "{e}");
    std::fs::write(tmp.join("config.json"), b"{not json").unwrap();
    assert!(err(&tmp).contains("config.json"));
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn beam_of_one_is_greedy() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    let clip = samples("fox.wav");
    let want = ids(&g["clips"]["fox"]["timestamps"]["tokens"]);
    assert_eq!(window_tokens_beam(&m, &pool, &clip, true, 1), want);
}

#[test]
fn transcripts_match_ctranslate2_text() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    for (id, entry) in g["clips"].as_object().unwrap() {
        let t = m.transcribe(
            &pool,
            &samples(&format!("{id}.wav")),
            &Options {
                timestamps: true,
                ..Options::default()
            },
        );
        let want = entry["timestamps"]["text"].as_str().unwrap();
        assert!(wer(want, &t.text) <= 0.1, "{id}: `{}` vs `{want}`", t.text);
        assert!(!t.segments.is_empty());
        for s in &t.segments {
            assert!(s.start <= s.end && s.end <= t.duration + 0.5, "{id}: {s:?}");
        }
    }
}

#[test]
fn sample_rates_channels_and_formats() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    // Against the words spoken: some variants lose enough band (8 kHz) that CTranslate2's
    // transcript differs from the 16 kHz clip's too.
    let want = g["clips"]["hello"]["spoken"].as_str().unwrap();
    // Telephone-band audio (8 kHz) has lost what tiny.en leans on: CTranslate2 on a sox
    // upsampling of the same file also garbles words there, so its bound is looser.
    for (file, bound) in [
        ("hello-8k.wav", 0.7),
        ("hello-44k.wav", 0.35),
        ("hello-48k-stereo.wav", 0.35),
        ("hello.flac", 0.35),
        ("hello.mp3", 0.35),
        ("hello.ogg", 0.35),
    ] {
        let clip = samples(file);
        let secs = clip.len() as f64 / 16_000.0;
        assert!((secs - 3.96).abs() < 0.1, "{file}: {secs} s");
        let opts = Options {
            timestamps: true,
            ..Options::default()
        };
        let t = m.transcribe(&pool, &clip, &opts);
        let e = wer(want, &t.text);
        assert!(e <= bound, "{file}: WER {e:.2}: `{}` vs `{want}`", t.text);
    }
}

#[test]
fn audio_longer_than_one_window() {
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    let clips = g["clips"].as_object().unwrap();
    let mut long = Vec::new();
    let mut spoken = String::new();
    for (id, entry) in clips {
        long.extend(samples(&format!("{id}.wav")));
        long.extend(std::iter::repeat_n(0.0, 8000));
        spoken.push_str(entry["spoken"].as_str().unwrap());
        spoken.push(' ');
    }
    assert!(long.len() > WINDOW_SAMPLES, "{} samples", long.len());
    let t = m.transcribe(
        &pool,
        &long,
        &Options {
            timestamps: true,
            ..Options::default()
        },
    );
    let e = wer(&spoken, &t.text);
    assert!(e <= 0.35, "WER {e:.2}: `{}`", t.text);
    let last = t.segments.last().unwrap();
    assert!(last.end > 30.0, "{:?}", t.segments);
    for w in t.segments.windows(2) {
        assert!(w[0].start <= w[1].start, "{:?}", t.segments);
    }
}

#[test]
fn multilingual_detection_and_decoding_equal_ctranslate2() {
    let m = multilingual_model();
    assert!(m.vocab.is_multilingual());
    let pool = ThreadPool::new(2);
    let text = std::fs::read_to_string(fixtures().join("goldens-multilingual.json")).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    let mut mismatches = Vec::new();
    for (id, entry) in g["clips"].as_object().unwrap() {
        let clip = samples(&format!("{id}.wav"));
        let mut padded = clip.clone();
        padded.resize(clip.len() + WINDOW_SAMPLES, 0.0);
        let mel = log_mel(&padded, m.net.dims.n_mels);
        let enc = m.net.encode(&pool, &mel.window(0));
        let cross = m.net.cross_kv(&pool, &enc);
        let detected = m.detect_language(&pool, &cross);
        let want_lang = entry["language"].as_str().unwrap();
        if detected != want_lang {
            mismatches.push(format!("{id}: detected {detected}, want {want_lang}"));
        }
        for (key, lang) in [("detected", want_lang), ("fr", "fr")] {
            for (mode, ts) in [("no_timestamps", false), ("timestamps", true)] {
                let sot = m.sot_sequence(lang, ts);
                assert_eq!(sot.len(), 4 - usize::from(ts), "{sot:?}");
                for beam in [1, 5] {
                    let want = ids(&entry[format!("{key}/{mode}/beam{beam}")]["tokens"]);
                    let got = if beam == 1 {
                        m.decode_window(&pool, &cross, &[], &sot, 0.0, 0).tokens
                    } else {
                        m.decode_window_beam(&pool, &cross, &[], &sot, beam).tokens
                    };
                    if got != want {
                        mismatches.push(format!(
                            "{id} {key} {mode} beam {beam}: got {got:?} `{}`, want {want:?} `{}`",
                            m.vocab.decode(&got),
                            m.vocab.decode(&want)
                        ));
                    }
                }
            }
        }
        // The whole path: the language is detected on the first window and reported.
        let t = m.transcribe(
            &pool,
            &clip,
            &Options {
                timestamps: true,
                ..Options::default()
            },
        );
        assert_eq!(t.language, want_lang, "{id}");
        let want = entry["detected/timestamps/beam1"]["text"].as_str().unwrap();
        assert!(wer(want, &t.text) <= 0.1, "{id}: `{}` vs `{want}`", t.text);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn time_stretched_speech_is_still_understood() {
    // The speech route's `speed` keeps the pitch: slowed down or sped up, tiny.en still hears
    // the words (mean word error rate over five clips against what was spoken; unstretched it
    // is 0.12 on these clips).
    let m = model();
    let pool = ThreadPool::new(2);
    let g = goldens();
    let ids = ["fox", "hello", "weather", "window", "library"];
    for speed in [0.6f32, 0.8, 1.25, 1.6] {
        let mut total = 0.0;
        let mut heard = Vec::new();
        for id in ids {
            let clip = samples(&format!("{id}.wav"));
            let mut s = trillim_voice::stretch::TimeStretch::new(speed, 16_000);
            let mut y = s.push(&clip);
            y.extend(s.finish());
            assert_eq!(y.len(), (clip.len() as f64 / speed as f64).round() as usize);
            let opts = Options {
                timestamps: true,
                ..Options::default()
            };
            let t = m.transcribe(&pool, &y, &opts);
            total += wer(g["clips"][id]["spoken"].as_str().unwrap(), &t.text);
            heard.push(t.text);
        }
        let mean = total / ids.len() as f64;
        assert!(mean <= 0.35, "speed {speed}: mean WER {mean:.2}: {heard:?}");
    }
}
