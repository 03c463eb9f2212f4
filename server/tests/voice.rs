//! The voice routes through HTTP on a loopback port: `POST /v1/audio/transcriptions` with every
//! response format against CTranslate2's goldens, bad uploads (no boundary, 9 MB, zero
//! seconds, lying headers, not audio) answered with clear 4xx while the server keeps serving,
//! the text-to-speech routes' 503 with `--voice` but no pocket-tts model and 404 without, and `trillim transcribe`
//! finding the model by store id. Needs Whisper tiny.en: `scripts/fetch-voice-models.sh`.

mod common;

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_error, read_head, start, Server};
use serde_json::Value;

fn whisper_dir() -> PathBuf {
    let dir = std::env::var_os("TRILLIM_WHISPER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            cache.join("trillim/whisper-tiny.en-ct2")
        });
    assert!(
        dir.join("model.bin").is_file(),
        "Whisper tiny.en is missing in {}; run scripts/fetch-voice-models.sh first",
        dir.display()
    );
    dir
}

fn clip(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/voice")
            .join(name),
    )
    .unwrap()
}

fn golden_text(id: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/voice/goldens.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The server decodes with beam 5 by default: CTranslate2's beam-5 transcript.
    g["clips"][id]["beam5"]["timestamps"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

const BOUNDARY: &str = "----trillim-test-boundary";

fn form(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, data)) = file {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// Posts `body` with `content_type`; returns status, headers and body text.
fn post_raw(s: &Server, content_type: &str, body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut c = s.connect().unwrap();
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // A server that refuses early may close before the whole body is written.
    let _ = c.write_all(body);
    let mut r = BufReader::new(c);
    let (status, headers) = read_head(&mut r).unwrap();
    let mut text = String::new();
    let _ = r.read_to_string(&mut text);
    (status, headers, text)
}

fn transcribe(s: &Server, fields: &[(&str, &str)], name: &str, data: &[u8]) -> (u16, String) {
    let (st, _, body) = post_raw(
        s,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &form(fields, Some((name, data))),
    );
    (st, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect()
}

fn voice_server(tag: &str) -> Server {
    let dir = whisper_dir();
    start(
        tag,
        &[
            "--voice",
            "--whisper-model",
            dir.to_str().unwrap(),
            "--voice-threads",
            "2",
        ],
    )
}

fn healthy(s: &Server) {
    let (st, _, _) = s.try_request("GET", "/health", None, &[]).unwrap();
    assert_eq!(st, 200);
}

#[test]
fn transcriptions_in_every_format() {
    let s = voice_server("voice-formats");
    let want = golden_text("weather");
    let audio = clip("weather.wav");
    let (st, body) = transcribe(&s, &[("model", "whisper-1")], "weather.wav", &audio);
    assert_eq!(st, 200, "{body}");
    assert_eq!(words(json(&body)["text"].as_str().unwrap()), words(&want));

    let (st, body) = transcribe(&s, &[("response_format", "text")], "a.wav", &audio);
    assert_eq!(st, 200);
    assert_eq!(words(&body), words(&want));

    let (st, body) = transcribe(&s, &[("response_format", "verbose_json")], "a.wav", &audio);
    assert_eq!(st, 200);
    let v = json(&body);
    assert_eq!(v["language"], "english");
    assert!((v["duration"].as_f64().unwrap() - 3.59).abs() < 0.05, "{v}");
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    assert!(segs[0]["start"].as_f64().unwrap() <= segs[0]["end"].as_f64().unwrap());

    let (st, body) = transcribe(&s, &[("response_format", "srt")], "a.wav", &audio);
    assert_eq!(st, 200);
    assert!(body.starts_with("1\n00:00:0"), "{body}");
    assert!(body.contains(" --> "), "{body}");
    let (st, body) = transcribe(&s, &[("response_format", "vtt")], "a.wav", &audio);
    assert_eq!(st, 200);
    assert!(body.starts_with("WEBVTT\n\n00:00:0"), "{body}");

    // Compressed upload at another rate, and a prompt.
    let (st, body) = transcribe(
        &s,
        &[("prompt", "Weather report."), ("temperature", "0")],
        "hello.mp3",
        &clip("hello.mp3"),
    );
    assert_eq!(st, 200, "{body}");
    assert!(
        json(&body)["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("recognition"),
        "{body}"
    );
}

#[test]
fn bad_uploads_get_clear_errors_and_change_nothing() {
    let s = voice_server("voice-bad");
    let wav = clip("fox.wav");
    let mp = format!("multipart/form-data; boundary={BOUNDARY}");

    // No boundary in the Content-Type.
    let (st, _, body) = post_raw(&s, "multipart/form-data", &form(&[], Some(("a.wav", &wav))));
    assert_error(&json(&body), st, 400);
    assert!(body.contains("boundary"), "{body}");
    // Not multipart at all.
    let (st, _, body) = post_raw(&s, "application/json", b"{}");
    assert_error(&json(&body), st, 400);
    // Body that never closes its boundary.
    let mut cut = form(&[], Some(("a.wav", &wav)));
    cut.truncate(cut.len() - 10);
    let (st, _, body) = post_raw(&s, &mp, &cut);
    assert_error(&json(&body), st, 400);
    // No file field.
    let (st, _, body) = post_raw(&s, &mp, &form(&[("model", "whisper-1")], None));
    assert_error(&json(&body), st, 400);
    assert!(body.contains("file"), "{body}");
    // 9 MB upload.
    let big = vec![0u8; 9 * 1024 * 1024];
    let (st, _, body) = post_raw(&s, &mp, &form(&[], Some(("big.wav", &big))));
    assert_error(&json(&body), st, 413);
    assert!(body.contains("8 MB"), "{body}");
    healthy(&s);
    // Zero seconds: a valid WAV header with no samples.
    let mut empty = wav[..44].to_vec();
    empty[40..44].copy_from_slice(&0u32.to_le_bytes());
    empty[4..8].copy_from_slice(&36u32.to_le_bytes());
    let (st, body) = transcribe(&s, &[], "empty.wav", &empty);
    assert_error(&json(&body), st, 400);
    // A header that promises more data than there is, cut mid-sample.
    let mut lying = wav[..2001].to_vec();
    lying[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    let (st, body) = transcribe(&s, &[], "lying.wav", &lying);
    assert!(st == 200 || st == 400, "{st} {body}");
    // A truncated header.
    let (st, body) = transcribe(&s, &[], "cut.wav", &wav[..30]);
    assert_error(&json(&body), st, 400);
    // A stream that makes the AAC demuxer panic: caught, 400, the engine keeps running.
    let adts = [
        0x70, 0x09, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x31, 0x00, 0x00, 0x95, 0x95, 0x95, 0x95,
        0xff, 0xf1, 0x54, 0x5d, 0x58, 0x58, 0x58, 0x95, 0x00, 0xbb, 0x22, 0x55, 0x4f, 0xff, 0x36,
        0x00, 0x00,
    ];
    let (st, body) = transcribe(&s, &[], "x.aac", &adts);
    assert_error(&json(&body), st, 400);
    // Not audio.
    let (st, body) = transcribe(&s, &[], "notes.txt", b"these are not the samples you seek");
    assert_error(&json(&body), st, 400);
    // An empty file part.
    let (st, body) = transcribe(&s, &[], "none.wav", b"");
    assert_error(&json(&body), st, 400);
    // Bad fields.
    let (st, body) = transcribe(&s, &[("response_format", "mp3")], "a.wav", &wav);
    assert_error(&json(&body), st, 400);
    let (st, body) = transcribe(&s, &[("temperature", "hot")], "a.wav", &wav);
    assert_error(&json(&body), st, 400);
    let (st, body) = transcribe(&s, &[("language", "../etc")], "a.wav", &wav);
    assert_error(&json(&body), st, 400);
    // Still serving, and still transcribing.
    healthy(&s);
    let (st, body) = transcribe(&s, &[], "fox.wav", &wav);
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        words(json(&body)["text"].as_str().unwrap()),
        words(&golden_text("fox"))
    );
}

#[test]
fn speech_routes_without_a_tts_engine() {
    let s = voice_server("voice-tts");
    for (method, path) in [
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/voices"),
        ("DELETE", "/v1/voices/alba"),
    ] {
        let (st, _, body) = s
            .try_request(method, path, Some(b"{\"input\": \"hi\"}"), &[])
            .unwrap();
        assert_error(&json(&body), st, 503);
        assert!(body.contains("TTS engine not started"), "{body}");
    }
    drop(s);
    let s = start("voice-off", &[]);
    for (method, path) in [
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/voices"),
        ("DELETE", "/v1/voices/x"),
    ] {
        let (st, _, body) = s.try_request(method, path, Some(b"{}"), &[]).unwrap();
        assert_error(&json(&body), st, 404);
        assert!(body.contains("--voice"), "{body}");
    }
}

#[test]
fn transcribe_command_finds_the_model_by_store_id() {
    let dir = whisper_dir();
    let home = std::env::temp_dir().join(format!("trillim-voice-cli-{}", std::process::id()));
    let store = home.join("models/Systran/faster-whisper-tiny.en");
    std::fs::create_dir_all(&store).unwrap();
    for f in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    ] {
        let _ = std::fs::remove_file(store.join(f));
        std::os::unix::fs::symlink(dir.join(f), store.join(f)).unwrap();
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/voice/fox.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["transcribe", fixture.to_str().unwrap(), "--format", "json"])
        .env("TRILLIM_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        words(v["text"].as_str().unwrap()),
        words(&golden_text("fox"))
    );
    let doctor = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .arg("doctor")
        .env("TRILLIM_HOME", &home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("Systran/faster-whisper-tiny.en (Whisper"),
        "{text}"
    );
    // A missing model names the pull command.
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args([
            "transcribe",
            fixture.to_str().unwrap(),
            "--whisper-model",
            "org/nothing",
        ])
        .env("TRILLIM_HOME", &home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trillim pull org/nothing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// The same weights in Hugging Face's layout (`scripts/make-whisper-hf.sh`) served through
/// `--whisper-model DIR`: beam search at temperature 0 gives CTranslate2's beam-5 transcript.
#[test]
fn hugging_face_safetensors_directory_serves_transcripts() {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let dir = cache.join("trillim/whisper-tiny.en-hf-f16");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/make-whisper-hf.sh first"
    );
    let s = start(
        "voice-hf",
        &[
            "--voice",
            "--whisper-model",
            dir.to_str().unwrap(),
            "--whisper-beam",
            "5",
            "--voice-threads",
            "2",
        ],
    );
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/voice/goldens.json"),
    )
    .unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    let want = g["clips"]["stella"]["beam5"]["timestamps"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, body) = transcribe(&s, &[], "stella.wav", &clip("stella.wav"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(words(json(&body)["text"].as_str().unwrap()), words(&want));
}
