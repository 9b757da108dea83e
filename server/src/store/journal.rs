//! An append-only journal file: one entry per line, `<seq> <bytes>\n`, with
//! strictly increasing sequence numbers.
//!
//! Appends go to an in-memory buffer under a short lock and are not written
//! until [`Journal::sync`], which writes everything buffered so far and
//! `fdatasync`s it: one write and one sync for every entry appended by all
//! callers since the last one (group commit). Reads write the buffer out
//! first (without syncing), so they see every appended entry.
//!
//! The journal knows nothing of what it stores except that an entry has no
//! newline. A sparse index (every [`INDEX_EVERY`]th entry's offset), built by
//! one sequential scan at open and extended by appends, finds an entry with
//! at most [`INDEX_EVERY`] lines read.
//!
//! A write or sync that fails poisons the journal: every later append,
//! sync and read fails, so the caller fails closed. The journal keeps every
//! byte it has not seen synced (written since the last good sync, or not
//! written at all), so [`Journal::recover`] can cut the file back to what is
//! known to be on disk, write those bytes again and sync: after a failed
//! `fsync`, what the page cache holds is unknown, but bytes written again
//! and synced are on disk. Nothing acknowledged (synced) is ever rewritten,
//! and nothing is dropped. At open, an unterminated last line (a write a
//! crash cut short, never acknowledged) is cut off.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StoreError;

/// One index entry per this many lines.
pub(crate) const INDEX_EVERY: u64 = 256;
/// Bytes read at a time when scanning.
const CHUNK: usize = 256 * 1024;

/// An append-only journal file (see the module docs).
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// Held while the buffer is written out or the file is read; taken
    /// before `buffer` when both are needed.
    file: Mutex<Written>,
    buffer: Mutex<Buffer>,
}

/// The file and what has been written to it.
#[derive(Debug)]
struct Written {
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes in the file known to be on disk.
    synced: u64,
    /// The file's bytes from `synced` to `len`: written, not known synced.
    unsynced: Vec<u8>,
    /// Bytes taken from the buffer whose write failed: they belong at
    /// `len`, before anything still in the buffer.
    stalled: Vec<u8>,
}

/// What has been appended and not yet written, and what the index knows.
#[derive(Debug)]
struct Buffer {
    pending: Vec<u8>,
    /// The file offset `pending` starts at.
    pending_at: u64,
    /// The last entry's sequence number.
    last: Option<u64>,
    /// Lines so far (for the index's spacing).
    lines: u64,
    /// `(seq, offset)` of every [`INDEX_EVERY`]th line, ascending.
    index: Vec<(u64, u64)>,
    /// Why the journal stopped accepting appends.
    failed: Option<String>,
}

