//! The SSRF guard: which URLs, host names and addresses a search may connect to.
//!
//! Every connection a search makes resolves its host through [`Guard::resolve`], which hands
//! the HTTP client only addresses it has checked, so the client connects to exactly what was
//! vetted (no second lookup a rebinding DNS server could answer differently). Refused: schemes
//! other than http and https, `localhost` and `*.localhost`, and every address that is not
//! public unicast (loopback, private, link-local, CGNAT, multicast, broadcast, documentation,
//! benchmarking, reserved, unspecified; IPv4 and IPv6, with IPv4 inside IPv6 checked as IPv4).
//! IPv4 spellings such as `2130706433`, `0x7f.1` or `0177.0.0.1` are normalized by the URL
//! parser before the check. The operator's allowlist (`TRILLIM_SEARCH_ALLOW_HOSTS`) exempts
//! exactly the literal hosts it names, never a name that merely resolves to one of them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use url::{Host, Url};

/// Why a URL or address may not be connected to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not http or https.
    #[error("only http and https URLs are fetched, not '{0}'")]
    Scheme(String),
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// `localhost` or a name under it.
    #[error("'{0}' names this machine")]
    LocalName(String),
    /// A literal or resolved address that is not public.
    #[error("'{host}' is {class} address {addr}")]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The offending address.
        addr: IpAddr,
        /// What kind of address it is.
        class: &'static str,
    },
    /// The name did not resolve.
    #[error("'{0}' could not be resolved: {1}")]
    Resolve(String, String),
    /// The lookup did not finish before the deadline.
    #[error("looking up '{0}' took too long")]
    ResolveTimeout(String),
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, r)
    }
}

/// The guard with the operator's allowlist.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow_names: Vec<String>,
    allow_ips: Vec<IpAddr>,
}

/// What kind of non-public address `ip` is, or `None` for public unicast.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private",
        (100, 64..=127, _) => "a shared (CGNAT)",
        (127, _, _) => "a loopback",
        (169, 254, _) => "a link-local",
        (192, 0, 0) | (192, 88, 99) => "a reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation",
        (198, 18..=19, _) => "a benchmarking",
        (224..=239, _, _) => "a multicast",
        (240..=255, _, _) => "a reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified");
    }
    if ip.is_loopback() {
        return Some("a loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
    // carry an IPv4 address that decides.
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return classify_v4(embedded);
    }
    if s[..6] == [0; 6] {
        return Some(classify_v4(embedded).unwrap_or("a reserved"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded);
    }
    // 6to4 (2002:a.b.c.d::/48): the relay would reach the embedded IPv4 address.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4);
    }
    Some(match s[0] {
        0xff00..=0xffff => "a multicast",
        0xfe80..=0xfebf => "a link-local",
        0xfec0..=0xfeff | 0xfc00..=0xfdff => "a private",
        0x2001 if s[1] == 0x0db8 => "a documentation",
        0x2001 if s[1] < 0x0200 => "a reserved",
        0x3fff if s[1] < 0x1000 => "a documentation",
        0x2000..=0x3fff => return None,
        _ => "a reserved",
    })
}

/// Normalizes a host as written in a URL or the allowlist: lower case, brackets and a
/// trailing dot removed.
fn normalize(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Guard {
    /// A guard exempting the comma-separated hosts in `allow` (host names or IP addresses).
    pub fn new(allow: &str) -> Guard {
        let mut g = Guard::default();
        for h in allow.split(',').map(normalize).filter(|h| !h.is_empty()) {
            match h.parse::<IpAddr>() {
                Ok(ip) => g.allow_ips.push(ip),
                Err(_) => g.allow_names.push(h),
            }
        }
        g
    }

    /// The guard configured by `TRILLIM_SEARCH_ALLOW_HOSTS`.
    pub fn from_env() -> Guard {
        Guard::new(&std::env::var("TRILLIM_SEARCH_ALLOW_HOSTS").unwrap_or_default())
    }

    fn allowed(&self, host: &Host<&str>) -> bool {
        match host {
            Host::Domain(d) => self.allow_names.iter().any(|a| *a == normalize(d)),
            Host::Ipv4(ip) => self.allow_ips.contains(&IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.allow_ips.contains(&IpAddr::V6(*ip)),
        }
    }

    /// Checks what can be checked without a lookup: the scheme, local names and literal
    /// addresses.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Refused::Scheme(url.scheme().to_string()));
        }
        let host = url.host().ok_or(Refused::NoHost)?;
        self.check_host(&host).map(|_| ())
    }

    /// `Some(ip)` for an allowed literal address, `None` for an allowed name still to be
    /// resolved.
    fn check_host(&self, host: &Host<&str>) -> Result<Option<IpAddr>, Refused> {
        let ip = match host {
            Host::Domain(d) => {
                let name = normalize(d);
                if self.allowed(host) {
                    return Ok(None);
                }
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(Refused::LocalName(name));
                }
                // A name the URL parser left alone but the system resolver would read as
                // an address (`0x7f.1` outside a URL) is resolved and checked below.
                return Ok(None);
            }
            Host::Ipv4(ip) => IpAddr::V4(*ip),
            Host::Ipv6(ip) => IpAddr::V6(*ip),
        };
        if !self.allowed(host) {
            if let Some(class) = classify(ip) {
                return Err(Refused::Address {
                    host: host.to_string(),
                    addr: ip,
                    class,
                });
            }
        }
        Ok(Some(ip))
    }

    /// Resolves `netloc` (`host:port`, IPv6 hosts in brackets) to addresses that may be
    /// connected to, refusing the whole name if any address it resolves to is not public.
    /// The lookup gives up at `deadline`.
    pub fn resolve(&self, netloc: &str, deadline: Instant) -> Result<Vec<SocketAddr>, Refused> {
        let (host, port) = netloc
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| Refused::Resolve(netloc.to_string(), "no port".into()))?;
        let parsed = Host::parse(host).map_err(|e| Refused::Resolve(host.into(), e.to_string()))?;
        let host_ref = match &parsed {
            Host::Domain(d) => Host::Domain(d.as_str()),
            Host::Ipv4(ip) => Host::Ipv4(*ip),
            Host::Ipv6(ip) => Host::Ipv6(*ip),
        };
        if let Some(ip) = self.check_host(&host_ref)? {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = normalize(host);
        let addrs = lookup(&name, port, deadline)?;
        if addrs.is_empty() {
            return Err(Refused::Resolve(name, "no addresses".into()));
        }
        if !self.allowed(&host_ref) {
            for a in &addrs {
                if let Some(class) = classify(a.ip()) {
                    return Err(Refused::Address {
                        host: name,
                        addr: a.ip(),
                        class,
                    });
                }
            }
        }
        Ok(addrs)
    }
}

