//! The Brave Search API: web search JSON (`web.results`), and the LLM-context endpoint's
//! `grounding` shape when the configured URL points there.

use serde_json::Value;

use super::{call, endpoint, Endpoints, Hit, ProviderError};
use crate::harness::extract::collapse;

/// The endpoint used when `TRILLIM_BRAVE_URL` is unset.
pub const DEFAULT_URL: &str = "https://api.search.brave.com/res/v1/web/search";

/// Response bodies read at most.
const MAX_BYTES: usize = 4 << 20;

/// Runs `query` with the key from `SEARCH_API_KEY`.
pub fn search(
    client: &crate::harness::fetch::Client,
    ep: &Endpoints,
    query: &str,
    max: usize,
) -> Result<Vec<Hit>, ProviderError> {
    let Some(key) = &ep.brave_key else {
        return Err(ProviderError::NotConfigured(
            "Brave search needs an API key: set SEARCH_API_KEY".into(),
        ));
    };
    let count = max.clamp(1, 20).to_string();
    let get = |url: &url::Url| {
        let req = client
            .provider_agent()
            .request_url("GET", url)
            .timeout(ep.timeout)
            .query("q", query)
            .query("count", &count)
            .set("Accept", "application/json")
            .set("Accept-Encoding", "gzip")
            .set("X-Subscription-Token", key)
            .set("User-Agent", "Trillim/1.0");
        call(req, MAX_BYTES, "Brave search")
    };
    let (mut status, mut body) = get(&endpoint(&ep.brave, "/res/v1/web/search")?)?;
    let host_only = url::Url::parse(ep.brave.trim()).is_ok_and(|u| u.path() == "/");
    if status == 404 && host_only {
        // A gateway named by its host that serves only the LLM-context endpoint.
        (status, body) = get(&endpoint(&ep.brave, "/res/v1/llm/context")?)?;
    }
    match status {
        200 => {}
        401 | 403 => {
            return Err(ProviderError::Auth(
                "Brave authentication failed. Check SEARCH_API_KEY.".into(),
            ))
        }
        429 => {
            return Err(ProviderError::Unavailable(
                "Brave search is rate-limiting (HTTP 429)".into(),
            ))
        }
        code => {
            let detail: String = collapse(&body).chars().take(200).collect();
            return Err(ProviderError::Unavailable(format!(
                "Brave search API error ({code}). {detail}"
            )));
        }
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| ProviderError::Unavailable(format!("Brave answered invalid JSON: {e}")))?;
    Ok(parse(&v))
}

/// Results of a web search response (`web.results[]`: `title`, `url`, `description`,
/// `extra_snippets`) or an LLM-context response (`grounding.generic[]`, `grounding.poi`,
/// `grounding.map[]`: `url`, `title`, `snippets`). Anything of the wrong type is skipped.
pub fn parse(v: &Value) -> Vec<Hit> {
    let mut hits = Vec::new();
    let text = |v: &Value| {
        v.as_str()
            .map(|s| collapse(&strip_tags(s)))
            .unwrap_or_default()
    };
    if let Some(results) = v.pointer("/web/results").and_then(Value::as_array) {
        for r in results {
            let Some(url) = r.get("url").and_then(Value::as_str) else {
                continue;
            };
            let mut snippet = text(r.get("description").unwrap_or(&Value::Null));
            if let Some(extra) = r.get("extra_snippets").and_then(Value::as_array) {
                for e in extra.iter().map(text).filter(|e| !e.is_empty()) {
                    snippet.push('\n');
                    snippet.push_str(&e);
                }
            }
            let title = text(r.get("title").unwrap_or(&Value::Null));
            hits.push(Hit {
                title: if title.is_empty() {
                    url.to_string()
                } else {
                    title
                },
                url: url.to_string(),
                snippet: snippet.trim().to_string(),
            });
        }
        return hits;
    }
    let Some(g) = v.get("grounding") else {
        return hits;
    };
    let sources = v.get("sources").and_then(Value::as_object);
    let mut items: Vec<&Value> = Vec::new();
    if let Some(a) = g.get("generic").and_then(Value::as_array) {
        items.extend(a);
    }
    if let Some(p) = g.get("poi").filter(|p| p.is_object()) {
        items.push(p);
    }
    if let Some(a) = g.get("map").and_then(Value::as_array) {
        items.extend(a);
    }
    for it in items {
        let Some(url) = it.get("url").and_then(Value::as_str) else {
            continue;
        };
        let mut title = text(it.get("title").unwrap_or(&Value::Null));
        if title.is_empty() {
            title = sources
                .and_then(|s| s.get(url))
                .and_then(|s| s.get("title"))
                .map(text)
                .unwrap_or_default();
        }
        if title.is_empty() {
            title = url.to_string();
        }
        let snippet = it
            .get("snippets")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        hits.push(Hit {
            title,
            url: url.to_string(),
            snippet,
        });
    }
    hits
}

/// `s` without `<…>` tags (Brave marks matches with `<strong>`), entities decoded.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_response_shapes_are_read_and_bad_items_skipped() {
        let web = json!({"type": "search", "query": {"original": "q"}, "web": {"results": [
            {"title": "A <strong>title</strong>", "url": "https://a.example/", "description": "Desc &amp; <strong>more</strong>",
             "extra_snippets": ["x", 5]},
            {"title": "no url"},
            {"url": "https://b.example/", "description": null}
        ]}});
        assert_eq!(
            parse(&web),
            vec![
                Hit {
                    title: "A title".into(),
                    url: "https://a.example/".into(),
                    snippet: "Desc & more\nx".into()
                },
                Hit {
                    title: "https://b.example/".into(),
                    url: "https://b.example/".into(),
                    snippet: "".into()
                },
            ]
        );
        let grounding = json!({"grounding": {"generic": [{"url": "https://c.example/", "snippets": ["s1", "s2"]}],
                                "poi": {"url": "https://p.example/", "title": "Poi"}, "map": "bad"},
                               "sources": {"https://c.example/": {"title": "From sources"}}});
        let h = parse(&grounding);
        assert_eq!(h[0].title, "From sources");
        assert_eq!(h[0].snippet, "s1\ns2");
        assert_eq!(h[1].title, "Poi");
        assert!(parse(&json!({"sources": []})).is_empty());
        assert!(parse(&json!([1, 2])).is_empty());
    }
}
