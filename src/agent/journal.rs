//! The message ids this agent has taken, on disk beside its state file, so that a request
//! captured and sent again after a restart is not carried out twice. Each id is written and
//! flushed before the directory is written, and kept until its request would have expired.
//! One line per id: `<msg_id> <expires_at>`.
//!
//! The file is made longer ahead of the lines, with zeros, a chunk at a time: a line is written
//! over zeros already on disk, so its sync writes the line alone, not the file's new length as
//! well (which cost most of a sync here: 0.22 ms against 0.13 ms on the development machine's
//! disk). Zeros are read as the ends of lines.
//!
//! Ids that arrive while a flush is under way wait for the next one, which writes them all and
//! syncs once (a group commit): under load one sync covers many requests, and none is answered
//! before its own id is on disk.

use crate::domain::MsgId;
use anyhow::Context;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Past this many lines the file is rewritten with only the ids that have not expired.
const COMPACT_AFTER: usize = 10_000;
/// How much longer the file is made at a time, in zeros that lines are then written over
/// (about 1,400 lines).
const AHEAD: u64 = 64 * 1024;

pub struct Journal {
    path: PathBuf,
    /// Ids taken before this process started, with when their requests expire.
    earlier: HashMap<String, i64>,
    /// The file, open for writing; only the flushing thread holds it.
    file: Mutex<Lines>,
    waiting: Mutex<Waiting>,
}

/// The journal's file, open for writing.
struct Lines {
    file: File,
    /// Where the next line goes: the end of what was written, where the zeros begin.
    end: u64,
    /// The file's length (the zeros past `end` included).
    len: u64,
    /// How many lines it holds, and how many it kept when it was last compacted.
    count: usize,
    kept: usize,
}

impl Lines {
    /// Opens the file at `path` (0600, made if need be), which holds `text`, for lines written
    /// after it (after its last byte that is not a zero). The last line, if a crash cut it
    /// short, is ended first, so that it cannot run into the next.
    fn open(path: &Path, text: &[u8], count: usize) -> anyhow::Result<Lines> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let end = text.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
        let mut lines = Lines { file, end: end as u64, len: text.len() as u64, count, kept: count };
        if text[..end].last().is_some_and(|b| *b != b'\n') {
            lines.write(b"\n").with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(lines)
    }

    /// Writes `text` after the last line and syncs it; the file is first made longer, with
    /// zeros, if `text` would not fit.
    fn write(&mut self, text: &[u8]) -> std::io::Result<()> {
        let end = self.end + text.len() as u64;
        if end > self.len {
            let len = end.next_multiple_of(AHEAD);
            let zeros = vec![0; usize::try_from(len - self.len).unwrap_or(0)];
            // Synced with the text below: its sync writes the new length this once.
            self.file.write_all_at(&zeros, self.len)?;
            self.len = len;
        }
        self.file.write_all_at(text, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(())
    }
}

/// Where a line's writer learns that it is on disk, or why it is not.
type Done = oneshot::Sender<Result<(), String>>;

/// Lines not yet on disk, each with the time it was recorded at and whom to tell once it is on
/// disk (or why it is not).
#[derive(Default)]
struct Waiting {
    lines: Vec<(String, i64, Done)>,
    /// Whether a thread is flushing now (it takes these lines too before it stops).
    flushing: bool,
}

impl Journal {
    /// The journal of the agent whose state file is `state_file`.
    pub fn path_for(state_file: &Path) -> PathBuf {
        state_file.with_extension("answered")
    }

    /// Every id in the journal at `path`, with when its request expires. Zeros end lines as
    /// newlines do; a line that cannot be read (a write cut short by a crash) is skipped.
    /// Whatever else is there counts, even past zeros (a version that appended after them), so
    /// that an id is never forgotten: one counted by mistake is only refused after a restart.
    pub fn entries(path: &Path) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(parsed(&bytes_of(path)?))
    }

    /// Reads the ids that have not expired at `now` and opens the file for the lines after them
    /// (0600).
    pub fn open(path: PathBuf, now: i64) -> anyhow::Result<Journal> {
        let bytes = bytes_of(&path)?;
        let entries: Vec<_> = parsed(&bytes).into_iter().filter(|(_, exp)| *exp > now).collect();
        let file = Lines::open(&path, &bytes, entries.len())?;
        Ok(Journal { earlier: entries.into_iter().collect(), path, file: Mutex::new(file), waiting: Mutex::default() })
    }

