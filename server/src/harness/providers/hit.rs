//! What every provider returns.

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Title (whitespace collapsed).
    pub title: String,
    /// The result's URL.
    pub url: String,
    /// The provider's snippet (whitespace collapsed, markup removed).
    pub snippet: String,
}
