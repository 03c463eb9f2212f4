//! The voice routes: `POST /v1/audio/transcriptions` (multipart upload → Whisper),
//! `POST /v1/audio/speech` (pocket-tts, streamed WAV or PCM) and the custom voices
//! (`GET`/`POST /v1/voices`, `DELETE /v1/voices/{id}`). Without `--voice` they answer 404.

use std::fmt::Write as _;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use trillim_voice::multipart::{self, MultipartError};
use trillim_voice::whisper::Transcript;

use super::ApiError;
use crate::engines::stt::{self, SttError};
use crate::engines::tts::{self, TtsError};
use crate::http::body::Body;
use crate::http::limits;
use crate::http::router::json_response;
use crate::state::AppState;

/// Largest audio file accepted.
pub const MAX_UPLOAD: usize = 8 * 1024 * 1024;
/// Room for the other form fields and the multipart framing around the file.
const FORM_OVERHEAD: usize = 64 * 1024;

/// The transcript shapes a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

impl Format {
    /// Parses `response_format`.
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "json" => Format::Json,
            "text" => Format::Text,
            "verbose_json" => Format::VerboseJson,
            "srt" => Format::Srt,
            "vtt" => Format::Vtt,
            _ => return None,
        })
    }
}

fn voice_off(path: &str) -> ApiError {
    ApiError {
        code: Some("voice_disabled"),
        ..ApiError::not_found(format!(
            "{path} needs speech support: start the server with `trillim serve --voice`"
        ))
    }
}

fn tts_engine(state: &AppState, path: &str) -> Result<crate::engines::tts::Tts, ApiError> {
    if !state.voice {
        return Err(voice_off(path));
    }
    state.tts.clone().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "TTS engine not started: {path} needs a pocket-tts model (`trillim serve --voice \
             --tts-model DIR_OR_ID`; the weights are {})",
            tts::DEFAULT_TTS_MODEL
        ),
        kind: "server_error",
        param: None,
        code: Some("tts_unavailable"),
        retry_after: None,
    })
}

fn tts_error(e: TtsError) -> ApiError {
    match e {
        TtsError::Busy => ApiError {
            message: e.to_string(),
            ..ApiError::queue_full(tts::QUEUE)
        },
        TtsError::UnknownVoice(_) => ApiError::invalid_param("voice", e.to_string()),
        TtsError::BadVoice(m) => ApiError::invalid_param("file", m),
        TtsError::BadRecording(_) => ApiError {
            code: Some("invalid_audio"),
            ..ApiError::invalid_param("file", e.to_string())
        },
        TtsError::NoCloning => ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            message: e.to_string(),
            kind: "not_implemented_error",
            param: Some("file".into()),
            code: Some("voice_cloning_unavailable"),
            retry_after: None,
        },
        TtsError::Stopped => ApiError::internal(e.to_string()),
    }
}

/// `POST /v1/audio/speech`: validates everything, then streams the WAV header (or nothing,
/// for `pcm`) and the samples as the engine decodes them.
pub fn speech(state: &Arc<AppState>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let engine = tts_engine(state, "/v1/audio/speech")?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let input = v.get("input").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_param("input", "`input` is required and must be a string")
    })?;
    if input.trim().is_empty() {
        return Err(ApiError::invalid_param("input", "input text is empty"));
    }
    if input.chars().count() > tts::MAX_INPUT_CHARS {
        return Err(ApiError::invalid_param(
            "input",
            format!("input is longer than {} characters", tts::MAX_INPUT_CHARS),
        ));
    }
    let voice_id = match v.get("voice") {
        None | Some(Value::Null) => tts::DEFAULT_VOICE.to_string(),
        Some(Value::String(s)) => s.clone(),
        // The openai client may send `{"id": ...}` for custom voices.
        Some(Value::Object(o)) => o
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_param("voice", "`voice` must be a voice id"))?
            .to_string(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "voice",
                "`voice` must be a voice id",
            ))
        }
    };
    let speed = match v.get("speed") {
        None | Some(Value::Null) => 1.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| ApiError::invalid_param("speed", "`speed` must be a number"))?,
    };
    if !(0.25..=4.0).contains(&speed) {
        return Err(ApiError::invalid_param(
            "speed",
            "speed must be between 0.25 and 4.0",
        ));
    }
    let wav = match v.get("response_format") {
        None | Some(Value::Null) => true,
        Some(Value::String(f)) if f == "wav" => true,
        Some(Value::String(f)) if f == "pcm" => false,
        Some(f) => {
            return Err(ApiError::invalid_param(
                "response_format",
                format!("unsupported response_format {f}: use wav or pcm"),
            ))
        }
    };
    let voice = engine.voice(&voice_id).map_err(tts_error)?;
    let rx = engine
        .speak(input.to_string(), voice, speed as f32)
        .map_err(tts_error)?;
    let first = wav.then(|| bytes::Bytes::copy_from_slice(&tts::wav_header(engine.sample_rate())));
    let mut r = Response::new(Body::Stream { first, rx });
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if wav { "audio/wav" } else { "audio/pcm" }),
    );
    Ok(r)
}