    /// Whether `msg_id` was taken before this process started (its answer is not known here).
    pub fn taken_before_start(&self, msg_id: &MsgId, now: i64) -> bool {
        self.earlier.get(msg_id.as_str()).is_some_and(|exp| *exp > now)
    }

    /// Records `msg_id` durably; only once the returned future says so may the directory be
    /// written. The writing starts now, not when the future is first awaited, so that what
    /// needs no record (reading the account) can be done meanwhile.
    pub fn record(
        self: &Arc<Self>,
        msg_id: &MsgId,
        expires_at: i64,
        now: i64,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            w.lines.push((format!("{msg_id} {expires_at}\n"), now, tx));
            !std::mem::replace(&mut w.flushing, true)
        };
        if lead {
            let journal = self.clone();
            tokio::task::spawn_blocking(move || journal.flush_waiting());
        }
        let path = self.path.clone();
        async move {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!(e)),
                Err(_) => Err(anyhow::anyhow!("writing {}: the flush stopped", path.display())),
            }
        }
    }

    /// Writes and syncs what waits, batch by batch, until nothing does. Should it stop part way
    /// (a panic), whoever waits is told the flush stopped, and the next record starts another.
    fn flush_waiting(&self) {
        struct Stopped<'a>(&'a Mutex<Waiting>);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
                w.flushing = false;
                w.lines.clear();
            }
        }
        let stopped = Stopped(&self.waiting);
        loop {
            let batch = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if w.lines.is_empty() {
                    w.flushing = false;
                    std::mem::forget(stopped);
                    return;
                }
                std::mem::take(&mut w.lines)
            };
            let text: String = batch.iter().map(|(line, _, _)| line.as_str()).collect();
            let now = batch.iter().map(|(_, now, _)| *now).max().unwrap_or_default();
            let result = self.write(&text, batch.len(), now).map_err(|e| format!("{e:#}"));
            for (_, _, tx) in batch {
                let _ = tx.send(result.clone());
            }
        }
    }

    fn write(&self, text: &str, count: usize, now: i64) -> anyhow::Result<()> {
        let mut lines = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // Past the threshold, and past twice what was kept at the last compaction (so that many
        // ids alive at once do not rewrite the file at every write).
        if lines.count >= COMPACT_AFTER.max(2 * lines.kept) {
            let live = read(&self.path, now)?;
            let kept: String = live.iter().map(|(id, exp)| format!("{id} {exp}\n")).collect();
            crate::files::replace_private(&self.path, kept.as_bytes())?;
            *lines = Lines::open(&self.path, kept.as_bytes(), live.len())?;
        }
        lines.write(text.as_bytes()).with_context(|| format!("writing {}", self.path.display()))?;
        lines.count += count;
        Ok(())
    }
}

/// The ids in the file whose requests have not expired at `now`.
fn read(path: &Path, now: i64) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(Journal::entries(path)?.into_iter().filter(|(_, exp)| *exp > now).collect())
}