/// A system lookup that gives up at `deadline` (the lookup itself cannot be interrupted, so
/// it finishes on a thread of its own).
fn lookup(name: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, Refused> {
    let (tx, rx) = mpsc::channel();
    let n = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("trillim-dns".into())
        .spawn(move || {
            let r = (n.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<_>>());
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(Refused::Resolve(name.into(), e.to_string()));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left.max(Duration::from_millis(1))) {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(Refused::Resolve(name.into(), e.to_string())),
        Err(_) => Err(Refused::ResolveTimeout(name.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn url_refused(g: &Guard, u: &str) -> bool {
        match Url::parse(u) {
            Ok(url) => {
                if g.check_url(&url).is_err() {
                    return true;
                }
                let host = url.host_str().unwrap();
                let port = url.port_or_known_default().unwrap();
                g.resolve(&format!("{host}:{port}"), far()).is_err()
            }
            Err(_) => true,
        }
    }

    #[test]
    fn every_non_public_address_class_is_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "3fff::1",
            "4000::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(classify(addr).is_some(), "{ip} should be refused");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(classify(addr), None, "{ip} is public");
        }
    }

    #[test]
    fn urls_to_this_machine_are_refused_in_every_spelling() {
        let g = Guard::default();
        for u in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost:8000/v1/models/load",
            "http://127.0.0.1:8000/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:a9fe:a9fe]/latest/meta-data/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1%25eth0]/",
            "https://10.0.0.1/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
        ] {
            assert!(url_refused(&g, u), "{u} should be refused");
        }
        // Literal public addresses pass without any lookup.
        assert!(!url_refused(&g, "http://93.184.216.34/"));
        assert!(!url_refused(&g, "https://[2606:4700:4700::1111]/"));
    }

    #[test]
    fn names_are_refused_by_what_they_resolve_to() {
        // `localhost` is refused by name; a name the system resolves to loopback is refused
        // by address, and the refusal names it.
        let g = Guard::default();
        match g.resolve("localhost:80", far()) {
            Err(Refused::LocalName(n)) => assert_eq!(n, "localhost"),
            other => panic!("{other:?}"),
        }
        // Names the system maps to loopback (`/etc/hosts`: `ip6-localhost`, the host's own
        // name) are refused for what they resolve to.
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for line in hosts.lines().map(|l| l.split('#').next().unwrap_or("")) {
            let mut f = line.split_whitespace();
            let Some(ip) = f.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if !ip.is_loopback() {
                continue;
            }
            for name in f.filter(|n| !n.ends_with("localhost")) {
                match g.resolve(&format!("{name}:80"), far()) {
                    Err(Refused::Address { .. }) | Err(Refused::Resolve(..)) => {}
                    other => panic!("{name} resolved to loopback yet passed: {other:?}"),
                }
            }
        }
        // `0x7f.1` is an address to the system resolver but a name to nobody else.
        let r = g.resolve("0x7f.1:80", far());
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn the_allowlist_exempts_exactly_the_hosts_it_names() {
        let g = Guard::new(" 127.0.0.1, [::1] ,Example.Test.");
        assert_eq!(
            g.resolve("127.0.0.1:8080", far()).unwrap(),
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
        assert!(g.resolve("[::1]:80", far()).is_ok());
        assert!(g
            .check_url(&Url::parse("http://127.0.0.1:9/").unwrap())
            .is_ok());
        // The URL parser reads other spellings of an allowed address as that address.
        assert!(g
            .check_url(&Url::parse("http://2130706433/").unwrap())
            .is_ok());
        // Other loopback addresses and names that resolve to an allowed one stay refused.
        assert!(g.resolve("127.0.0.2:80", far()).is_err());
        assert!(g.resolve("localhost:80", far()).is_err());
        assert!(g.resolve("[::ffff:127.0.0.1]:80", far()).is_err());
        assert!(g
            .check_url(&Url::parse("http://example.test/").unwrap())
            .is_ok());
        // Not a scheme exemption.
        assert!(g
            .check_url(&Url::parse("ftp://127.0.0.1/").unwrap())
            .is_err());
    }
}
