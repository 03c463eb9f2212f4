//! Main text from an HTML page: the article a reader would see, without menus, footers,
//! scripts or comment sections. dom_smoothie (a port of Mozilla's Readability, the reader view
//! of Firefox) picks the article; pages it finds no article in fall back to the visible text
//! of the body.

use dom_query::Document;
use dom_smoothie::{Config, Readability, TextMode};

pub use super::text::collapse;

/// Elements parsed at most; a page with more falls back to its visible text.
const MAX_ELEMENTS: usize = 50_000;

/// The page's main text as paragraphs separated by blank lines (whitespace inside a
/// paragraph collapsed), or an empty string when it has none.
pub fn main_text(html: &str, url: Option<&str>) -> String {
    let cfg = Config {
        text_mode: TextMode::Formatted,
        max_elements_to_parse: MAX_ELEMENTS,
        ..Config::default()
    };
    let article = Readability::new(html, url.filter(|u| u.starts_with("http")), Some(cfg))
        .ok()
        .and_then(|mut r| r.parse().ok());
    let text = article.map(|a| tidy(&a.text_content)).unwrap_or_default();
    if !text.is_empty() {
        return text;
    }
    visible_text(html)
}

/// The text of the body without scripts, styles, navigation, headers, footers and forms.
pub fn visible_text(html: &str) -> String {
    let doc = Document::from(html);
    doc.select("script, style, noscript, template, nav, header, footer, aside, form, svg, iframe")
        .remove();
    let mut out = String::new();
    let blocks = doc.select(
        "body h1, body h2, body h3, body h4, body p, body li, body pre, body blockquote, body td",
    );
    if blocks.length() > 0 {
        for b in blocks.iter() {
            // Nested blocks (a `p` inside an `li`) are counted once, by their innermost.
            if b.select("p, li, pre, blockquote, td").length() > 0 {
                continue;
            }
            push_paragraph(&mut out, &b.text());
        }
    }
    if out.is_empty() {
        let body = doc.select("body");
        let text = if body.length() > 0 {
            body.text()
        } else {
            doc.root().text()
        };
        for line in text.lines() {
            push_paragraph(&mut out, line);
        }
    }
    out
}

fn push_paragraph(out: &mut String, text: &str) {
    let p = collapse(text);
    if p.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(&p);
}

/// Normalizes extracted text to paragraphs separated by one blank line.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        push_paragraph(&mut out, line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_article_is_kept_and_the_chrome_dropped() {
        let para = "The committee met on Tuesday to discuss the budget for the coming year, \
                    and after a long debate the members agreed on a compromise that raises \
                    spending on schools while holding other departments flat.";
        let html = format!(
            "<html><head><title>News</title><script>var x = 1;</script></head><body>\
             <nav><a href=/>Home</a> <a href=/a>About</a> <a href=/c>Contact</a></nav>\
             <article><h1>Budget agreed</h1><p>{para}</p><p>{para}</p><p>{para}</p></article>\
             <footer>Copyright 2024 Example News. All rights reserved.</footer></body></html>"
        );
        let t = main_text(&html, Some("https://news.example/budget"));
        assert!(t.contains("The committee met on Tuesday"), "{t}");
        assert!(!t.contains("Copyright"), "{t}");
        assert!(!t.contains("var x"), "{t}");
        assert!(t.contains("\n\n"), "paragraphs stay apart: {t}");
    }

    #[test]
    fn short_pages_fall_back_to_visible_text() {
        let t = main_text(
            "<html><body><script>evil()</script><p>Short   answer:\n 42.</p></body></html>",
            None,
        );
        assert_eq!(t, "Short answer: 42.");
        assert_eq!(main_text("", None), "");
        assert_eq!(main_text("just text, no tags", None), "just text, no tags");
    }
}