/// The file's bytes; none for a file not made yet.
fn bytes_of(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The ids of a journal's `bytes` (see [`Journal::entries`]).
fn parsed(bytes: &[u8]) -> Vec<(String, i64)> {
    let entries = bytes.split(|b| *b == b'\n' || *b == 0).filter_map(|line| {
        let (id, exp) = std::str::from_utf8(line).ok()?.split_once(' ')?;
        Some((MsgId::parse(id).ok()?.as_str().to_string(), exp.parse::<i64>().ok()?))
    });
    entries.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn ids_taken_before_a_restart_are_known_after_it_until_they_expire() {
        let dir = crate::files::scratch_dir("journal");
        let path = Journal::path_for(&dir.join("agent.json"));
        let (a, b) = (MsgId::random(), MsgId::random());
        let first = Arc::new(Journal::open(path.clone(), 1_000).unwrap());
        let (ra, rb) = tokio::join!(first.record(&a, 1_100, 1_000), first.record(&b, 1_010, 1_000));
        ra.unwrap();
        rb.unwrap();
        assert!(!first.taken_before_start(&a, 1_000), "taken in this run: the in-memory cache answers");
        drop(first);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let again = Journal::open(path.clone(), 1_020).unwrap();
        assert!(again.taken_before_start(&a, 1_020));
        assert!(!again.taken_before_start(&b, 1_020), "expired: the request would be refused anyway");
        assert!(!again.taken_before_start(&a, 1_100));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_recorded_at_once_are_all_on_disk_when_each_is_answered() {
        let dir = crate::files::scratch_dir("journal-group");
        let path = Journal::path_for(&dir.join("agent.json"));
        let journal = Arc::new(Journal::open(path.clone(), 1_000).unwrap());
        let ids: Vec<MsgId> = (0..64).map(|_| MsgId::random()).collect();
        let records = ids.iter().map(|id| {
            let j = journal.clone();
            let id = id.clone();
            tokio::spawn(async move { j.record(&id, 1_100, 1_000).await })
        });
        for r in futures_util::future::join_all(records).await {
            r.unwrap().unwrap();
        }
        let again = Journal::open(path, 1_000).unwrap();
        assert!(ids.iter().all(|id| again.taken_before_start(id, 1_000)));
        assert!(!journal.waiting.lock().unwrap().flushing, "the flush ended once nothing waited");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn lines_are_written_over_zeros_made_ahead_so_a_sync_does_not_change_the_length() {
        let dir = crate::files::scratch_dir("journal-ahead");
        let path = Journal::path_for(&dir.join("agent.json"));
        let journal = Arc::new(Journal::open(path.clone(), 1_000).unwrap());
        let len = || std::fs::metadata(&path).unwrap().len();
        let (a, b) = (MsgId::random(), MsgId::random());
        journal.record(&a, 1_100, 1_000).await.unwrap();
        assert_eq!(len(), AHEAD, "made longer by a chunk");
        journal.record(&b, 1_100, 1_000).await.unwrap();
        assert_eq!(len(), AHEAD, "the second line went over the zeros");
        drop(journal);
        let again = Journal::open(path.clone(), 1_000).unwrap();
        assert!(again.taken_before_start(&a, 1_000) && again.taken_before_start(&b, 1_000));
        assert_eq!(Journal::entries(&path).unwrap().len(), 2, "nothing read past the lines");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_line_cut_short_by_a_crash_never_runs_into_the_next() {
        let dir = crate::files::scratch_dir("journal-torn");
        let path = Journal::path_for(&dir.join("agent.json"));
        let (whole, cut, next) = (MsgId::random(), MsgId::random(), MsgId::random());
        // A whole line, one cut short, the zeros made ahead, a line that a version writing
        // after the zeros added, and one of its lines cut short.
        let (after, ahead) = (MsgId::random(), MsgId::random());
        let mut text = format!("{whole} 1100\n{}", &cut.as_str()[..10]).into_bytes();
        text.extend([0; 100]);
        text.extend(format!("{after} 1100\n{ahead}").as_bytes());
        std::fs::write(&path, &text).unwrap();
        let journal = Arc::new(Journal::open(path.clone(), 1_000).unwrap());
        assert!(journal.taken_before_start(&whole, 1_000));
        journal.record(&next, 1_100, 1_000).await.unwrap();
        drop(journal);
        let again = Journal::open(path.clone(), 1_000).unwrap();
        assert!(again.taken_before_start(&whole, 1_000));
        assert!(again.taken_before_start(&after, 1_000), "read past the zeros");
        assert!(again.taken_before_start(&next, 1_000), "the line after the cut one is read whole");
        assert!(!again.taken_before_start(&cut, 1_000));
        assert!(!again.taken_before_start(&ahead, 1_000), "cut short: it had no expiry");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_write_that_fails_is_an_error_for_every_id_it_carried() {
        let dir = crate::files::scratch_dir("journal-fails");
        let path = Journal::path_for(&dir.join("agent.json"));
        std::fs::write(&path, "").unwrap();
        // Opened for reading only: every write fails.
        let read_only = File::open(&path).unwrap();
        let journal = Arc::new(Journal {
            path: path.clone(),
            earlier: HashMap::new(),
            file: Mutex::new(Lines { file: read_only, end: 0, len: 0, count: 0, kept: 0 }),
            waiting: Mutex::default(),
        });
        let (a, b) = (MsgId::random(), MsgId::random());
        let (ra, rb) = tokio::join!(journal.record(&a, 1_100, 1_000), journal.record(&b, 1_100, 1_000));
        assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
