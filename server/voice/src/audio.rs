//! Decoding uploaded audio (WAV, FLAC, MP3, Ogg/Vorbis, MP4/M4A with AAC) into 16 kHz mono
//! `f32` samples: the container is probed from its bytes, the first audio track decoded,
//! channels averaged and the result resampled.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::mel::SAMPLE_RATE;
use crate::resample::resample;

/// Why an upload is not usable audio.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudioError {
    #[error("the audio file is empty")]
    Empty,
    #[error(
        "the file is not audio in a supported format (wav, flac, mp3, ogg/vorbis, m4a/aac): {0}"
    )]
    Unsupported(String),
    #[error("the audio could not be decoded: {0}")]
    Corrupt(String),
    #[error("the audio contains no samples (zero seconds)")]
    NoSamples,
    #[error("the audio is longer than the {0} s this server accepts")]
    TooLong(u32),
    #[error("the audio has an invalid sample rate or channel layout")]
    BadParameters,
}

/// Decodes `bytes` to 16 kHz mono, refusing audio longer than `max_seconds`.
pub fn decode_16k_mono(bytes: &[u8], max_seconds: u32) -> Result<Vec<f32>, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let (mono, rate) = decode_mono(bytes, max_seconds)?;
    let out = resample(&mono, rate, SAMPLE_RATE as u32);
    if out.is_empty() {
        return Err(AudioError::NoSamples);
    }
    Ok(out)
}

/// Decodes `bytes` to mono samples at the file's own rate.
///
/// The demuxers and codecs can panic on some malformed input (an ADTS header with a zero
/// frame length, found by fuzzing); such a panic is caught here and reported as corrupt
/// audio, so no upload can take the engine thread down.
pub fn decode_mono(bytes: &[u8], max_seconds: u32) -> Result<(Vec<f32>, u32), AudioError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_inner(bytes, max_seconds)
    }))
    .unwrap_or_else(|_| {
        Err(AudioError::Corrupt(
            "the decoder failed on this file's malformed data".into(),
        ))
    })
}

/// Whether the FLAC metadata blocks after the first `fLaC` marker (the probe looks for it at
/// any offset) keep their picture and comment lengths inside their block. symphonia allocates
/// what those fields say before reading, so a 30-byte file could ask for 4 GiB.
fn flac_metadata_fits(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let Some(start) = head.windows(4).position(|w| w == b"fLaC") else {
        return true;
    };
    if [&b"RIFF"[..], b"OggS", b"ftyp"]
        .iter()
        .any(|m| head[..start].windows(4).any(|w| w == *m))
    {
        return true;
    }
    let u32_at = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let u32_le_at = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let mut at = start + 4;
    while let Some(h) = bytes.get(at..at + 4) {
        let (last, kind) = (h[0] & 0x80 != 0, h[0] & 0x7f);
        let len = (h[1] as usize) << 16 | (h[2] as usize) << 8 | h[3] as usize;
        let block = &bytes[(at + 4).min(bytes.len())..(at + 4 + len).min(bytes.len())];
        let fits = match kind {
            // PICTURE: type, MIME length + MIME, description length + text, 4 × u32, data.
            6 => (|| {
                let mime = u32_at(block, 4)?;
                let desc = u32_at(block, 8usize.checked_add(mime)?)?;
                let data_at = 12usize
                    .checked_add(mime)?
                    .checked_add(desc)?
                    .checked_add(16)?;
                let data = u32_at(block, data_at)?;
                (data_at + 4).checked_add(data).filter(|&end| end <= len)
            })()
            .is_some(),
            // VORBIS_COMMENT: vendor length + vendor, count, then length + text per comment.
            4 => (|| {
                let vendor = u32_le_at(block, 0)?;
                let mut i = 4usize.checked_add(vendor)?;
                let count = u32_le_at(block, i)?;
                i += 4;
                for _ in 0..count {
                    let n = u32_le_at(block, i)?;
                    i = i.checked_add(4)?.checked_add(n)?;
                    if i > len {
                        return None;
                    }
                }
                Some(())
            })()
            .is_some(),
            _ => true,
        };
        if !fits {
            return false;
        }
        if last {
            break;
        }
        at += 4 + len;
    }
    true
}

