//! DuckDuckGo's HTML endpoint: a form POST, results parsed from the page, result links
//! unwrapped from DuckDuckGo's `/l/?uddg=` redirects.

use super::{endpoint, Endpoints, Hit, ProviderError};
use crate::harness::fetch::{Client, USER_AGENT};

/// The endpoint used when `TRILLIM_DDG_URL` is unset.
pub const DEFAULT_URL: &str = "https://html.duckduckgo.com/html/";

/// Result pages read at most.
const MAX_BYTES: usize = 2 << 20;

/// Posts `query` and parses the result page. DuckDuckGo answers 202 when it rate-limits.
pub fn search(client: &Client, ep: &Endpoints, query: &str) -> Result<Vec<Hit>, ProviderError> {
    let url = endpoint(&ep.ddg, "/html/")?;
    let req = client
        .provider_agent()
        .request_url("POST", &url)
        .timeout(ep.timeout)
        .set("User-Agent", USER_AGENT)
        .set("Accept", "text/html")
        .set("Referer", "https://html.duckduckgo.com/");
    let form = format!(
        "q={}&b=&kl=",
        url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
    );
    let req = req.set("Content-Type", "application/x-www-form-urlencoded");
    let url_s = req.url().to_string();
    let resp = match req.send_string(&form) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => {
            return Err(ProviderError::Unavailable(format!(
                "DuckDuckGo search failed (HTTP {code})"
            )))
        }
        Err(ureq::Error::Transport(t)) => {
            let e = crate::harness::fetch::transport(t);
            return Err(ProviderError::Unavailable(format!(
                "DuckDuckGo is unreachable: {e}"
            )));
        }
    };
    let status = resp.status();
    if status == 202 {
        return Err(ProviderError::Unavailable(
            "DuckDuckGo is rate-limiting searches (HTTP 202); try again later".into(),
        ));
    }
    if status != 200 {
        return Err(ProviderError::Unavailable(format!(
            "DuckDuckGo search failed (HTTP {status})"
        )));
    }
    let page = crate::harness::fetch::read_page(
        resp,
        url::Url::parse(&url_s).map_err(|e| ProviderError::Unavailable(e.to_string()))?,
        MAX_BYTES,
    )
    .map_err(|e| ProviderError::Unavailable(format!("DuckDuckGo answered unreadably: {e}")))?;
    Ok(super::ddg_html::parse(&page.text))
}
