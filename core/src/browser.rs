//! The browser policy both servers apply: which web pages may call the API (the `Origin`
//! header, for CORS) and which names the server answers to (the `Host` header, against DNS
//! rebinding).
//!
//! A server on loopback with no API key is reachable from every page the user opens: a page on
//! `https://evil.example` can POST to `http://127.0.0.1:8000`, and a page on a domain that
//! re-resolves to 127.0.0.1 even reads the answers as same-origin. So by default:
//! - only loopback origins (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`, and
//!   their `https` forms) are allowed; a request from any other origin is refused with 403, and
//!   `null` (sandboxed frames, `file://` pages) is refused unless listed explicitly;
//! - on a loopback bind, the `Host` header must name a loopback address, `localhost`, the bound
//!   address, or an allowed host, so a rebound domain name gets 403.
//!
//! Origins and hosts are compared ASCII-case-insensitively; `*` in a list allows everything
//! (except `null` origins, which must be listed as `null`).

/// What a server allows, as configured at start-up.
#[derive(Clone, Copy, Debug)]
pub struct BrowserPolicy<'a> {
    /// Extra allowed origins (`scheme://host[:port]`, `null`, or `*` for any).
    pub cors_origins: &'a [&'a str],
    /// Extra allowed `Host` names (`name` or `name:port`, or `*` for any).
    pub allowed_hosts: &'a [&'a str],
    /// Whether `Host` is checked: the server is bound to a loopback address, or hosts were
    /// listed explicitly.
    pub check_host: bool,
    /// The address the server is bound to, as given (`127.0.0.1`, `::1`, `localhost`, ...).
    pub bound: &'a str,
}

/// Why a request was refused by the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The `Origin` is not allowed.
    Origin,
    /// The `Host` is not allowed.
    Host,
}

impl BrowserPolicy<'_> {
    /// Checks a request's `Origin` and `Host` headers (absent headers pass: only browsers send
    /// `Origin`, and HTTP/1.0 clients may omit `Host`).
    pub fn check(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> Result<(), Refusal> {
        if let Some(h) = host {
            if !self.allows_host(h) {
                return Err(Refusal::Host);
            }
        }
        if let Some(o) = origin {
            if !self.allows_origin(o) {
                return Err(Refusal::Origin);
            }
        }
        Ok(())
    }

    /// Whether a page of `origin` may call the API.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        let Ok(origin) = core::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim();
        if self.cors_origins.iter().any(|o| {
            let o = o.trim().trim_end_matches('/');
            o.eq_ignore_ascii_case(origin) || (o == "*" && !origin.eq_ignore_ascii_case("null"))
        }) {
            return true;
        }
        let rest = if let Some(r) = strip_prefix_ci(origin, "http://") {
            r
        } else if let Some(r) = strip_prefix_ci(origin, "https://") {
            r
        } else {
            return false;
        };
        match split_host_port(rest) {
            Some((name, _)) => is_loopback_name(name),
            None => false,
        }
    }

    /// Whether `Host: host` names this server.
    pub fn allows_host(&self, host: &[u8]) -> bool {
        if !self.check_host {
            return true;
        }
        let Ok(host) = core::str::from_utf8(host) else {
            return false;
        };
        let host = host.trim();
        let Some((name, _port)) = split_host_port(host) else {
            return false;
        };
        let bound = self
            .bound
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if is_loopback_name(name) || (!bound.is_empty() && name.eq_ignore_ascii_case(bound)) {
            return true;
        }
        self.allowed_hosts.iter().any(|a| {
            let a = a.trim();
            a == "*"
                || a.eq_ignore_ascii_case(host)
                || split_host_port(a)
                    .is_some_and(|(n, p)| p.is_none() && n.eq_ignore_ascii_case(name))
        })
    }
}

