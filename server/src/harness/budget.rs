//! Token budgets for search results: how much of each result's text the model is given, and
//! which paragraphs, counted with the loaded model's tokenizer.

/// Counts the tokens of a text (the loaded model's tokenizer, no special tokens).
pub type Counter<'a> = &'a (dyn Fn(&str) -> usize + Sync);

/// Words too common to say what a paragraph is about.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
    "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
    "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so",
    "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your", "yours",
];

/// Lower-cased words (runs of letters, digits and `_`) of `s` that are not stop words.
pub fn key_words(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in s
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        let w = w.to_lowercase();
        if !STOP_WORDS.contains(&w.as_str()) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// The longest prefix of `text` within `budget` tokens, cut after the last sentence end
/// (`.`, `!`, `?`) inside it when there is one.
pub fn truncate_exact(text: &str, budget: usize, count: Counter<'_>) -> String {
    if count(text) <= budget {
        return text.to_string();
    }
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    // Largest k with count(text[..bounds[k]]) <= budget.
    let (mut lo, mut hi) = (0usize, bounds.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&text[..bounds[mid]]) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let prefix = &text[..bounds[lo]];
    match prefix.rfind(['.', '!', '?']) {
        Some(i) if i > 0 => prefix[..=i].trim_end().to_string(),
        _ => prefix.trim_end().to_string(),
    }
}

/// Paragraphs of `text`: split on blank lines, or on lines when there is only one; trimmed,
/// empty ones dropped.
pub fn paragraphs(text: &str) -> Vec<&str> {
    let mut ps: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if ps.len() == 1 {
        ps = ps[0]
            .lines()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
    }
    ps
}

/// `text` within `budget` tokens: whole when it fits; otherwise the paragraphs that share
/// the most words with `query`, in their original order, or the best one truncated.
pub fn fit_body(text: &str, query: &str, budget: usize, count: Counter<'_>) -> String {
    if count(text) <= budget {
        return text.trim().to_string();
    }
    let ps = paragraphs(text);
    if ps.len() <= 1 {
        return truncate_exact(ps.first().copied().unwrap_or(""), budget, count);
    }
    let words = key_words(query);
    let score = |p: &str| {
        let have = key_words(p);
        words.iter().filter(|w| have.contains(w)).count()
    };
    let mut order: Vec<(usize, usize)> =
        ps.iter().enumerate().map(|(i, p)| (score(p), i)).collect();
    // Best score first, then earliest.
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = Vec::new();
    let join = |idx: &[usize]| {
        let mut sorted = idx.to_vec();
        sorted.sort_unstable();
        sorted
            .iter()
            .map(|&i| ps[i])
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    for (_, i) in order {
        if count(ps[i]) > budget {
            if chosen.is_empty() {
                return truncate_exact(ps[i], budget, count);
            }
            continue;
        }
        let mut trial = chosen.clone();
        trial.push(i);
        if count(&join(&trial)) <= budget {
            chosen = trial;
        }
    }
    join(&chosen)
}

/// One result ready to be formatted.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Title (or the URL when there is none).
    pub title: String,
    /// Extracted page text, or the provider's snippet.
    pub body: String,
}

/// The search message: results mentioning a year in the query first, `[i] title` and as much
/// of each body as its share of `budget` allows, joined by blank lines, exactly within
/// `budget` tokens.
pub fn format_results(entries: &[Entry], query: &str, budget: usize, count: Counter<'_>) -> String {
    let mut entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.body.trim().is_empty())
        .collect();
    if let Some(year) = year_in(query) {
        // Stable: the provider's order is kept within each group.
        entries.sort_by_key(|e| !(e.title.contains(&year) || e.body.contains(&year)));
    }
    if entries.is_empty() {
        return String::new();
    }
    let per_entry = (budget / entries.len()).max(1);
    let parts: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let head = format!("[{}] {}\n", i + 1, e.title);
            let body_budget = per_entry.saturating_sub(count(&head)).max(1);
            format!("{head}{}", fit_body(&e.body, query, body_budget, count))
        })
        .collect();
    let all = parts.join("\n\n");
    if count(&all) > budget {
        truncate_exact(&all, budget, count)
    } else {
        all
    }
}

/// The first four-digit number standing alone in `query`.
fn year_in(query: &str) -> Option<String> {
    query
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 4)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn exact_truncation_prefers_a_sentence_end() {
        let t = "One two three. Four five six seven. Eight nine";
        assert_eq!(truncate_exact(t, 100, &words), t);
        assert_eq!(truncate_exact(t, 5, &words), "One two three.");
        assert_eq!(
            truncate_exact(t, 7, &words),
            "One two three. Four five six seven."
        );
        assert_eq!(
            truncate_exact("alpha beta gamma delta", 2, &words),
            "alpha beta"
        );
        assert_eq!(truncate_exact("", 2, &words), "");
    }

    #[test]
    fn paragraphs_sharing_query_words_are_kept_in_order() {
        let text = "Cats sleep a lot every day.\n\nThe Eiffel Tower is 330 metres tall.\n\n\
                    Paris hosts the Eiffel Tower since 1889.\n\nBananas are yellow fruit.";
        let out = fit_body(text, "How tall is the Eiffel Tower in Paris?", 14, &words);
        assert_eq!(
            out,
            "The Eiffel Tower is 330 metres tall.\n\nParis hosts the Eiffel Tower since 1889."
        );
        // A best paragraph too long on its own is truncated.
        let long = "Eiffel tower facts one two three four five six seven.\n\nOther text.";
        assert_eq!(
            fit_body(long, "eiffel", 4, &words),
            "Eiffel tower facts one"
        );
        assert_eq!(key_words("The cat AND the Cat's"), vec!["cat", "s"]);
    }

    #[test]
    fn results_share_the_budget_and_years_come_first() {
        let e = |t: &str, b: &str| Entry {
            title: t.into(),
            body: b.into(),
        };
        let entries = [
            e("Old", "Results from 2019 and earlier years of the race."),
            e("New", "The 2024 race was won by a rookie driver."),
            e("Empty", "   "),
        ];
        let out = format_results(&entries, "who won the race in 2024", 1000, &words);
        assert!(out.starts_with("[1] New\nThe 2024 race"), "{out}");
        assert!(out.contains("\n\n[2] Old\n"), "{out}");
        assert!(!out.contains("Empty"));
        let small = format_results(&entries, "race", 10, &words);
        assert!(words(&small) <= 10, "{small}");
        assert!(format_results(&[], "x", 10, &words).is_empty());
    }
}
