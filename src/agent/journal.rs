//! The message ids this agent has taken, on disk beside its state file, so that a request
//! captured and sent again after a restart is not carried out twice. Each id is written and
//! flushed before the directory is written, and kept until its request would have expired.
//! One line per id: `<msg_id> <expires_at>`.
//!
//! Ids that arrive while a flush is under way wait for the next one, which writes them all and
//! syncs once (a group commit): under load one sync covers many requests, and none is answered
//! before its own id is on disk.

use crate::domain::MsgId;
use anyhow::Context;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Past this many lines the file is rewritten with only the ids that have not expired.
const COMPACT_AFTER: usize = 10_000;

pub struct Journal {
    path: PathBuf,
    /// Ids taken before this process started, with when their requests expire.
    earlier: HashMap<String, i64>,
    /// The file, how many lines it holds, and how many it kept when it was last compacted;
    /// only the flushing thread holds it.
    file: Mutex<(File, usize, usize)>,
    waiting: Mutex<Waiting>,
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

    /// Reads the ids that have not expired at `now` and opens the file for appending (0600).
    pub fn open(path: PathBuf, now: i64) -> anyhow::Result<Journal> {
        let entries = read(&path, now)?;
        let lines = entries.len();
        let file = append(&path)?;
        Ok(Journal {
            earlier: entries.into_iter().collect(),
            path,
            file: Mutex::new((file, lines, lines)),
            waiting: Mutex::default(),
        })
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
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // Past the threshold, and past twice what was kept at the last compaction (so that many
        // ids alive at once do not rewrite the file at every write).
        if guard.1 >= COMPACT_AFTER.max(2 * guard.2) {
            let live = read(&self.path, now)?;
            let kept: String = live.iter().map(|(id, exp)| format!("{id} {exp}\n")).collect();
            crate::files::replace_private(&self.path, kept.as_bytes())?;
            *guard = (append(&self.path)?, live.len(), live.len());
        }
        let (file, lines, _) = &mut *guard;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing {}", self.path.display()))?;
        *lines += count;
        Ok(())
    }
}

fn append(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The ids in the file whose requests have not expired at `now`; a line that cannot be read
/// (a write cut short by a crash) is skipped.
fn read(path: &Path, now: i64) -> anyhow::Result<Vec<(String, i64)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Some((id, exp)) = line.split_once(' ') else { continue };
        if let (Ok(id), Ok(exp)) = (MsgId::parse(id), exp.parse::<i64>()) {
            if exp > now {
                out.push((id.as_str().to_string(), exp));
            }
        }
    }
    Ok(out)
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
    async fn a_write_that_fails_is_an_error_for_every_id_it_carried() {
        let dir = crate::files::scratch_dir("journal-fails");
        let path = Journal::path_for(&dir.join("agent.json"));
        std::fs::write(&path, "").unwrap();
        // Opened for reading only: every write fails.
        let read_only = File::open(&path).unwrap();
        let journal = Arc::new(Journal {
            path: path.clone(),
            earlier: HashMap::new(),
            file: Mutex::new((read_only, 0, 0)),
            waiting: Mutex::default(),
        });
        let (a, b) = (MsgId::random(), MsgId::random());
        let (ra, rb) = tokio::join!(journal.record(&a, 1_100, 1_000), journal.record(&b, 1_100, 1_000));
        assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