/// `GET /v1/voices`: the built-in voices, then the custom ones, each sorted.
pub fn list_voices(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    let engine = tts_engine(state, "/v1/voices")?;
    let mut voices: Vec<Value> = tts::BUILTIN_VOICES
        .iter()
        .map(|v| json!({"voice_id": v, "name": v, "type": "predefined"}))
        .collect();
    voices.extend(
        engine
            .custom_voices()
            .into_iter()
            .map(|v| json!({"voice_id": v, "name": v, "type": "custom"})),
    );
    Ok(json_response(StatusCode::OK, &json!({ "voices": voices })))
}

fn check_custom_id(id: &str, verb: &str) -> Result<(), ApiError> {
    if tts::BUILTIN_VOICES.contains(&id) {
        return Err(ApiError::invalid_param(
            "voice_id",
            format!("'{id}' is a predefined voice and cannot be {verb}"),
        ));
    }
    if !tts::valid_voice_id(id) {
        return Err(ApiError::invalid_param(
            "voice_id",
            format!(
                "Invalid voice_id: '{id}' (must be a simple name: letters, digits, '-' and '_', at most 64)"
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/voices`: multipart `voice_id` and `file`, either a voice state (`.safetensors`,
/// as pocket-tts exports them) for the served model or a recording to clone the voice from
/// (its first 30 s; stored as the voice state it gives).
pub async fn add_voice(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let engine = tts_engine(state, "/v1/voices")?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = multipart::boundary(&content_type).map_err(multipart_error)?;
    let body = limits::read_body_up_to(&state.guards, req, MAX_UPLOAD + FORM_OVERHEAD)
        .await
        .map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                upload_too_large()
            } else {
                e
            }
        })?;
    let parts = multipart::parse(&body, &boundary, multipart::Limits::default())
        .map_err(multipart_error)?;
    let mut id = None;
    let mut file = None;
    for p in &parts {
        match p.name.as_str() {
            "voice_id" | "name" => id = Some(field_text(p.data, "voice_id")?),
            "file" => file = Some(p.data),
            _ => {}
        }
    }
    let id = id.ok_or_else(|| ApiError::invalid_param("voice_id", "the form has no `voice_id`"))?;
    let id = id.trim().to_string();
    check_custom_id(&id, "overwritten")?;
    let file = file.ok_or_else(|| ApiError::invalid_param("file", "the form has no `file`"))?;
    if file.len() > MAX_UPLOAD {
        return Err(upload_too_large());
    }
    if is_voice_state(file) {
        engine.add_voice(&id, file).map_err(tts_error)?;
    } else {
        let voice = engine.clone_voice(file.to_vec()).await.map_err(tts_error)?;
        engine.add_cloned_voice(&id, voice).map_err(tts_error)?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"voice_id": id, "status": "created"}),
    ))
}

/// `DELETE /v1/voices/{id}`.
pub fn delete_voice(state: &Arc<AppState>, id: &str) -> Result<Response<Body>, ApiError> {
    let engine = tts_engine(state, "/v1/voices")?;
    check_custom_id(id, "deleted")?;
    if !engine.delete_voice(id) {
        return Err(ApiError::not_found(format!("Voice '{id}' not found")));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "deleted", "voice_id": id}),
    ))
}

/// Whether an upload is a safetensors file (a little-endian header length, then its JSON);
/// anything else is taken for a recording.
fn is_voice_state(file: &[u8]) -> bool {
    file.len() > 8
        && file[8] == b'{'
        && u64::from_le_bytes(file[..8].try_into().unwrap_or([0; 8])) <= file.len() as u64
}

fn upload_too_large() -> ApiError {
    ApiError {
        message: format!("Upload exceeds 8 MB limit ({MAX_UPLOAD} bytes)"),
        param: Some("file".into()),
        ..ApiError::too_large(MAX_UPLOAD)
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    ApiError::invalid(format!("invalid multipart/form-data body: {e}"))
}

fn field_text(data: &[u8], name: &str) -> Result<String, ApiError> {
    String::from_utf8(data.to_vec())
        .map_err(|_| ApiError::invalid_param(name, format!("`{name}` must be UTF-8 text")))
}

/// `POST /v1/audio/transcriptions`.
pub async fn transcriptions(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(engine) = state.stt.clone() else {
        if state.voice {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "Whisper engine not started".into(),
                kind: "server_error",
                param: None,
                code: Some("stt_unavailable"),
                retry_after: None,
            });
        }
        return Err(voice_off("/v1/audio/transcriptions"));
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = multipart::boundary(&content_type).map_err(multipart_error)?;
    let body = limits::read_body_up_to(&state.guards, req, MAX_UPLOAD + FORM_OVERHEAD)
        .await
        .map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                upload_too_large()
            } else {
                e
            }
        })?;
    let parts = multipart::parse(&body, &boundary, multipart::Limits::default())
        .map_err(multipart_error)?;
    let mut file = None;
    let mut request = stt::Request {
        seed: crate::state::random_u64(),
        ..stt::Request::default()
    };
    let mut format = Format::Json;
    for p in &parts {
        match p.name.as_str() {
            "file" => file = Some(p.data),
            "model" => {}
            "language" => {
                let l = field_text(p.data, "language")?.trim().to_ascii_lowercase();
                if l.len() > 32 || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                    return Err(ApiError::invalid_param(
                        "language",
                        "`language` must be a language code such as `en`",
                    ));
                }
                request.language = (!l.is_empty()).then_some(l);
            }
            "prompt" => request.prompt = Some(field_text(p.data, "prompt")?),
            "response_format" => {
                let f = field_text(p.data, "response_format")?;
                format = Format::parse(f.trim()).ok_or_else(|| {
                    ApiError::invalid_param(
                        "response_format",
                        format!(
                            "unsupported response_format `{}`: use json, text, verbose_json, srt or vtt",
                            f.trim()
                        ),
                    )
                })?;
            }
            "temperature" => {
                let t = field_text(p.data, "temperature")?;
                let t: f32 = t.trim().parse().map_err(|_| {
                    ApiError::invalid_param("temperature", "`temperature` must be a number")
                })?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(ApiError::invalid_param(
                        "temperature",
                        "`temperature` must be between 0 and 1",
                    ));
                }
                request.temperature = t;
            }
            // Other OpenAI fields (timestamp_granularities[], stream, ...) are accepted and
            // ignored, as unknown JSON fields are elsewhere.
            _ => {}
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::invalid_param("file", "the form has no `file` field with the audio")
    })?;
    if file.len() > MAX_UPLOAD {
        return Err(upload_too_large());
    }
    if file.is_empty() {
        return Err(ApiError::invalid_param("file", "the audio file is empty"));
    }
    let transcript = engine
        .transcribe(file.to_vec(), request)
        .await
        .map_err(|e| match e {
            SttError::Busy => ApiError {
                message: e.to_string(),
                ..ApiError::queue_full(stt::QUEUE)
            },
            SttError::Audio(a) => ApiError::invalid_param("file", a.to_string()),
            SttError::Stopped | SttError::Failed => ApiError::internal(e.to_string()),
        })?;
    Ok(render(&transcript, format))
}

/// The transcript in the asked-for shape.
pub fn render(t: &Transcript, format: Format) -> Response<Body> {
    let text_response = |s: String, mime: &'static str| {
        let mut r = Response::new(Body::full(s));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        r
    };
    match format {
        Format::Json => json_response(StatusCode::OK, &json!({ "text": t.text })),
        Format::Text => text_response(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        Format::VerboseJson => json_response(StatusCode::OK, &verbose_json(t)),
        Format::Srt => text_response(subtitles(t, false), "application/x-subrip; charset=utf-8"),
        Format::Vtt => text_response(subtitles(t, true), "text/vtt; charset=utf-8"),
    }
}

/// OpenAI's `verbose_json` shape.
pub fn verbose_json(t: &Transcript) -> Value {
    let segments: Vec<Value> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i,
                "seek": (s.start * 100.0).round() as u64,
                "start": round3(s.start),
                "end": round3(s.end),
                "text": s.text,
                "tokens": s.tokens,
                "temperature": 0.0,
            })
        })
        .collect();
    json!({
        "task": "transcribe",
        "language": language_name(&t.language),
        "duration": round3(t.duration),
        "text": t.text,
        "segments": segments,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// SubRip (`srt`) or WebVTT (`vtt`) cues, one per segment.
pub fn subtitles(t: &Transcript, vtt: bool) -> String {
    let mut out = String::new();
    if vtt {
        out.push_str("WEBVTT\n\n");
    }
    let stamp = |secs: f64| {
        let ms = (secs.max(0.0) * 1000.0).round() as u64;
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        if vtt {
            format!("{h:02}:{m:02}:{s:02}.{ms:03}")
        } else {
            format!("{h:02}:{m:02}:{s:02},{ms:03}")
        }
    };
    let mut n = 0;
    for s in &t.segments {
        let text = s.text.trim();
        if text.is_empty() {
            continue;
        }
        n += 1;
        if !vtt {
            let _ = writeln!(out, "{n}");
        }
        let _ = writeln!(out, "{} --> {}", stamp(s.start), stamp(s.end));
        // A blank line would end the cue early.
        let text = text.replace("\n\n", "\n");
        let _ = writeln!(out, "{text}\n");
    }
    out
}

/// The English name Whisper gives a language code (OpenAI's `verbose_json` reports names).
fn language_name(code: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("en", "english"),
        ("de", "german"),
        ("es", "spanish"),
        ("fr", "french"),
        ("it", "italian"),
        ("ja", "japanese"),
        ("ko", "korean"),
        ("nl", "dutch"),
        ("pl", "polish"),
        ("pt", "portuguese"),
        ("ru", "russian"),
        ("sv", "swedish"),
        ("tr", "turkish"),
        ("uk", "ukrainian"),
        ("zh", "chinese"),
    ];
    NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| code.to_string(), |(_, n)| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trillim_voice::whisper::Segment;

    fn sample() -> Transcript {
        let seg = |start, end, text: &str| Segment {
            start,
            end,
            text: text.into(),
            tokens: vec![1, 2],
        };
        Transcript {
            text: "Hello there. General Kenobi.".into(),
            language: "en".into(),
            duration: 3725.5,
            segments: vec![
                seg(0.0, 2.5, " Hello there."),
                seg(2.5, 3725.25, " General Kenobi."),
            ],
        }
    }

    #[test]
    fn subtitle_formats() {
        let t = sample();
        assert_eq!(
            subtitles(&t, false),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n\
             2\n00:00:02,500 --> 01:02:05,250\nGeneral Kenobi.\n\n"
        );
        assert_eq!(
            subtitles(&t, true),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n\
             00:00:02.500 --> 01:02:05.250\nGeneral Kenobi.\n\n"
        );
    }

    #[test]
    fn json_shapes() {
        let t = sample();
        assert_eq!(verbose_json(&t)["text"], "Hello there. General Kenobi.");
        let v = verbose_json(&t);
        assert_eq!(v["language"], "english");
        assert_eq!(v["segments"][1]["end"], 3725.25);
        assert_eq!(v["segments"][1]["id"], 1);
        assert_eq!(Format::parse("srt"), Some(Format::Srt));
        assert_eq!(Format::parse("mp3"), None);
    }
}
