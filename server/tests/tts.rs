//! Text-to-speech through HTTP on a loopback port, on the synthetic pocket-tts fixture
//! (`testdata/models/tts-tiny`, temperature 0 in its config, so the audio is deterministic):
//! the streamed WAV (unbounded header, then PCM matching the reference's samples) and raw PCM,
//! speed, bad requests answered 400 before streaming, a client that hangs up, custom voices
//! (upload, list, use, survive a restart, delete; `../` ids, built-ins and 9 MB refused with
//! nothing written), voices cloned from recordings (the reference's speech with the cloned
//! voice; empty, truncated, zero-second and non-audio files refused with nothing written) and
//! `trillim speak`.

mod common;

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_error, read_head, start, Server};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_dir() -> PathBuf {
    root().join("testdata/models/tts-tiny")
}

fn tts_server(tag: &str, voices: &Path) -> Server {
    start(
        tag,
        &[
            "--voice",
            "--tts-model",
            model_dir().to_str().unwrap(),
            "--voices-dir",
            voices.to_str().unwrap(),
        ],
    )
}

fn voices_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trillim-voices-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn speech(s: &Server, body: Value) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let st = s
        .send(
            "POST",
            "/v1/audio/speech",
            Some(body.to_string().as_bytes()),
            &[],
        )
        .unwrap();
    let mut r = BufReader::new(st);
    let (status, headers) = read_head(&mut r).unwrap();
    let mut b = Vec::new();
    r.read_to_end(&mut b).unwrap();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    (
        status,
        headers,
        if chunked { common::dechunk(&b) } else { b },
    )
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n == k)
        .map_or("", |(_, v)| v.as_str())
}

/// The reference's samples for "Hello world." (voice alba), as 16-bit PCM.
fn golden_pcm() -> Vec<i16> {
    golden_samples("hello", "audio")
}

/// A float tensor of a golden file, as 16-bit PCM.
fn golden_samples(file: &str, name: &str) -> Vec<i16> {
    let buf =
        std::fs::read(root().join(format!("testdata/golden/tts/{file}.safetensors"))).unwrap();
    let t = trillim_runtime::safetensors::parse(&buf).unwrap();
    let a = t.iter().find(|t| t.name == name).unwrap();
    a.data
        .chunks_exact(4)
        .map(|c| {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            (x.clamp(-1.0, 1.0) * 32767.0) as i16
        })
        .collect()
}

fn pcm(b: &[u8]) -> Vec<i16> {
    b.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn assert_close(got: &[i16], want: &[i16]) {
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap_or(0);
    assert!(worst <= 330, "worst sample difference {worst}");
}

#[test]
fn speech_streams_wav_and_pcm() {
    let vd = voices_dir("speech");
    let s = tts_server("tts-speech", &vd);
    let (st, h, body) = speech(&s, json!({"input": "Hello world.", "voice": "alba"}));
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), "audio/wav");
    assert_eq!(&body[0..4], b"RIFF");
    assert_eq!(&body[4..8], &[0xff; 4]);
    assert_eq!(&body[8..16], b"WAVEfmt ");
    assert_eq!(u32::from_le_bytes(body[24..28].try_into().unwrap()), 24000);
    assert_eq!(u16::from_le_bytes(body[34..36].try_into().unwrap()), 16);
    assert_eq!(&body[36..40], b"data");
    assert_eq!(&body[40..44], &[0xff; 4]);
    let want = golden_pcm();
    assert_close(&pcm(&body[44..]), &want);

    let (st, h, body) = speech(
        &s,
        json!({"input": "Hello world.", "response_format": "pcm", "model": "tts-1"}),
    );
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), "audio/pcm");
    assert_close(&pcm(&body), &want);

    let (st, _, body) = speech(
        &s,
        json!({"input": "Hello world.", "response_format": "pcm", "speed": 2.0}),
    );
    assert_eq!(st, 200);
    // Pitch-preserving time stretch: exactly half as long.
    let n = body.len() / 2;
    assert_eq!(
        n,
        (want.len() as f64 / 2.0).round() as usize,
        "samples at speed 2"
    );
}

#[test]
fn bad_requests_are_refused_before_streaming() {
    let vd = voices_dir("bad");
    let s = tts_server("tts-bad", &vd);
    let long = "a".repeat(1_000_000);
    for (body, param, text) in [
        (json!({"input": "  \n "}), "input", "input text is empty"),
        (json!({}), "input", "input"),
        (
            json!({"input": "Hi", "speed": 4.5}),
            "speed",
            "speed must be between 0.25 and 4.0",
        ),
        (
            json!({"input": "Hi", "speed": 0.2}),
            "speed",
            "speed must be between 0.25 and 4.0",
        ),
        (
            json!({"input": "Hi", "voice": "nobody"}),
            "voice",
            "Unknown voice: nobody",
        ),
        (
            json!({"input": "Hi", "voice": "../../etc/passwd"}),
            "voice",
            "Unknown voice",
        ),
        (
            json!({"input": "Hi", "response_format": "mp3"}),
            "response_format",
            "wav or pcm",
        ),
        (json!({"input": long}), "input", "characters"),
    ] {
        let (st, _, b) = speech(&s, body);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(st == 400 || st == 413, "{st} {v}");
        if st == 400 {
            assert_error(&v, st, 400);
            assert_eq!(v["error"]["param"], param, "{v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(text),
                "{v}"
            );
        }
    }
    // A client that hangs up after the head: the engine stops and serves the next one.
    let a = s
        .send(
            "POST",
            "/v1/audio/speech",
            Some(
                json!({"input": "Hello world. It is the end."})
                    .to_string()
                    .as_bytes(),
            ),
            &[],
        )
        .unwrap();
    let mut r = BufReader::new(a);
    assert_eq!(read_head(&mut r).unwrap().0, 200);
    drop(r);
    let (st, _, _) = speech(&s, json!({"input": "Hello.", "response_format": "pcm"}));
    assert_eq!(st, 200);
}