impl Journal {
    /// Opens (creating, mode 0600) the journal at `path`, takes an
    /// exclusive lock on it, cuts off an unterminated last line and
    /// indexes it.
    pub(crate) fn open(path: &Path) -> Result<Journal, StoreError> {
        let backend = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("cannot {what} {}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| backend("open", &e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                StoreError::Backend(format!(
                    "{} is locked by another process ({e}): is another issuer running on this data directory?",
                    path.display()
                ))
            },
        )?;
        let mut len = file.metadata().map_err(|e| backend("stat", &e))?.len();
        let scan = scan(&file, len, path)?;
        if scan.terminated < len {
            tracing::warn!(
                target: "hallmark::audit",
                path = %path.display(),
                bytes = len - scan.terminated,
                "cut off an unterminated last line (a write interrupted by a crash; it was never acknowledged)"
            );
            file.set_len(scan.terminated)
                .map_err(|e| backend("truncate", &e))?;
            file.sync_data().map_err(|e| backend("sync", &e))?;
            len = scan.terminated;
        }
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new(Written {
                file,
                len,
                synced: len,
                unsynced: Vec::new(),
                stalled: Vec::new(),
            }),
            buffer: Mutex::new(Buffer {
                pending: Vec::new(),
                pending_at: len,
                last: scan.last,
                lines: scan.lines,
                index: scan.index,
                failed: None,
            }),
        })
    }

    /// Appends entry `seq` unless `seq` is not above the last entry's
    /// (returns `false`, nothing written). Not durable until [`Journal::sync`].
    pub(crate) fn append(&self, seq: u64, entry: &[u8]) -> Result<bool, StoreError> {
        if entry.is_empty() || entry.contains(&b'\n') {
            return Err(StoreError::Backend(format!(
                "{}: an entry must be non-empty and hold no newline",
                self.path.display()
            )));
        }
        let mut buffer = self.lock_buffer()?;
        if let Some(failed) = &buffer.failed {
            return Err(self.poisoned(failed));
        }
        if buffer.last.is_some_and(|last| seq <= last) {
            return Ok(false);
        }
        let offset = buffer.pending_at + buffer.pending.len() as u64;
        if buffer.lines.is_multiple_of(INDEX_EVERY) {
            buffer.index.push((seq, offset));
        }
        // Writing to a Vec cannot fail.
        let _ = write!(buffer.pending, "{seq} ");
        buffer.pending.extend_from_slice(entry);
        buffer.pending.push(b'\n');
        buffer.last = Some(seq);
        buffer.lines += 1;
        Ok(true)
    }

    /// Writes everything appended so far and syncs it to disk. Blocking.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let mut written = self.lock_file()?;
        self.write_pending(&mut written)?;
        if written.synced < written.len {
            if let Err(e) = written.file.sync_data() {
                let why = format!("fdatasync failed: {e}");
                self.poison(&why);
                return Err(self.poisoned(&why));
            }
            written.synced = written.len;
            written.unsynced.clear();
        }
        Ok(())
    }

    /// Why the journal stopped accepting appends, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.buffer.lock().ok().and_then(|b| b.failed.clone())
    }

    /// After a failed write or sync: cuts the file back to what is known
    /// synced, writes every byte not known synced again (in order), syncs,
    /// and accepts appends again. `Ok(false)` when the journal had not
    /// failed; an error (the journal stays failed) when the disk still
    /// refuses. Blocking.
    pub(crate) fn recover(&self) -> Result<bool, StoreError> {
        let mut written = self.lock_file()?;
        if self.lock_buffer()?.failed.is_none() {
            return Ok(false);
        }
        let mut bytes = std::mem::take(&mut written.unsynced);
        bytes.extend_from_slice(&written.stalled);
        let synced = written.synced;
        let attempt = written
            .file
            .set_len(synced)
            .and_then(|()| written.file.write_all(&bytes))
            .and_then(|()| written.file.sync_data());
        if let Err(e) = attempt {
            // Still failed; keep every byte for the next attempt.
            written.unsynced = bytes;
            written.stalled.clear();
            written.len = synced;
            return Err(StoreError::Backend(format!(
                "{}: still cannot write and sync: {e}",
                self.path.display()
            )));
        }
        written.len = synced + bytes.len() as u64;
        written.synced = written.len;
        written.stalled.clear();
        self.lock_buffer()?.failed = None;
        tracing::warn!(target: "hallmark::audit", path = %self.path.display(), bytes = bytes.len(), "the audit journal recovered: every record not known synced was written again and synced");
        Ok(true)
    }

    /// Whether the file at the journal's path is still the one open (not
    /// removed, renamed away or replaced); the reason if not.
    pub(crate) fn check_linked(&self) -> Result<(), String> {
        let written = self.lock_file().map_err(|e| e.to_string())?;
        let open = written
            .file
            .metadata()
            .map_err(|e| format!("cannot stat the open {}: {e}", self.path.display()))?;
        if open.nlink() == 0 {
            return Err(format!(
                "{} was removed under the running issuer",
                self.path.display()
            ));
        }
        match std::fs::metadata(&self.path) {
            Ok(at_path) if (at_path.dev(), at_path.ino()) == (open.dev(), open.ino()) => Ok(()),
            Ok(_) => Err(format!(
                "{} was replaced under the running issuer",
                self.path.display()
            )),
            Err(e) => Err(format!(
                "{} was moved away under the running issuer ({e})",
                self.path.display()
            )),
        }
    }

    /// The entry with the highest sequence number below `seq`, if any.
    pub(crate) fn before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let mut written = self.lock_file()?;
        self.write_pending(&mut written)?;
        let start = {
            let buffer = self.lock_buffer()?;
            let at = buffer.index.partition_point(|(s, _)| *s < seq);
            // The block of the last indexed entry below `seq` holds it.
            at.checked_sub(1).map_or(0, |i| buffer.index[i].1)
        };
        let mut found = None;
        for_each_line(
            &written.file,
            start,
            written.len,
            &self.path,
            |_, entry_seq, entry| {
                if entry_seq < seq {
                    found = Some((entry_seq, entry.to_vec()));
                    true
                } else {
                    false
                }
            },
        )?;
        Ok(found)
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some(last) = self.lock_buffer()?.last else {
            return Ok(None);
        };
        Ok(self.range(last, 1)?.into_iter().next())
    }

    /// Entry `seq`, if stored.
    pub(crate) fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .range(seq, 1)?
            .into_iter()
            .next()
            .filter(|(found, _)| *found == seq)
            .map(|(_, entry)| entry))
    }

    /// Up to `limit` entries with `seq >= from`, in file order.
    pub(crate) fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut written = self.lock_file()?;
        self.write_pending(&mut written)?;
        let start = {
            let buffer = self.lock_buffer()?;
            let at = buffer.index.partition_point(|(seq, _)| *seq <= from);
            at.checked_sub(1).map_or(0, |i| buffer.index[i].1)
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for_each_line(
            &written.file,
            start,
            written.len,
            &self.path,
            |_, seq, entry| {
                if seq >= from {
                    out.push((seq, entry.to_vec()));
                }
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// Writes the buffer to the file (no sync). On failure the file is cut
    /// back to where it was and the journal is poisoned.
    fn write_pending(&self, written: &mut Written) -> Result<(), StoreError> {
        let pending = {
            let mut buffer = self.lock_buffer()?;
            if let Some(failed) = &buffer.failed {
                return Err(self.poisoned(failed));
            }
            if buffer.pending.is_empty() {
                return Ok(());
            }
            let pending = std::mem::take(&mut buffer.pending);
            buffer.pending_at += pending.len() as u64;
            pending
        };
        if let Err(e) = written.file.write_all(&pending) {
            // Leave no partial line for the next write to follow, and keep
            // the bytes for `recover`.
            let _ = written.file.set_len(written.len);
            written.stalled = pending;
            let why = format!("write failed: {e}");
            self.poison(&why);
            return Err(self.poisoned(&why));
        }
        written.len += pending.len() as u64;
        written.unsynced.extend_from_slice(&pending);
        Ok(())
    }

    fn poison(&self, why: &str) {
        if let Ok(mut buffer) = self.buffer.lock() {
            buffer.failed.get_or_insert_with(|| why.to_owned());
        }
        tracing::error!(target: "hallmark::audit", path = %self.path.display(), error = why, "the audit journal stopped accepting records; it writes them again and recovers once the disk accepts writes (free space, or fix the disk)");
    }

    fn poisoned(&self, why: &str) -> StoreError {
        StoreError::Backend(format!(
            "{}: {why}; no record is accepted until the disk accepts writes again",
            self.path.display()
        ))
    }

    fn lock_buffer(&self) -> Result<std::sync::MutexGuard<'_, Buffer>, StoreError> {
        self.buffer
            .lock()
            .map_err(|_| StoreError::Backend(format!("{}: lock poisoned", self.path.display())))
    }

    fn lock_file(&self) -> Result<std::sync::MutexGuard<'_, Written>, StoreError> {
        self.file
            .lock()
            .map_err(|_| StoreError::Backend(format!("{}: lock poisoned", self.path.display())))
    }
}

