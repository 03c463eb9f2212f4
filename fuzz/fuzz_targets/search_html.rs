//! What the search harness reads from the web, as hostile bytes: a body decoded by any
//! charset its `Content-Type` or `<meta>` names, then parsed as a DuckDuckGo result page,
//! and every line tried as a result link and as a URL for the SSRF guard. Nothing may
//! panic, every result link must be an absolute http(s) URL, and a URL the guard lets
//! through must be http(s) with no local name and no non-public literal address.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The harness's own files, built here without the server around them, under the module
// paths they use there.
#[path = "../../server/src/harness/providers/ddg_html.rs"]
pub mod ddg_html;
#[path = "../../server/src/harness/guard.rs"]
pub mod guard;
#[path = "../../server/src/harness/providers/hit.rs"]
pub mod hit;
#[path = "../../server/src/harness/text.rs"]
pub mod text;
mod harness {
    pub use super::text;
    pub mod providers {
        pub use super::super::hit;
    }
}

use ddg_html::{parse, unwrap_link};
use text::decode;
const TYPES: &[&str] = &[
    "text/html",
    "text/html; charset=utf-8",
    "text/html; charset=windows-1252",
    "text/html; charset=\"shift_jis\"",
    "text/html; charset=utf-16le",
    "text/html;charset=",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let text = decode(body, TYPES[sel as usize % TYPES.len()]);
    for hit in parse(&text) {
        assert!(
            hit.url.starts_with("http://") || hit.url.starts_with("https://"),
            "{hit:?}"
        );
    }
    let guard = guard::Guard::default();
    for line in text.lines().take(64) {
        if let Some(u) = unwrap_link(line) {
            assert!(u.starts_with("http://") || u.starts_with("https://"), "{u}");
        }
        if let Ok(u) = url::Url::parse(line.trim()) {
            if guard.check_url(&u).is_ok() {
                assert!(matches!(u.scheme(), "http" | "https"), "{u}");
                match u.host() {
                    Some(url::Host::Ipv4(ip)) => {
                        assert!(guard::classify(ip.into()).is_none(), "{u}")
                    }
                    Some(url::Host::Ipv6(ip)) => {
                        assert!(guard::classify(ip.into()).is_none(), "{u}")
                    }
                    Some(url::Host::Domain(d)) => {
                        let d = d.trim_end_matches('.').to_ascii_lowercase();
                        assert!(d != "localhost" && !d.ends_with(".localhost"), "{u}")
                    }
                    None => panic!("{u} has no host"),
                }
            }
        }
    }
});