/// Whether a bind address (`127.0.0.1`, `[::1]`, `localhost`, ...) is a loopback one, so that
/// the `Host` check applies.
pub fn is_loopback_bind(addr: &str) -> bool {
    is_loopback_name(addr.trim().trim_start_matches('[').trim_end_matches(']'))
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `name[:port]` or `[v6][:port]` into the name (brackets removed) and the port; `None`
/// when it is not of that shape (empty, a path or user info, a bad port).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() || s.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (name, port) = if let Some(v6) = s.strip_prefix('[') {
        let close = v6.find(']')?;
        let after = &v6[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&v6[..close], port)
    } else {
        match s.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None,
            None => (s, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((name, port))
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` and `::1`.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if name.len() > 10 && strip_suffix_ci(name, ".localhost").is_some() {
        return true;
    }
    if name == "::1" || name.eq_ignore_ascii_case("0:0:0:0:0:0:0:1") {
        return true;
    }
    let mut parts = name.split('.');
    let first = parts.next();
    let rest: [Option<&str>; 3] = [parts.next(), parts.next(), parts.next()];
    if parts.next().is_some() || first != Some("127") {
        return false;
    }
    rest.iter()
        .all(|p| p.is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u8>().is_ok()))
}

fn strip_suffix_ci<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: BrowserPolicy<'static> = BrowserPolicy {
        cors_origins: &[],
        allowed_hosts: &[],
        check_host: true,
        bound: "127.0.0.1",
    };

    #[test]
    fn loopback_origins_only_by_default() {
        let p = LOOPBACK;
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1:8000",
            "http://[::1]:5173",
            "http://localhost",
            "https://LOCALHOST:8443",
            "http://app.localhost:3000",
            "http://127.1.2.3:80",
        ] {
            assert!(p.allows_origin(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "null",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://evil.example:8000",
            "file://",
            "http://user@localhost",
            "http://localhost:99999",
            "http://[::2]:80",
            "ws://localhost",
            "",
            "\u{ff}",
        ] {
            assert!(!p.allows_origin(bad.as_bytes()), "{bad}");
        }
        assert!(!p.allows_origin(b"\xff\xfe"));
    }

    #[test]
    fn listed_origins_and_star() {
        let p = BrowserPolicy {
            cors_origins: &["https://app.example.com", "null"],
            ..LOOPBACK
        };
        assert!(p.allows_origin(b"https://app.example.com"));
        assert!(p.allows_origin(b"HTTPS://APP.example.com"));
        assert!(p.allows_origin(b"null"));
        assert!(!p.allows_origin(b"https://app.example.com.evil"));
        let star = BrowserPolicy {
            cors_origins: &["*"],
            ..LOOPBACK
        };
        assert!(star.allows_origin(b"https://anything.example"));
        assert!(
            !star.allows_origin(b"null"),
            "null needs to be listed by name"
        );
    }

    #[test]
    fn host_names_on_loopback() {
        let p = LOOPBACK;
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "localhost",
            "[::1]:8000",
            "LocalHost.:1",
        ] {
            assert!(p.allows_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "evil.example",
            "127.0.0.1.nip.io:8000",
            "",
            "localhost:notaport",
            "a/b",
            "[::1",
        ] {
            assert!(!p.allows_host(bad.as_bytes()), "{bad}");
        }
        let listed = BrowserPolicy {
            allowed_hosts: &["my-box.lan", "proxy.example:443"],
            ..LOOPBACK
        };
        assert!(listed.allows_host(b"my-box.lan:8000"));
        assert!(listed.allows_host(b"proxy.example:443"));
        assert!(!listed.allows_host(b"proxy.example:444"));
        let open = BrowserPolicy {
            check_host: false,
            ..LOOPBACK
        };
        assert!(open.allows_host(b"anything.example"));
        let named = BrowserPolicy {
            bound: "::1",
            ..LOOPBACK
        };
        assert!(named.allows_host(b"[::1]:8000"));
        assert!(is_loopback_bind("127.0.0.1") && is_loopback_bind("[::1]"));
        assert!(is_loopback_bind("localhost") && !is_loopback_bind("0.0.0.0"));
        assert!(!is_loopback_bind("192.168.1.2") && !is_loopback_bind("::"));
    }

    #[test]
    fn check_combines_both() {
        let p = LOOPBACK;
        assert_eq!(p.check(None, None), Ok(()));
        assert_eq!(
            p.check(Some(b"http://localhost:3000"), Some(b"127.0.0.1:8000")),
            Ok(())
        );
        assert_eq!(
            p.check(Some(b"https://evil.example"), Some(b"127.0.0.1:8000")),
            Err(Refusal::Origin)
        );
        assert_eq!(
            p.check(
                Some(b"http://rebind.example:8000"),
                Some(b"rebind.example:8000")
            ),
            Err(Refusal::Host)
        );
    }
}
