//! A SearXNG instance's JSON API (`/search?format=json`), for self-hosters: the instance must
//! have the `json` format enabled in its settings.

use serde_json::Value;

use super::{call, endpoint, Endpoints, Hit, ProviderError};
use crate::harness::extract::collapse;

/// Response bodies read at most.
const MAX_BYTES: usize = 4 << 20;

/// Runs `query` on the instance at `TRILLIM_SEARXNG_URL`.
pub fn search(
    client: &crate::harness::fetch::Client,
    ep: &Endpoints,
    query: &str,
) -> Result<Vec<Hit>, ProviderError> {
    let Some(base) = &ep.searxng else {
        return Err(ProviderError::NotConfigured(
            "SearXNG search needs the instance's address: set TRILLIM_SEARXNG_URL".into(),
        ));
    };
    let url = endpoint(base, "/search")?;
    let req = client
        .provider_agent()
        .request_url("GET", &url)
        .timeout(ep.timeout)
        .query("q", query)
        .query("format", "json")
        .set("Accept", "application/json");
    let (status, body) = call(req, MAX_BYTES, "SearXNG")?;
    if status == 403 {
        return Err(ProviderError::NotConfigured(
            "SearXNG refused the JSON format (HTTP 403): enable `json` under search.formats".into(),
        ));
    }
    if status != 200 {
        return Err(ProviderError::Unavailable(format!(
            "SearXNG search failed (HTTP {status})"
        )));
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| ProviderError::Unavailable(format!("SearXNG answered invalid JSON: {e}")))?;
    Ok(parse(&v))
}

/// `results[]` with `url`, `title` and `content`.
pub fn parse(v: &Value) -> Vec<Hit> {
    let s = |r: &Value, k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .map(collapse)
            .unwrap_or_default()
    };
    v.get("results")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    let url = r.get("url").and_then(Value::as_str)?.to_string();
                    let title = s(r, "title");
                    Some(Hit {
                        title: if title.is_empty() { url.clone() } else { title },
                        snippet: s(r, "content"),
                        url,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_are_read() {
        let v = json!({"query": "q", "results": [{"url": "https://a.example/", "title": " A ", "content": "c  d"}, {"title": "x"}]});
        assert_eq!(
            parse(&v),
            vec![Hit {
                title: "A".into(),
                url: "https://a.example/".into(),
                snippet: "c d".into()
            }]
        );
        assert!(parse(&json!({"results": {}})).is_empty());
    }
}
