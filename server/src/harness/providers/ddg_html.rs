//! DuckDuckGo's HTML result page: organic results (ads skipped) and their links unwrapped
//! from DuckDuckGo's `/l/?uddg=` redirects. Free of I/O, so the fuzz targets build it alone.

use dom_query::Document;

use crate::harness::providers::hit::Hit;
use crate::harness::text::collapse;

/// The organic results of a DuckDuckGo HTML result page (ads skipped), in page order.
pub fn parse(html: &str) -> Vec<Hit> {
    let doc = Document::from(html);
    let mut hits = Vec::new();
    for r in doc.select("div.result").iter() {
        let class = r.attr("class").map(|c| c.to_string()).unwrap_or_default();
        if class.split_whitespace().any(|c| c == "result--ad") {
            continue;
        }
        let a = r.select("a.result__a");
        if a.length() == 0 {
            continue;
        }
        let Some(href) = a.attr("href") else { continue };
        let Some(url) = unwrap_link(&href) else {
            continue;
        };
        let title = collapse(&a.text());
        let snippet = collapse(&r.select(".result__snippet").text());
        hits.push(Hit {
            title,
            url,
            snippet,
        });
    }
    if hits.is_empty() {
        hits = loose(&doc);
    }
    hits
}

/// Result links outside the usual `div.result` blocks (the lite page's table rows, other
/// layouts): each link paired with the snippet in the same position.
fn loose(doc: &Document) -> Vec<Hit> {
    let snippets: Vec<String> = doc
        .select(".result__snippet, .result-snippet")
        .iter()
        .map(|s| collapse(&s.text()))
        .collect();
    let mut hits = Vec::new();
    for (i, a) in doc.select("a.result__a, a.result-link").iter().enumerate() {
        let Some(url) = a.attr("href").and_then(|h| unwrap_link(&h)) else {
            continue;
        };
        hits.push(Hit {
            title: collapse(&a.text()),
            url,
            snippet: snippets.get(i).cloned().unwrap_or_default(),
        });
    }
    hits
}

/// The target of a result link: DuckDuckGo's redirect (`//duckduckgo.com/l/?uddg=<url>&rut=…`)
/// unwrapped, or the link itself when it is already an absolute http(s) URL.
pub fn unwrap_link(href: &str) -> Option<String> {
    let href = href.trim();
    let absolute = if href.starts_with("//") {
        format!("https:{href}")
    } else if href.starts_with('/') {
        format!("https://duckduckgo.com{href}")
    } else {
        href.to_string()
    };
    let u = url::Url::parse(&absolute).ok()?;
    if let Some((_, target)) = u.query_pairs().find(|(k, _)| k == "uddg") {
        let t = url::Url::parse(&target).ok()?;
        return matches!(t.scheme(), "http" | "https").then(|| t.to_string());
    }
    let host = u.host_str().unwrap_or("");
    if host == "duckduckgo.com" || host.ends_with(".duckduckgo.com") {
        // Internal links (ads' `y.js`, settings) are not results.
        return None;
    }
    matches!(u.scheme(), "http" | "https").then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_parsed_and_links_unwrapped() {
        let html = r#"<html><body><div id="links" class="results">
<div class="result results_links results_links_deep result--ad">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=x.com&u3=1">Ad title</a></h2>
    <a class="result__snippet" href="https://duckduckgo.com/y.js?u3=1">Buy now</a>
  </div></div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title">
      <a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FParis%3Fa%3D1%26b%3D2&amp;rut=abc123">Paris -   <b>Wikipedia</b></a>
    </h2>
    <div class="result__extras"><div class="result__extras__url">
      <a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FParis&amp;rut=abc">en.wikipedia.org/wiki/Paris</a>
    </div></div>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x"><b>Paris</b> is the capital
      and largest city of France.</a>
  </div></div>
<div class="result results_links web-result"><div class="links_main result__body">
  <h2 class="result__title"><a class="result__a" href="https://example.org/direct">Direct</a></h2>
  <a class="result__snippet">Plain link.</a></div></div>
<div class="result"><h2><a class="result__a" href="javascript:alert(1)">Bad</a></h2></div>
<div class="result"><h2>No link</h2></div>
</div></body></html>"#;
        let hits = parse(html);
        assert_eq!(
            hits,
            vec![
                Hit {
                    title: "Paris - Wikipedia".into(),
                    url: "https://en.wikipedia.org/wiki/Paris?a=1&b=2".into(),
                    snippet: "Paris is the capital and largest city of France.".into(),
                },
                Hit {
                    title: "Direct".into(),
                    url: "https://example.org/direct".into(),
                    snippet: "Plain link.".into(),
                },
            ]
        );
        // The lite page: table rows, links and snippets paired in order.
        let lite = r#"<table><tr><td>1.&nbsp;</td><td><a rel="nofollow" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fa.example%2F&amp;rut=1" class='result-link'>A title</a></td></tr>
<tr><td></td><td class='result-snippet'>First   snippet.</td></tr>
<tr><td>2.&nbsp;</td><td><a rel="nofollow" href="https://b.example/x" class='result-link'>B</a></td></tr>
<tr><td></td><td class='result-snippet'>Second.</td></tr></table>"#;
        let hits = parse(lite);
        assert_eq!(hits.len(), 2);
        assert_eq!(
            (hits[0].url.as_str(), hits[0].snippet.as_str()),
            ("https://a.example/", "First snippet.")
        );
        assert_eq!(
            (hits[1].title.as_str(), hits[1].url.as_str()),
            ("B", "https://b.example/x")
        );
        assert!(parse("").is_empty());
        assert!(parse("<div class=result><a class=result__a>").is_empty());
        assert_eq!(unwrap_link("/l/?uddg=ftp%3A%2F%2Fx"), None);
    }
}
