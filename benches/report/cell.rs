//! Table cells: how numbers are written in BENCHMARKS.md, and a table row.

use std::fmt::Write as _;

/// One row of a table: its cells, left to right.
pub(crate) struct Row(pub(crate) Vec<String>);

/// Writes a Markdown table: the header, then the rows.
pub(crate) fn table(out: &mut String, header: &[&str], rows: &[Row]) -> std::fmt::Result {
    writeln!(out, "| {} |", header.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(header.len()))?;
    for row in rows {
        writeln!(out, "| {} |", row.0.join(" | "))?;
    }
    Ok(())
}

/// Operations per second, digits grouped: `12,345 /s`.
pub(crate) fn rate(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{} /s", group_digits(v)))
}

/// 10^9 bytes per second.
pub(crate) fn gb(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2} GB/s"))
}

/// A duration given in nanoseconds, in the unit that suits it.
pub(crate) fn time(ns: Option<f64>) -> String {
    match ns {
        None => "n/a".into(),
        Some(ns) if ns < 1e3 => format!("{ns:.0} ns"),
        Some(ns) if ns < 1e6 => format!("{:.1} µs", ns / 1e3),
        Some(ns) => format!("{:.2} ms", ns / 1e6),
    }
}

/// Milliseconds with three decimals.
pub(crate) fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3} ms"))
}

/// Milliseconds with three significant digits or so (`0.442`, `6.85`,
/// `42.4`, `197`), for latencies in the load generator tables.
pub(crate) fn short_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `a` as a percentage of `b`.
pub(crate) fn percent(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "n/a".into(),
    }
}

/// `a` as a multiple of `b`.
pub(crate) fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

/// Rounded to a whole number, thousands separated by commas.
pub(crate) fn group_digits(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.as_str()),
    };
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target's status: `what: met`, `what: **missed**` or `what: n/a`.
pub(crate) fn met(ok: Option<bool>, what: &str) -> String {
    match ok {
        Some(true) => format!("{what}: met"),
        Some(false) => format!("{what}: **missed**"),
        None => format!("{what}: n/a"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0.4), "0");
        assert_eq!(group_digits(999.0), "999");
        assert_eq!(group_digits(1000.0), "1,000");
        assert_eq!(group_digits(50_285.6), "50,286");
        assert_eq!(group_digits(1_234_567.0), "1,234,567");
        assert_eq!(group_digits(-1234.0), "-1,234");
    }

    #[test]
    fn ratios_need_a_positive_bound() {
        assert_eq!(percent(Some(37.5), Some(50.0)), "75%");
        assert_eq!(percent(Some(1.0), Some(0.0)), "n/a");
        assert_eq!(percent(None, Some(1.0)), "n/a");
        assert_eq!(times(Some(3.0), Some(2.0)), "1.50x");
    }

    #[test]
    fn latencies_keep_three_digits() {
        assert_eq!(short_ms(0.4381), "0.44");
        assert_eq!(short_ms(6.853), "6.85");
        assert_eq!(short_ms(42.437), "42.4");
        assert_eq!(short_ms(197.486), "197");
    }

    #[test]
    fn tables_have_one_separator_per_column() {
        let mut out = String::new();
        table(&mut out, &["a", "b"], &[Row(vec!["1".into(), "2".into()])]).unwrap();
        assert_eq!(out, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
