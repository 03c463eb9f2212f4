//! Stop strings over streamed text: text that could still turn out to be the start of a stop
//! string is held back until it is decided.

use trillim_core::generate::scan_stops;

/// Matches stop strings against generated text as it streams.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`. Returns the text that is safe to emit and whether a stop string matched
    /// (then the returned text ends right before it and generation must stop). The decision
    /// is [`scan_stops`], the same as the firmware's.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.held.push_str(piece);
        let stops: Vec<&str> = self.stops.iter().map(String::as_str).collect();
        let scan = scan_stops(self.held.as_bytes(), &stops, false);
        let out = self.held[..scan.emit].to_string();
        if scan.stopped {
            self.held.clear();
        } else {
            self.held.drain(..scan.emit);
        }
        (out, scan.stopped)
    }

    /// Text held back at the end of generation (it did not become a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_matches_and_cuts_at_the_stop() {
        let mut m = StopMatcher::new(&["END".into(), "\n\n".into()]);
        assert_eq!(m.push("Hello E"), ("Hello ".into(), false));
        assert_eq!(m.push("N"), ("".into(), false));
        assert_eq!(m.push("x"), ("ENx".into(), false));
        assert_eq!(m.push("a\n"), ("a".into(), false));
        assert_eq!(m.push("\nrest"), ("".into(), true));
        let mut m = StopMatcher::new(&["é!".into()]);
        assert_eq!(m.push("caf"), ("caf".into(), false));
        assert_eq!(m.push("é"), ("".into(), false));
        assert_eq!(m.flush(), "é");
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("x"), ("x".into(), false));
        let mut m = StopMatcher::new(&["ab".into()]);
        assert_eq!(m.push("xxabyy"), ("xx".into(), true));
    }
}
