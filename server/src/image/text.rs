//! Free text in gold images (owner, purpose, model name and version, paths):
//! what may be signed, and how the CLI shows text safely.
//!
//! A signer approves what their terminal shows them. Characters that show
//! nothing, or that change how the text around them shows, let a manifest
//! read one way and mean another: `alice@example.org\u{202E}gro.live` shows
//! as `alice@example.orglive.org`. New images may not contain them
//! ([`check`]); text from images stored by an earlier release is shown with
//! them escaped ([`escape`]).
//!
//! ```
//! use hallmark_server::image::text::{check, escape};
//! assert!(check("Alice Martin").is_ok());
//! assert!(check("alice\u{202E}evil").unwrap_err().starts_with("contains U+202E"));
//! assert_eq!(escape("alice\u{202E}evil"), "alice\\u{202e}evil");
//! ```

use std::borrow::Cow;

/// Why a character is refused in signed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hidden {
    /// A C0 or C1 control character (newline, escape, ...).
    Control,
    /// A bidirectional control: it reorders the text around it.
    Bidi,
    /// A line or paragraph separator: it starts a new line.
    Separator,
    /// A character that shows nothing (zero-width space, word joiner,
    /// byte order mark, tag characters, ...).
    Invisible,
}

impl Hidden {
    /// What the character is, for a message.
    fn describe(self) -> &'static str {
        match self {
            Hidden::Control => "a control character",
            Hidden::Bidi => {
                "a bidirectional control, which makes the text display in another order than it is signed"
            }
            Hidden::Separator => "a line separator",
            Hidden::Invisible => "an invisible character",
        }
    }
}

/// What `c` hides, if it is refused in signed text.
///
/// The zero-width joiners U+200C and U+200D are allowed: several scripts
/// need them to spell names.
pub fn hidden(c: char) -> Option<Hidden> {
    match c {
        c if c.is_control() => Some(Hidden::Control),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some(Hidden::Bidi),
        '\u{2028}' | '\u{2029}' => Some(Hidden::Separator),
        '\u{00AD}'
        | '\u{180E}'
        | '\u{200B}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}' => Some(Hidden::Invisible),
        _ => None,
    }
}

/// Checks `text` holds no [`hidden`] character; the error names the first
/// one and says what to do.
pub fn check(text: &str) -> Result<(), String> {
    match text.chars().find_map(|c| hidden(c).map(|h| (c, h))) {
        None => Ok(()),
        Some((c, what)) => Err(format!(
            "contains U+{:04X} ({}): remove it",
            u32::from(c),
            what.describe()
        )),
    }
}

/// `text` with every [`hidden`] character written as `\u{hex}`, for a
/// terminal.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| hidden(c).is_some()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c).is_some() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bidi_control_is_refused_by_name() {
        for c in ['\u{061C}', '\u{200E}', '\u{200F}']
            .into_iter()
            .chain('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
        {
            assert_eq!(hidden(c), Some(Hidden::Bidi), "U+{:04X}", u32::from(c));
            let err = check(&format!("a{c}b")).unwrap_err();
            assert!(
                err.starts_with(&format!("contains U+{:04X} (a bidirectional", u32::from(c))),
                "{err}"
            );
        }
    }

    #[test]
    fn controls_separators_and_invisibles_are_refused_and_text_is_not() {
        for (c, what) in [
            ('\n', Hidden::Control),
            ('\u{1B}', Hidden::Control),
            ('\u{85}', Hidden::Control),
            ('\u{2028}', Hidden::Separator),
            ('\u{200B}', Hidden::Invisible),
            ('\u{FEFF}', Hidden::Invisible),
            ('\u{E0041}', Hidden::Invisible),
        ] {
            assert_eq!(hidden(c), Some(what), "U+{:04X}", u32::from(c));
        }
        for fine in [
            "Alice Martin <alice@example.org>",
            "Zoë Łukasiewicz",
            "\u{0645}\u{200C}\u{0646}",
            "👩\u{200D}💻 platform team",
            "רשות המסים",
        ] {
            assert_eq!(check(fine), Ok(()), "{fine}");
            assert_eq!(escape(fine), fine);
        }
    }

    #[test]
    fn escape_shows_each_hidden_character_and_keeps_the_rest() {
        assert_eq!(
            escape("owner\u{202E}evil\u{1B}[2J\u{2066}"),
            "owner\\u{202e}evil\\u{1b}[2J\\u{2066}"
        );
        assert!(matches!(escape("plain"), Cow::Borrowed("plain")));
    }
}
