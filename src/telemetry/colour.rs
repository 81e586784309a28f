//! Whether text logs are coloured: only on a terminal, and never with `NO_COLOR` set
//! (https://no-color.org), so files and log collectors get no ANSI escapes.

use std::io::IsTerminal;

/// Colours for a log written to stdout (where the fmt layer writes).
pub fn stdout_wants_colour() -> bool {
    wants_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// A terminal, and `NO_COLOR` unset or empty (the convention: any non-empty value).
fn wants_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some("".as_ref())));
        assert!(!wants_colour(true, Some("1".as_ref())));
        assert!(!wants_colour(false, None));
    }
}