fn decode_inner(bytes: &[u8], max_seconds: u32) -> Result<(Vec<f32>, u32), AudioError> {
    if !flac_metadata_fits(bytes) {
        return Err(AudioError::Corrupt(
            "a FLAC metadata block's lengths run past the block".into(),
        ));
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unsupported(e.to_string()))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(e.to_string()))?;
    let mut rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut mono: Vec<f32> = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut errors = 0usize;
    let mut last_error = String::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                if mono.is_empty() {
                    return Err(AudioError::Corrupt(e.to_string()));
                }
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                // A damaged packet is skipped, as players do; too many mean a broken file.
                errors += 1;
                last_error = e.to_string();
                if errors > 64 && mono.is_empty() {
                    return Err(AudioError::Corrupt(last_error));
                }
                continue;
            }
            Err(SymError::IoError(_)) => break,
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if spec.rate == 0 || channels == 0 {
            return Err(AudioError::BadParameters);
        }
        if rate == 0 {
            rate = spec.rate;
        }
        if spec.rate != rate {
            return Err(AudioError::Corrupt(
                "the sample rate changes mid-stream".into(),
            ));
        }
        let frames = decoded.frames();
        let need = decoded.capacity() * channels;
        if buf.as_ref().is_none_or(|b| b.capacity() < need) {
            buf = Some(SampleBuffer::new(decoded.capacity() as u64, spec));
        }
        let Some(b) = buf.as_mut() else { continue };
        b.copy_interleaved_ref(decoded);
        let samples = &b.samples()[..frames * channels];
        if (mono.len() + frames) as u64 > max_seconds as u64 * rate as u64 {
            return Err(AudioError::TooLong(max_seconds));
        }
        mono.extend(
            samples
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() / channels as f32),
        );
    }
    if mono.is_empty() {
        if errors > 0 {
            return Err(AudioError::Corrupt(last_error));
        }
        return Err(AudioError::NoSamples);
    }
    if rate == 0 || rate > 768_000 {
        return Err(AudioError::BadParameters);
    }
    for s in &mut mono {
        if !s.is_finite() {
            *s = 0.0;
        }
    }
    Ok((mono, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_are_errors() {
        // A fuzzer find: a stream the ADTS probe accepts with a zero frame step.
        let adts = [
            0x70, 0x09, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x31, 0x00, 0x00, 0x95, 0x95, 0x95,
            0x95, 0xff, 0xf1, 0x54, 0x5d, 0x58, 0x58, 0x58, 0x95, 0x00, 0xbb, 0x22, 0x55, 0x4f,
            0xff, 0x36, 0x00, 0x00,
        ];
        assert!(decode_16k_mono(&adts, 30).is_err());
        // A fuzzer find: a FLAC picture block whose MIME length asks for 4 GiB.
        let flac = [
            0xdf, 0x66, 0x4c, 0x61, 0x43, 0x86, 0xdf, 0xef, 0xff, 0x4f, 0x01, 0x00, 0xff, 0xff,
            0x8c, 0x8c, 0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8c, 0x8c, 0x8c, 0x8c, 0x5b,
            0x26,
        ];
        assert!(matches!(
            decode_16k_mono(&flac, 30),
            Err(AudioError::Corrupt(_))
        ));
        assert_eq!(decode_16k_mono(&[], 30), Err(AudioError::Empty));
        assert!(matches!(
            decode_16k_mono(b"RIFF\0\0\0\0WAVEjunk", 30),
            Err(AudioError::Unsupported(_) | AudioError::Corrupt(_) | AudioError::NoSamples)
        ));
    }

    #[test]
    fn pcm_wav_is_mixed_and_resampled() {
        // 0.5 s of a stereo 8 kHz WAV, left +0.5 and right -0.25.
        let frames = 4000u32;
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&(36 + frames * 4).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&8000u32.to_le_bytes());
        w.extend_from_slice(&(8000u32 * 4).to_le_bytes());
        w.extend_from_slice(&4u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&(frames * 4).to_le_bytes());
        for _ in 0..frames {
            w.extend_from_slice(&16384i16.to_le_bytes());
            w.extend_from_slice(&(-8192i16).to_le_bytes());
        }
        let s = decode_16k_mono(&w, 30).unwrap();
        assert_eq!(s.len(), 8000);
        assert!((s[4000] - 0.125).abs() < 1e-3, "{}", s[4000]);
        assert_eq!(decode_16k_mono(&w, 0), Err(AudioError::TooLong(0)));
    }
}
