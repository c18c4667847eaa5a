//! The message ids this agent has taken, on disk beside its state file, so that a request
//! captured and sent again after a restart is not carried out twice. Each id is written and
//! flushed before the directory is touched, and kept until its request would have expired.
//! One line per id: `<msg_id> <expires_at>`.

use crate::domain::MsgId;
use anyhow::Context;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Past this many lines the file is rewritten with only the ids that have not expired.
const COMPACT_AFTER: usize = 10_000;

pub struct Journal {
    path: PathBuf,
    /// Ids taken before this process started, with when their requests expire.
    earlier: HashMap<String, i64>,
    file: Mutex<(File, usize)>,
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
        Ok(Journal { earlier: entries.into_iter().collect(), path, file: Mutex::new((file, lines)) })
    }

    /// Whether `msg_id` was taken before this process started (its answer is not known here).
    pub fn taken_before_start(&self, msg_id: &MsgId, now: i64) -> bool {
        self.earlier.get(msg_id.as_str()).is_some_and(|exp| *exp > now)
    }

    /// Records `msg_id` durably; only then may the directory be touched.
    pub fn record(&self, msg_id: &MsgId, expires_at: i64, now: i64) -> anyhow::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1 >= COMPACT_AFTER {
            let live = read(&self.path, now)?;
            let text: String = live.iter().map(|(id, exp)| format!("{id} {exp}\n")).collect();
            crate::files::replace_private(&self.path, text.as_bytes())?;
            *guard = (append(&self.path)?, live.len());
        }
        let (file, lines) = &mut *guard;
        file.write_all(format!("{msg_id} {expires_at}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing {}", self.path.display()))?;
        *lines += 1;
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

    #[test]
    fn ids_taken_before_a_restart_are_known_after_it_until_they_expire() {
        let dir = crate::files::scratch_dir("journal");
        let path = Journal::path_for(&dir.join("agent.json"));
        let (a, b) = (MsgId::random(), MsgId::random());
        let first = Journal::open(path.clone(), 1_000).unwrap();
        first.record(&a, 1_100, 1_000).unwrap();
        first.record(&b, 1_010, 1_000).unwrap();
        assert!(!first.taken_before_start(&a, 1_000), "taken in this run: the in-memory cache answers");
        drop(first);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let again = Journal::open(path.clone(), 1_020).unwrap();
        assert!(again.taken_before_start(&a, 1_020));
        assert!(!again.taken_before_start(&b, 1_020), "expired: the request would be refused anyway");
        assert!(!again.taken_before_start(&a, 1_100));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