const BOUNDARY: &str = "----trillim-tts-boundary";

fn form(id: &str, file: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"voice_id\"\r\n\r\n{id}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.safetensors\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn upload(s: &Server, id: &str, file: &[u8]) -> (u16, Value) {
    let body = form(id, file);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let len = body.len().to_string();
    let mut c = s
        .send(
            "POST",
            "/v1/voices",
            None,
            &[("Content-Type", &ct), ("Content-Length", &len)],
        )
        .unwrap();
    use std::io::Write;
    let _ = c.write_all(&body);
    let mut r = BufReader::new(c);
    let (st, _) = read_head(&mut r).unwrap();
    let mut b = Vec::new();
    let _ = r.read_to_end(&mut b);
    let b = if b.first() != Some(&b'{') {
        common::dechunk(&b)
    } else {
        b
    };
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn list(s: &Server) -> Vec<(String, String)> {
    let (st, _, body) = s.try_request("GET", "/v1/voices", None, &[]).unwrap();
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    v["voices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["name"], v["voice_id"]);
            (
                v["voice_id"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn custom_voices_persist_and_are_checked() {
    let vd = voices_dir("custom");
    let state = std::fs::read(model_dir().join("embeddings/marius.safetensors")).unwrap();
    let s = tts_server("tts-voices", &vd);
    let builtins = [
        "alba", "azelma", "cosette", "eponine", "fantine", "javert", "jean", "marius",
    ];
    let names: Vec<String> = list(&s)
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t, "predefined");
            n
        })
        .collect();
    assert_eq!(names, builtins);
    for (id, want) in [("../evil", 400), ("a/b", 400), ("..", 400), ("alba", 400)] {
        let (st, v) = upload(&s, id, &state);
        assert_eq!(st, want, "{id}: {v}");
    }
    let (st, _) = upload(&s, "big", &vec![0u8; 9 << 20]);
    assert_eq!(st, 413);
    let (st, _) = upload(&s, "junk", b"not a voice state");
    assert_eq!(st, 400);
    assert!(
        std::fs::read_dir(&vd).map_or(0, |d| d.count()) == 0,
        "nothing may be written"
    );
    let (st, v) = upload(&s, "my-voice", &state);
    assert_eq!((st, v["status"].as_str()), (200, Some("created")), "{v}");
    assert_eq!(
        list(&s).last().unwrap(),
        &("my-voice".to_string(), "custom".to_string())
    );
    let (st, _, _) = speech(
        &s,
        json!({"input": "Hello.", "voice": "my-voice", "response_format": "pcm"}),
    );
    assert_eq!(st, 200);
    drop(s);
    let s = tts_server("tts-voices2", &vd);
    assert_eq!(list(&s).len(), 9);
    let (st, _, _) = speech(
        &s,
        json!({"input": "Hello.", "voice": "my-voice", "response_format": "pcm"}),
    );
    assert_eq!(st, 200);
    let (st, _, body) = s
        .try_request("DELETE", "/v1/voices/alba", None, &[])
        .unwrap();
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("predefined"));
    let (st, _, body) = s
        .try_request("DELETE", "/v1/voices/my-voice", None, &[])
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, _, _) = s
        .try_request("DELETE", "/v1/voices/my-voice", None, &[])
        .unwrap();
    assert_eq!(st, 404);
    assert_eq!(list(&s).len(), 8);
    let _ = std::fs::remove_dir_all(&vd);
}

#[test]
fn speak_command_writes_a_wav() {
    let out = std::env::temp_dir().join(format!("trillim-speak-{}.wav", std::process::id()));
    let st = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["speak", "Hello world.", "--voice", "alba", "--tts-model"])
        .arg(model_dir())
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let wav = std::fs::read(&out).unwrap();
    assert_eq!(&wav[0..4], b"RIFF");
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    assert_eq!(data, wav.len() - 44);
    assert_close(&pcm(&wav[44..]), &golden_pcm());
    let _ = std::fs::remove_file(&out);
    let bad = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["speak", "Hi", "--tts-model", "nobody/none"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("run `trillim pull kyutai/pocket-tts`"));
}

