//! Search providers: a query in, result links with titles and snippets out.

pub mod brave;
pub mod ddg;
pub mod ddg_html;
pub mod hit;
pub mod searxng;

use std::time::Duration;

use super::fetch::{self, Client, FetchError};

pub use hit::Hit;

/// Which search service answers queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// DuckDuckGo's HTML endpoint (no key).
    Ddgs,
    /// The Brave Search API (`SEARCH_API_KEY`).
    Brave,
    /// A SearXNG instance's JSON API (`TRILLIM_SEARXNG_URL`).
    Searxng,
}

impl Provider {
    /// Every provider's name, as accepted by [`Provider::parse`].
    pub const NAMES: &'static str = "brave, ddgs, searxng";

    /// Parses a provider name (trimmed, any case; `duckduckgo` and `brave_search` too).
    pub fn parse(name: &str) -> Result<Provider, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ddgs" | "duckduckgo" | "ddg" => Ok(Provider::Ddgs),
            "brave" | "brave_search" => Ok(Provider::Brave),
            "searxng" => Ok(Provider::Searxng),
            other => Err(format!(
                "Unknown search provider '{other}'. Available: {}",
                Provider::NAMES
            )),
        }
    }

    /// The provider's name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Ddgs => "ddgs",
            Provider::Brave => "brave",
            Provider::Searxng => "searxng",
        }
    }
}

/// Why a provider gave no results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The service refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// The service is rate-limiting, down, unreachable or answered something unreadable.
    #[error("{0}")]
    Unavailable(String),
    /// The provider is not configured.
    #[error("{0}")]
    NotConfigured(String),
}

/// Where providers live and how they are reached: read from the environment at each search.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `TRILLIM_DDG_URL` (default `https://html.duckduckgo.com/html/`).
    pub ddg: String,
    /// `TRILLIM_BRAVE_URL` (default `https://api.search.brave.com/res/v1/web/search`).
    pub brave: String,
    /// `SEARCH_API_KEY`.
    pub brave_key: Option<String>,
    /// `TRILLIM_SEARXNG_URL`.
    pub searxng: Option<String>,
    /// Time for one provider request.
    pub timeout: Duration,
}

impl Endpoints {
    /// The endpoints the environment configures.
    pub fn from_env() -> Endpoints {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Endpoints {
            ddg: var("TRILLIM_DDG_URL").unwrap_or_else(|| ddg::DEFAULT_URL.into()),
            brave: var("TRILLIM_BRAVE_URL").unwrap_or_else(|| brave::DEFAULT_URL.into()),
            brave_key: var("SEARCH_API_KEY"),
            searxng: var("TRILLIM_SEARXNG_URL"),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Runs `query` on `provider`, returning at most `max` results.
pub fn search(
    provider: Provider,
    client: &Client,
    ep: &Endpoints,
    query: &str,
    max: usize,
) -> Result<Vec<Hit>, ProviderError> {
    let mut hits = match provider {
        Provider::Ddgs => ddg::search(client, ep, query)?,
        Provider::Brave => brave::search(client, ep, query, max)?,
        Provider::Searxng => searxng::search(client, ep, query)?,
    };
    hits.retain(|h| h.url.starts_with("http://") || h.url.starts_with("https://"));
    let mut seen: Vec<String> = Vec::new();
    hits.retain(|h| {
        let new = !seen.contains(&h.url);
        seen.push(h.url.clone());
        new
    });
    hits.truncate(max);
    Ok(hits)
}

/// `base` with `path` appended when `base` names only a host (no path of its own).
pub fn endpoint(base: &str, path: &str) -> Result<url::Url, ProviderError> {
    let mut u = url::Url::parse(base.trim())
        .map_err(|e| ProviderError::NotConfigured(format!("'{base}' is not a URL: {e}")))?;
    if u.path() == "/" || u.path().is_empty() {
        u.set_path(path);
    }
    Ok(u)
}

/// Sends a provider request: the guard applies as to any fetch, redirects are not followed,
/// the body is read up to `max` bytes. Returns the status and the decoded body.
pub fn call(req: ureq::Request, max: usize, what: &str) -> Result<(u16, String), ProviderError> {
    let url = url::Url::parse(req.url()).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            let e = fetch::transport(t);
            return Err(ProviderError::Unavailable(format!(
                "{what} is unreachable: {e}"
            )));
        }
    };
    let status = resp.status();
    let page = fetch::read_page(resp, url, max).map_err(|e: FetchError| {
        ProviderError::Unavailable(format!("{what} answered unreadably: {e}"))
    })?;
    Ok((status, page.text))
}
