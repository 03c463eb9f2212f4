//! A bounded `multipart/form-data` parser (RFC 7578) over a body already read into memory:
//! the boundary comes from the `Content-Type` header, each part's headers are capped in size
//! and count, and parts are borrowed slices of the body, so parsing allocates only the part
//! list and header strings.

/// Limits on what a body may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most parts accepted.
    pub max_parts: usize,
    /// Most bytes of headers per part.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_parts: 32,
            max_header_bytes: 8 * 1024,
        }
    }
}

/// Why a body is not acceptable form data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("Content-Type must be multipart/form-data")]
    NotMultipart,
    #[error("the multipart/form-data Content-Type has no boundary")]
    NoBoundary,
    #[error("the multipart boundary is invalid (1 to 70 characters)")]
    BadBoundary,
    #[error("the multipart body does not start with its boundary")]
    NoFirstBoundary,
    #[error("the multipart body ends before its closing boundary")]
    Unterminated,
    #[error("a multipart part's headers are malformed")]
    BadHeaders,
    #[error("a multipart part's headers are longer than {0} bytes")]
    HeadersTooLong(usize),
    #[error("a multipart part has no Content-Disposition form-data name")]
    NoName,
    #[error("the multipart body has more than {0} parts")]
    TooManyParts(usize),
}

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// The boundary named in a `Content-Type` value.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NotMultipart);
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if v.is_empty() || v.len() > 70 || v.bytes().any(|b| !(0x20..=0x7e).contains(&b)) {
                return Err(MultipartError::BadBoundary);
            }
            return Ok(v.to_string());
        }
    }
    Err(MultipartError::NoBoundary)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// A `key="value"` (or unquoted) parameter of a header value.
fn param(value: &str, key: &str) -> Option<String> {
    let mut rest = value;
    while let Some(pos) = rest.find(';') {
        rest = rest[pos + 1..].trim_start();
        let (k, v) = rest.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            let v = v.trim_start();
            if let Some(q) = v.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => return Some(out),
                        '\\' => out.push(chars.next()?),
                        c => out.push(c),
                    }
                }
                return None;
            }
            return Some(v.split(';').next().unwrap_or("").trim().to_string());
        }
    }
    None
}

/// Splits `body` into its parts.
pub fn parse<'a>(
    body: &'a [u8],
    boundary: &str,
    limits: Limits,
) -> Result<Vec<Part<'a>>, MultipartError> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    // The body starts with the boundary (a preamble is allowed before a CRLF-led one).
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        find(body, delim.as_bytes()).ok_or(MultipartError::NoFirstBoundary)? + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding after the boundary, then CRLF.
        let line_end = find(rest, b"\r\n").ok_or(MultipartError::Unterminated)?;
        if rest[..line_end].iter().any(|&b| b != b' ' && b != b'\t') {
            return Err(MultipartError::BadHeaders);
        }
        at += line_end + 2;
        if parts.len() == limits.max_parts {
            return Err(MultipartError::TooManyParts(limits.max_parts));
        }
        let rest = &body[at..];
        let (head_len, body_start) = if rest.starts_with(b"\r\n") {
            (0, 2)
        } else {
            let end = find(
                &rest[..rest.len().min(limits.max_header_bytes + 4)],
                b"\r\n\r\n",
            )
            .ok_or(if rest.len() > limits.max_header_bytes {
                MultipartError::HeadersTooLong(limits.max_header_bytes)
            } else {
                MultipartError::Unterminated
            })?;
            (end, end + 4)
        };
        if head_len > limits.max_header_bytes {
            return Err(MultipartError::HeadersTooLong(limits.max_header_bytes));
        }
        let head =
            std::str::from_utf8(&rest[..head_len]).map_err(|_| MultipartError::BadHeaders)?;
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or(MultipartError::BadHeaders)?;
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-disposition") {
                let kind = v.split(';').next().unwrap_or("").trim();
                if !kind.eq_ignore_ascii_case("form-data") {
                    return Err(MultipartError::NoName);
                }
                name = param(v, "name");
                filename = param(v, "filename");
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.to_string());
            }
        }
        let name = name.ok_or(MultipartError::NoName)?;
        let data_start = at + body_start;
        let end =
            find(&body[data_start..], delim.as_bytes()).ok_or(MultipartError::Unterminated)?;
        parts.push(Part {
            name,
            filename,
            content_type,
            data: &body[data_start..data_start + end],
        });
        at = data_start + end + delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn body() -> Vec<u8> {
        b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".wav\"\r\n\
Content-Type: audio/wav\r\n\r\nRIFF\r\n--XY\x00\r\n--XyZ--\r\n"
            .to_vec()
    }

    #[test]
    fn parses_fields_and_files() {
        let b = body();
        let parts = parse(&b, &boundary(CT).unwrap(), Limits::default()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "model");
        assert_eq!(parts[0].data, b"whisper-1");
        assert_eq!(parts[1].filename.as_deref(), Some("a \"b\".wav"));
        assert_eq!(parts[1].content_type.as_deref(), Some("audio/wav"));
        assert_eq!(parts[1].data, b"RIFF\r\n--XY\x00");
    }

    #[test]
    fn boundaries_from_content_type() {
        assert_eq!(
            boundary("multipart/form-data; charset=utf-8; boundary=\"a b\"").unwrap(),
            "a b"
        );
        assert_eq!(
            boundary("multipart/form-data"),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            boundary("application/json"),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(
            boundary("multipart/form-data; boundary="),
            Err(MultipartError::BadBoundary)
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = body();
        let end = b.len() - b"--XyZ--\r\n".len() + 6;
        for n in 0..end {
            assert!(
                parse(&b[..n], "XyZ", Limits::default()).is_err(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn limits_hold() {
        let mut b = Vec::new();
        for _ in 0..3 {
            b.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n");
        }
        b.extend_from_slice(b"--XyZ--");
        let limits = Limits {
            max_parts: 2,
            max_header_bytes: 100,
        };
        assert_eq!(
            parse(&b, "XyZ", limits),
            Err(MultipartError::TooManyParts(2))
        );
        let mut long = b"--XyZ\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 200));
        long.extend_from_slice(b"\r\n\r\nv\r\n--XyZ--");
        assert_eq!(
            parse(&long, "XyZ", limits),
            Err(MultipartError::HeadersTooLong(100))
        );
        assert_eq!(
            parse(b"--XyZ\r\nX: y\r\n\r\nv\r\n--XyZ--", "XyZ", limits),
            Err(MultipartError::NoName)
        );
    }
}
