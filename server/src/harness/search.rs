//! One search: ask the provider, fetch and extract each result page in parallel, and format
//! the results into the message the model is given, within its token budget.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::budget::{format_results, Counter, Entry};
use super::extract::main_text;
use super::fetch::{Client, FetchLimits};
use super::guard::Guard;
use super::providers::{self, Endpoints, Hit, Provider, ProviderError};

/// The text the model is given when a search fails.
pub const UNAVAILABLE: &str = "Search unavailable, please answer from your knowledge.";

/// Why a search produced nothing to give the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The provider failed (down, rate-limited, refused the key, not configured).
    #[error("Search unavailable: {0}")]
    Provider(#[from] ProviderError),
    /// The provider found nothing.
    #[error("No search results found.")]
    NoResults,
    /// Every result came back empty.
    #[error("No relevant search results found.")]
    NoRelevant,
    /// The query is empty.
    #[error("The search query is empty.")]
    EmptyQuery,
}

/// Settings of a search.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    /// The provider.
    pub provider: Provider,
    /// Results used at most.
    pub max_results: usize,
    /// Tokens the formatted results may take.
    pub token_budget: usize,
    /// Limits of each page fetch.
    pub fetch: FetchLimits,
    /// Whether result pages are fetched (otherwise the snippets are used).
    pub fetch_pages: bool,
}

impl SearchSettings {
    /// The defaults for `provider`: 3 results, 1024 tokens (at most a quarter of `ctx`),
    /// pages fetched within 5 s and 200,000 bytes.
    pub fn new(provider: Provider, ctx: usize) -> SearchSettings {
        SearchSettings {
            provider,
            max_results: 3,
            token_budget: 1024.min(ctx / 4).max(16),
            fetch: FetchLimits::default(),
            fetch_pages: true,
        }
    }
}

/// What happened to one result.
#[derive(Debug, Clone)]
pub struct Used {
    /// The provider's result.
    pub hit: Hit,
    /// The extracted page text (`None`: not fetched or nothing extracted; the snippet is used).
    pub page_text: Option<String>,
    /// Why the page was not used, when it was not.
    pub fetch_error: Option<String>,
}

/// A finished search.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The query as run (whitespace collapsed).
    pub query: String,
    /// The message the model is given.
    pub content: String,
    /// Its tokens.
    pub tokens: usize,
    /// Each result and what was made of it.
    pub results: Vec<Used>,
    /// Time for the provider.
    pub provider_time: Duration,
    /// Time for fetching and extracting the pages.
    pub fetch_time: Duration,
    /// Time for formatting.
    pub format_time: Duration,
}

impl Outcome {
    /// The outcome as JSON (for `trillim search --json`).
    pub fn to_json(&self, provider: Provider) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|u| {
                json!({"title": u.hit.title, "url": u.hit.url, "snippet": u.hit.snippet,
                       "fetched": u.page_text.is_some(),
                       "page_chars": u.page_text.as_ref().map(|t| t.chars().count()),
                       "page_text": u.page_text,
                       "fetch_error": u.fetch_error})
            })
            .collect();
        json!({"query": self.query, "provider": provider.name(), "content": self.content,
               "tokens": self.tokens, "results": results,
               "timings_ms": {"provider": ms(self.provider_time), "fetch_extract": ms(self.fetch_time),
                              "format": ms(self.format_time)}})
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs one search (blocking: call it off the async threads and the engine thread).
pub fn run(
    settings: &SearchSettings,
    query: &str,
    count: Counter<'_>,
) -> Result<Outcome, SearchError> {
    let query = super::extract::collapse(query);
    if query.is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    let client = Client::new(Guard::from_env());
    let ep = Endpoints::from_env();
    let t0 = Instant::now();
    let hits = providers::search(
        settings.provider,
        &client,
        &ep,
        &query,
        settings.max_results,
    )?;
    let provider_time = t0.elapsed();
    if hits.is_empty() {
        return Err(SearchError::NoResults);
    }
    let t1 = Instant::now();
    let results = if settings.fetch_pages {
        fetch_all(&client, &hits, settings.fetch)
    } else {
        hits.into_iter()
            .map(|hit| Used {
                hit,
                page_text: None,
                fetch_error: None,
            })
            .collect()
    };
    let fetch_time = t1.elapsed();
    let t2 = Instant::now();
    let entries: Vec<Entry> = results
        .iter()
        .map(|u| Entry {
            title: if u.hit.title.is_empty() {
                u.hit.url.clone()
            } else {
                u.hit.title.clone()
            },
            body: u.page_text.clone().unwrap_or_else(|| u.hit.snippet.clone()),
        })
        .collect();
    let content = format_results(&entries, &query, settings.token_budget, count);
    if content.trim().is_empty() {
        return Err(SearchError::NoRelevant);
    }
    let tokens = count(&content);
    Ok(Outcome {
        query,
        content,
        tokens,
        results,
        provider_time,
        fetch_time,
        format_time: t2.elapsed(),
    })
}

/// Fetches and extracts every result's page at once, each within its own limits.
fn fetch_all(client: &Client, hits: &[Hit], limits: FetchLimits) -> Vec<Used> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hits
            .iter()
            .map(|hit| {
                let c = client.clone();
                s.spawn(move || page_text(&c, &hit.url, limits))
            })
            .collect();
        hits.iter()
            .zip(handles)
            .map(|(hit, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("extraction failed".to_string()));
                match r {
                    Ok(t) if !t.is_empty() => Used {
                        hit: hit.clone(),
                        page_text: Some(t),
                        fetch_error: None,
                    },
                    Ok(_) => Used {
                        hit: hit.clone(),
                        page_text: None,
                        fetch_error: Some("no text on the page".into()),
                    },
                    Err(e) => {
                        tracing::debug!(url = %hit.url, error = %e, "result page not used");
                        Used {
                            hit: hit.clone(),
                            page_text: None,
                            fetch_error: Some(e),
                        }
                    }
                }
            })
            .collect()
    })
}

/// A page's main text: HTML is extracted, plain text kept, other types skipped.
fn page_text(client: &Client, url: &str, limits: FetchLimits) -> Result<String, String> {
    let page = client.get_page(url, limits).map_err(|e| e.to_string())?;
    let ct = page.content_type.as_str();
    let html = ct.is_empty() || ct.contains("html") || ct.contains("xml");
    if html {
        Ok(main_text(&page.text, Some(page.url.as_str())))
    } else if ct.starts_with("text/") {
        Ok(super::budget::paragraphs(&page.text).join("\n\n"))
    } else {
        Err(format!("not a text page ({ct})"))
    }
}