/// A 16-bit PCM WAV of `samples` (interleaved when `channels` > 1).
fn wav(samples: &[f32], rate: u32, channels: u16) -> Vec<u8> {
    let data = samples.len() as u32 * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * channels as u32).to_le_bytes());
    b.extend_from_slice(&(2 * channels).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for x in samples {
        b.extend_from_slice(&((x * 32767.0) as i16).to_le_bytes());
    }
    b
}

#[test]
fn voices_cloned_from_recordings() {
    let vd = voices_dir("clone");
    let s = tts_server("tts-clone", &vd);
    let clip = std::fs::read(root().join("testdata/audio/voice-24k.wav")).unwrap();
    for (what, file) in [
        ("empty", Vec::new()),
        ("truncated header", clip[..20].to_vec()),
        ("zero seconds", wav(&[], 24000, 1)),
        ("not audio", b"just some text, not a recording".to_vec()),
    ] {
        let (st, v) = upload(&s, "bad", &file);
        assert_error(&v, st, 400);
        assert_eq!(v["error"]["param"], "file", "{what}: {v}");
        assert_eq!(v["error"]["code"], "invalid_audio", "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("clone"),
            "{what}: {v}"
        );
    }
    assert!(
        std::fs::read_dir(&vd).map_or(0, |d| d.count()) == 0,
        "nothing may be written"
    );
    let (st, v) = upload(&s, "cloned", &clip);
    assert_eq!((st, v["status"].as_str()), (200, Some("created")), "{v}");
    assert!(vd.join("cloned.safetensors").is_file());
    assert_eq!(
        list(&s).last().unwrap(),
        &("cloned".to_string(), "custom".to_string())
    );
    // The reference spoke "Hello world." with the voice it cloned from the same clip.
    let want = golden_samples("clone", "speech");
    let (st, _, body) = speech(
        &s,
        json!({"input": "Hello world.", "voice": "cloned", "response_format": "pcm"}),
    );
    assert_eq!(st, 200);
    assert_close(&pcm(&body), &want);
    // Another rate and two channels go through the resampler.
    let stereo: Vec<f32> = (0..16000 * 2)
        .map(|i| 0.3 * ((i / 2) as f32 * 0.05).sin() * ((i / 2) as f32 * 0.0007).sin())
        .collect();
    let (st, v) = upload(&s, "stereo-16k", &wav(&stereo, 16000, 2));
    assert_eq!(st, 200, "{v}");
    drop(s);
    let s = tts_server("tts-clone2", &vd);
    assert_eq!(list(&s).len(), 10);
    let (st, _, body) = speech(
        &s,
        json!({"input": "Hello world.", "voice": "cloned", "response_format": "pcm"}),
    );
    assert_eq!(st, 200);
    assert_close(&pcm(&body), &want);
    for id in ["cloned", "stereo-16k"] {
        let (st, _, body) = s
            .try_request("DELETE", &format!("/v1/voices/{id}"), None, &[])
            .unwrap();
        assert_eq!(st, 200, "{body}");
    }
    assert_eq!(list(&s).len(), 8);
    assert!(!vd.join("cloned.safetensors").exists());
    let _ = std::fs::remove_dir_all(&vd);
}

/// A copy of the fixture without the Mimi encoder (as the models released without voice
/// cloning are) in a fresh directory.
fn model_without_encoder(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trillim-tts-noenc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("embeddings")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "embeddings/alba.safetensors",
    ] {
        std::fs::copy(model_dir().join(f), dir.join(f)).unwrap();
    }
    let buf = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let views = trillim_runtime::safetensors::parse(&buf).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for v in views
        .iter()
        .filter(|v| !v.name.starts_with("mimi.encoder."))
    {
        assert_eq!(v.dtype, trillim_runtime::safetensors::Dtype::F32);
        header.insert(
            v.name.clone(),
            json!({"dtype": "F32", "shape": v.shape, "data_offsets": [data.len(), data.len() + v.data.len()]}),
        );
        data.extend_from_slice(v.data);
    }
    let h = Value::Object(header).to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
    dir
}

#[test]
fn models_without_an_encoder_refuse_recordings() {
    let vd = voices_dir("noenc");
    let model = model_without_encoder("noenc");
    let s = start(
        "tts-noenc",
        &[
            "--voice",
            "--tts-model",
            model.to_str().unwrap(),
            "--voices-dir",
            vd.to_str().unwrap(),
        ],
    );
    let clip = std::fs::read(root().join("testdata/audio/voice-24k.wav")).unwrap();
    let (st, v) = upload(&s, "cloned", &clip);
    assert_error(&v, st, 501);
    assert_eq!(v["error"]["code"], "voice_cloning_unavailable", "{v}");
    assert!(std::fs::read_dir(&vd).map_or(0, |d| d.count()) == 0);
    // Voice states are still accepted.
    let state = std::fs::read(model_dir().join("embeddings/marius.safetensors")).unwrap();
    let (st, v) = upload(&s, "state", &state);
    assert_eq!(st, 200, "{v}");
    drop(s);
    let _ = std::fs::remove_dir_all(&vd);
    let _ = std::fs::remove_dir_all(&model);
}
