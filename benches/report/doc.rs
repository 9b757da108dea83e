//! The generated regions of BENCHMARKS.md: a region is everything between
//! a line `<!-- NAME:begin ... -->` (the rest of the line is a note for the
//! reader and is kept) and `<!-- NAME:end -->`; the rest of the file is
//! written by hand and never touched.

use std::path::Path;

use anyhow::{Context, bail};

/// `text` with region `name` holding `content` instead of what it held.
pub(crate) fn replace(text: &str, name: &str, content: &str) -> anyhow::Result<String> {
    let begin_tag = format!("<!-- {name}:begin");
    let end_tag = format!("<!-- {name}:end -->");
    let Some(begin) = text.find(&begin_tag) else {
        bail!("no `{begin_tag} ... -->` line");
    };
    if text[begin + begin_tag.len()..].contains(&begin_tag) {
        bail!("more than one `{begin_tag}` line");
    }
    let begin_line_end = text[begin..]
        .find('\n')
        .map(|i| begin + i)
        .with_context(|| format!("nothing after `{begin_tag}`"))?;
    if !text[begin..begin_line_end].trim_end().ends_with("-->") {
        bail!("the `{begin_tag}` line does not end with `-->`");
    }
    let Some(end) = text[begin_line_end..]
        .find(&end_tag)
        .map(|i| begin_line_end + i)
    else {
        bail!("no `{end_tag}` after `{begin_tag}`");
    };
    Ok(format!(
        "{}\n{content}{}",
        &text[..begin_line_end],
        &text[end..]
    ))
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename, so a failed write leaves the old file whole.
pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let temp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    std::fs::write(&temp, text).with_context(|| format!("write {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("rename {} to {}", temp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Title\n\nby hand\n\n<!-- a:begin (regenerated) -->\nold a\n<!-- a:end -->\n\nmore by hand\n<!-- b:begin -->\nold b\n<!-- b:end -->\ntail\n";

    #[test]
    fn only_the_region_changes() {
        let out = replace(DOC, "a", "new a\n\n").unwrap();
        assert_eq!(
            out,
            "# Title\n\nby hand\n\n<!-- a:begin (regenerated) -->\nnew a\n\n<!-- a:end -->\n\nmore by hand\n<!-- b:begin -->\nold b\n<!-- b:end -->\ntail\n"
        );
        let out = replace(&out, "b", "new b\n").unwrap();
        assert!(out.ends_with("<!-- b:begin -->\nnew b\n<!-- b:end -->\ntail\n"));
        // Replacing again with the same content is a no-op.
        assert_eq!(replace(&out, "b", "new b\n").unwrap(), out);
    }

    #[test]
    fn broken_markers_are_refused() {
        let error = replace(DOC, "c", "x").unwrap_err().to_string();
        assert_eq!(error, "no `<!-- c:begin ... -->` line");
        let error = replace("<!-- a:begin -->\nx\n", "a", "y")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "no `<!-- a:end -->` after `<!-- a:begin`");
        let error = replace("<!-- a:end -->\n<!-- a:begin -->\n", "a", "y")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "no `<!-- a:end -->` after `<!-- a:begin`");
        let twice = format!("{DOC}<!-- a:begin -->\n<!-- a:end -->\n");
        let error = replace(&twice, "a", "y").unwrap_err().to_string();
        assert_eq!(error, "more than one `<!-- a:begin` line");
    }

    #[test]
    fn a_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        std::fs::write(&path, "old").unwrap();
        write(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