/// Every complete entry of the journal at `path`, read without taking its
/// lock (a running issuer may hold it) and without changing the file: for
/// offline verification. A missing file reads as empty.
pub(crate) fn read_unlocked(path: &Path) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StoreError::Backend(format!(
                "cannot open {}: {e}",
                path.display()
            )));
        }
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::Backend(format!("cannot stat {}: {e}", path.display())))?
        .len();
    let mut out = Vec::new();
    for_each_line(&file, 0, len, path, |_, seq, entry| {
        out.push((seq, entry.to_vec()));
        true
    })?;
    Ok(out)
}

/// What one pass over the file found.
struct Scan {
    /// The end of the last newline-terminated line.
    terminated: u64,
    last: Option<u64>,
    lines: u64,
    index: Vec<(u64, u64)>,
}

fn scan(file: &File, len: u64, path: &Path) -> Result<Scan, StoreError> {
    let mut scan = Scan {
        terminated: 0,
        last: None,
        lines: 0,
        index: Vec::new(),
    };
    for_each_line(file, 0, len, path, |offset, seq, _entry| {
        if scan.lines.is_multiple_of(INDEX_EVERY) {
            scan.index.push((seq, offset));
        }
        scan.lines += 1;
        scan.last = Some(seq);
        true
    })
    .map(|terminated| {
        scan.terminated = terminated;
        scan
    })
}

