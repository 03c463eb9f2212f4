//! Harnesses: how a chat request becomes model turns. `default` is one pass. `search` lets a
//! model fine-tuned to write `<search>query</search>` look things up: the server runs the
//! query, gives the model the results as a message and lets it continue, at most
//! [`MAX_SEARCHES`] times; the last turn streams. `/v1/completions` never uses a harness.
//!
//! The harness is chosen per model load (`trillim serve --harness`, `POST /v1/models/load`
//! with `harness` and `search_provider`). Progress markers (`[Searching: …]`,
//! `[Synthesizing...]`, `[Search unavailable]`) are opt-in, because plain OpenAI clients would
//! show them as answer text: per request with `"search_markers": true`, or as the default of a
//! load (`search_markers` on `/v1/models/load`, `trillim serve --search-markers`) that a
//! request's own value overrides.
//!
//! Network work (providers, page fetches) runs on blocking threads, never on the async
//! threads or the engine's thread, and every step of it has a deadline.

pub mod budget;
pub mod cli;
pub mod extract;
pub mod fetch;
pub mod guard;
pub mod providers;
pub mod run;
pub mod search;
pub mod text;

pub use providers::Provider;

/// Model turns at most in one search conversation step: two searches, then the answer.
pub const MAX_SEARCHES: usize = 2;

/// The harness chat requests go through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Harness {
    /// One model pass.
    #[default]
    Default,
    /// The search loop with this provider.
    Search(Provider),
}

impl Harness {
    /// The harness's name.
    pub fn name(self) -> &'static str {
        match self {
            Harness::Default => "default",
            Harness::Search(_) => "search",
        }
    }

    /// The provider a search harness uses (also remembered while the default harness runs).
    pub fn provider(self) -> Option<Provider> {
        match self {
            Harness::Default => None,
            Harness::Search(p) => Some(p),
        }
    }

    /// The harness a load asks for: each of `harness` and `provider` left out keeps the
    /// current one (the provider defaults to `ddgs`). Errors name the field at fault.
    pub fn choose(
        harness: Option<&str>,
        provider: Option<&str>,
        current: Harness,
    ) -> Result<Harness, (&'static str, String)> {
        let search = match harness.map(|h| h.trim().to_ascii_lowercase()) {
            None => matches!(current, Harness::Search(_)),
            Some(h) if h == "default" => false,
            Some(h) if h == "search" => true,
            Some(h) => {
                return Err((
                    "harness",
                    format!("Unknown harness '{h}'. Available: default, search"),
                ))
            }
        };
        // As before: the provider is checked only when the search harness will use it.
        let provider = match provider {
            Some(p) if search => Some(Provider::parse(p).map_err(|m| ("search_provider", m))?),
            _ => None,
        };
        Ok(if search {
            Harness::Search(provider.or(current.provider()).unwrap_or(Provider::Ddgs))
        } else {
            Harness::Default
        })
    }
}

/// The harness in use with the settings its load chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarnessConfig {
    /// The harness.
    pub harness: Harness,
    /// Whether streams show progress markers when a request does not say.
    pub markers: bool,
}

/// The first `<search>…</search>` query in a reply (across lines, trimmed, whitespace
/// collapsed).
pub fn find_query(reply: &str) -> Option<String> {
    let start = reply.find("<search>")? + "<search>".len();
    let end = reply[start..].find("</search>")? + start;
    Some(extract::collapse(&reply[start..end]))
}

/// The message that gives the model the results (a user turn, which every chat template
/// renders; a template's own search role would also re-inject its system prompt).
pub fn results_message(content: &str) -> crate::template::Message {
    crate::template::Message {
        role: "user".into(),
        content: format!("Search results:\n{content}"),
        ..Default::default()
    }
}

/// The marker shown when a search starts.
pub fn searching_marker(query: &str) -> String {
    format!("[Searching: {query}]")
}

/// The marker shown when results arrived.
pub const SYNTHESIZING: &str = "[Synthesizing...]";
/// The marker shown when a search failed.
pub const UNAVAILABLE_MARKER: &str = "[Search unavailable]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_found_across_lines() {
        assert_eq!(
            find_query(
                "Let me check.\n<search> capital of\nFrance </search> more <search>x</search>"
            ),
            Some("capital of France".into())
        );
        assert_eq!(find_query("<search>unclosed"), None);
        assert_eq!(find_query("no tag"), None);
        assert_eq!(find_query("<search></search>"), Some(String::new()));
    }

    #[test]
    fn loads_choose_harness_and_provider() {
        let d = Harness::Default;
        assert_eq!(Harness::choose(None, None, d), Ok(d));
        assert_eq!(
            Harness::choose(Some(" Search "), None, d),
            Ok(Harness::Search(Provider::Ddgs))
        );
        assert_eq!(
            Harness::choose(Some("search"), Some("BRAVE"), d),
            Ok(Harness::Search(Provider::Brave))
        );
        let s = Harness::Search(Provider::Brave);
        assert_eq!(Harness::choose(None, None, s), Ok(s));
        assert_eq!(
            Harness::choose(None, Some("searxng"), s),
            Ok(Harness::Search(Provider::Searxng))
        );
        assert_eq!(Harness::choose(Some("default"), None, s), Ok(d));
        assert_eq!(
            Harness::choose(Some("bogus"), None, d).unwrap_err().0,
            "harness"
        );
        assert_eq!(Harness::choose(Some("default"), Some("bing"), s), Ok(d));
        assert_eq!(
            Harness::choose(Some("search"), Some("bing"), d)
                .unwrap_err()
                .0,
            "search_provider"
        );
    }
}
