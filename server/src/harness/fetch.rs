//! Fetching pages for a search: GET with a deadline and a byte cap, redirects followed by hand
//! with the SSRF guard applied at every hop, gzip, and the page's charset.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::guard::{Guard, Refused};

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The guard refused the URL or one of its redirects.
    #[error("refused: {0}")]
    Refused(#[from] Refused),
    /// The URL does not parse.
    #[error("'{0}' is not a URL")]
    BadUrl(String),
    /// A connection, TLS or read failure, or the deadline passed.
    #[error("{0}")]
    Transport(String),
    /// The server answered an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// More than [`MAX_REDIRECTS`] redirects, or one without a usable `Location`.
    #[error("{0}")]
    Redirect(String),
}

/// A fetched page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Where the page ended up after redirects.
    pub url: Url,
    /// `Content-Type` without parameters, lower case (empty when missing).
    pub content_type: String,
    /// The body decoded to text (cut at the byte cap).
    pub text: String,
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Time for the whole fetch, redirects and body included.
    pub timeout: Duration,
    /// Body bytes read at most (after decompression).
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> FetchLimits {
        FetchLimits {
            timeout: Duration::from_secs(5),
            max_bytes: 200_000,
        }
    }
}

/// An HTTP client whose every connection goes through the guard.
#[derive(Clone, Debug)]
pub struct Client {
    guard: Arc<Guard>,
    agent: ureq::Agent,
    provider_agent: ureq::Agent,
}

/// The user agent sent with page fetches.
pub const USER_AGENT: &str = "Mozilla/5.0 (compatible; trillim)";

impl Client {
    /// A client refusing what `guard` refuses. Proxies from the environment are not used: a
    /// proxy would connect on the client's behalf to addresses the guard never saw.
    pub fn new(guard: Guard) -> Client {
        let guard = Arc::new(guard);
        let g = guard.clone();
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .try_proxy_from_env(false)
            .user_agent(USER_AGENT)
            .max_idle_connections(0)
            .resolver(move |netloc: &str| {
                // ureq applies its own deadline to connecting and reading; the lookup gets
                // the fetch's share of it.
                g.resolve(netloc, Instant::now() + Duration::from_secs(5))
                    .map_err(std::io::Error::from)
            })
            .build();
        let provider_agent = ureq::AgentBuilder::new()
            .redirects(0)
            .try_proxy_from_env(false)
            .user_agent(USER_AGENT)
            .max_idle_connections(0)
            .build();
        Client {
            guard,
            agent,
            provider_agent,
        }
    }

    /// GETs `url`, following redirects by hand, and decodes the body.
    pub fn get_page(&self, url: &str, limits: FetchLimits) -> Result<Page, FetchError> {
        let deadline = Instant::now() + limits.timeout;
        let mut url = Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_string()))?;
        for _ in 0..=MAX_REDIRECTS {
            self.guard.check_url(&url)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FetchError::Transport("the deadline passed".into()));
            }
            let resp = match self
                .agent
                .request_url("GET", &url)
                .timeout(left)
                .set(
                    "Accept",
                    "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
                )
                .call()
            {
                Ok(r) => r,
                Err(ureq::Error::Status(code, _)) => return Err(FetchError::Status(code)),
                Err(ureq::Error::Transport(t)) => return Err(transport(t)),
            };
            let status = resp.status();
            if (300..400).contains(&status) {
                let loc = resp.header("location").ok_or_else(|| {
                    FetchError::Redirect(format!("redirect {status} without a Location"))
                })?;
                url = url
                    .join(loc)
                    .map_err(|_| FetchError::Redirect(format!("bad redirect target '{loc}'")))?;
                continue;
            }
            return read_page(resp, url, limits.max_bytes);
        }
        Err(FetchError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// The agent for search providers' endpoints. They are the operator's configuration
    /// (`TRILLIM_DDG_URL`, `TRILLIM_BRAVE_URL`, `TRILLIM_SEARXNG_URL`, possibly a SearXNG on
    /// this machine), so the guard does not apply to them; redirects are not followed, so a
    /// provider cannot send the client anywhere else.
    pub fn provider_agent(&self) -> &ureq::Agent {
        &self.provider_agent
    }
}

/// Turns a ureq transport error into the guard's refusal when that was the cause.
pub fn transport(t: ureq::Transport) -> FetchError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&t);
    while let Some(e) = src {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return FetchError::Refused(r.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                return FetchError::Refused(r.clone());
            }
        }
        src = e.source();
    }
    FetchError::Transport(t.to_string())
}

/// Reads at most `max` body bytes (ureq undoes gzip) and decodes them.
pub fn read_page(resp: ureq::Response, url: Url, max: usize) -> Result<Page, FetchError> {
    let ctype = resp.header("content-type").unwrap_or("").to_string();
    let mut body = Vec::new();
    resp.into_reader()
        .take(max as u64)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Transport(format!("reading the body failed: {e}")))?;
    body.truncate(max);
    let content_type = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = super::text::decode(&body, &ctype);
    Ok(Page {
        url,
        content_type,
        text,
    })
}