/// Calls `each(offset, seq, entry)` for every complete line from `start`
/// until `end` or until it returns `false`; returns the offset after the
/// last complete line read (an unterminated tail is not a line).
fn for_each_line(
    file: &File,
    start: u64,
    end: u64,
    path: &Path,
    mut each: impl FnMut(u64, u64, &[u8]) -> bool,
) -> Result<u64, StoreError> {
    let mut chunk = vec![0u8; CHUNK];
    // Bytes of an unfinished line carried over from the previous chunk.
    let mut carry: Vec<u8> = Vec::new();
    let mut at = start;
    let mut line_start = start;
    while at < end {
        let want = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
        let read = file
            .read_at(&mut chunk[..want], at)
            .map_err(|e| StoreError::Backend(format!("cannot read {}: {e}", path.display())))?;
        if read == 0 {
            break;
        }
        at += read as u64;
        let mut rest = &chunk[..read];
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let line: &[u8] = if carry.is_empty() {
                &rest[..newline]
            } else {
                carry.extend_from_slice(&rest[..newline]);
                &carry
            };
            let (seq, entry) = parse_line(line, line_start, path)?;
            let go_on = each(line_start, seq, entry);
            line_start += line.len() as u64 + 1;
            carry.clear();
            rest = &rest[newline + 1..];
            if !go_on {
                return Ok(line_start);
            }
        }
        carry.extend_from_slice(rest);
    }
    Ok(line_start)
}

/// `<seq> <entry>`: decimal digits without sign or leading zeros, one
/// space, a non-empty entry.
fn parse_line<'a>(line: &'a [u8], offset: u64, path: &Path) -> Result<(u64, &'a [u8]), StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: format!("{} at byte {offset}", path.display()),
        reason: format!("{reason}: the journal was written by something other than the issuer"),
    };
    let space = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| corrupt("a line is not `<seq> <entry>`"))?;
    let (digits, entry) = (&line[..space], &line[space + 1..]);
    if digits.is_empty()
        || (digits.len() > 1 && digits[0] == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(corrupt("a line does not start with a sequence number"));
    }
    let seq = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| corrupt("a sequence number is out of range"))?;
    if entry.is_empty() {
        return Err(corrupt("a line has an empty entry"));
    }
    Ok((seq, entry))
}

#[cfg(test)]
mod tests;
