//! The voice routes: `POST /v1/audio/transcriptions` (multipart upload → Whisper), and the
//! text-to-speech and voice routes, which answer that they need `--voice` (404) or that this
//! build has no text-to-speech engine (501).

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

/// The text-to-speech and voice routes: 404 without `--voice`, else 501 (no engine in this
/// build).
pub fn speech_unavailable(state: &AppState, path: &str) -> Result<Response<Body>, ApiError> {
    if state.stt.is_none() {
        return Err(voice_off(path));
    }
    Err(ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: format!(
            "{path}: text-to-speech is not available in this build; speech-to-text \
             (/v1/audio/transcriptions) is"
        ),
        kind: "not_implemented_error",
        param: None,
        code: Some("tts_unavailable"),
        retry_after: None,
    })
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
