//! Text helpers shared by the providers and the page fetcher, free of I/O (the fuzz targets
//! build them on their own): whitespace collapsing and decoding bodies by their charset.

/// Collapses runs of whitespace to one space and trims.
pub fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes a body by its byte-order mark, the `charset` of its `Content-Type`, or a
/// `<meta charset>` near the start, else as UTF-8; malformed bytes become U+FFFD.
pub fn decode(body: &[u8], content_type: &str) -> String {
    let label = charset_param(content_type).or_else(|| meta_charset(body));
    let enc = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    // `decode` honours a byte-order mark over the label, as browsers do.
    let (text, _, _) = enc.decode(body);
    text.into_owned()
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// The charset named by `<meta charset=…>` or `<meta http-equiv … content="…charset=…">`
/// in the first 1024 bytes.
fn meta_charset(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(1024)];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    let mut i = 0;
    while let Some(p) = find(&lower[i..], b"charset") {
        let mut j = i + p + b"charset".len();
        i = j;
        while j < lower.len() && lower[j].is_ascii_whitespace() {
            j += 1;
        }
        if lower.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < lower.len() && matches!(lower[j], b' ' | b'"' | b'\'') {
            j += 1;
        }
        let start = j;
        while j < lower.len() && (lower[j].is_ascii_alphanumeric() || b"-_:.".contains(&lower[j])) {
            j += 1;
        }
        if j > start {
            return Some(String::from_utf8_lossy(&lower[start..j]).into_owned());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets_come_from_the_header_the_page_or_the_bom() {
        assert_eq!(decode(b"caf\xe9", "text/html; charset=ISO-8859-1"), "café");
        assert_eq!(
            decode(
                b"<meta charset=\"windows-1252\">caf\xe9 \x93q\x94",
                "text/html"
            ),
            "<meta charset=\"windows-1252\">café “q”"
        );
        assert_eq!(
            decode(
                b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\">\xf0\xd2",
                ""
            ),
            "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\">Пр"
        );
        assert_eq!(decode(b"\xef\xbb\xbfhi", "text/html; charset=latin1"), "hi");
        assert_eq!(decode(b"ok \xff end", "text/plain"), "ok \u{fffd} end");
        assert_eq!(
            decode("天気".as_bytes(), "text/html; charset=bogus"),
            "天気"
        );
        assert_eq!(
            decode(b"\x93\xfa\x96\x7b", "text/html; charset=\"Shift_JIS\""),
            "日本"
        );
    }
}
