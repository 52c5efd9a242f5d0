//! The route snapshot: the last known routes on disk, so an agent restarted
//! while the dns is down serves them instead of `NOEXIST`.
//!
//! Format (text, version 1): a header line `lars-agent-routes 1`, then one
//! line per key: `modid cmdid ip:port ip:port ...`. Lines starting with `#`
//! are comments. Written atomically (temporary file + rename).
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use lars_core::{HostAddr, ModKey};

/// The first line of a snapshot file.
pub const SNAPSHOT_HEADER: &str = "lars-agent-routes 1";

/// Routes of many keys, as stored in a snapshot.
pub type Routes = Vec<(ModKey, Vec<HostAddr>)>;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("cannot read or write the route snapshot {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a version 1 snapshot or a line is malformed.
    #[error("snapshot {path}:{line}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Renders routes in the snapshot format (keys sorted).
pub fn render(routes: &[(ModKey, Vec<HostAddr>)]) -> String {
    let mut sorted: Vec<&(ModKey, Vec<HostAddr>)> = routes.iter().collect();
    sorted.sort_unstable_by_key(|(k, _)| *k);
    let mut out = String::with_capacity(32 + routes.len() * 40);
    out.push_str(SNAPSHOT_HEADER);
    out.push('\n');
    for (key, hosts) in sorted {
        if hosts.is_empty() {
            continue;
        }
        out.push_str(&format!("{} {}", key.modid, key.cmdid));
        for h in hosts {
            out.push_str(&format!(" {h}"));
        }
        out.push('\n');
    }
    out
}

/// Parses a snapshot; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Routes, SnapshotError> {
    let bad = |line: usize, why: String| SnapshotError::Format {
        path: path.to_owned(),
        line,
        why,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.trim() == SNAPSHOT_HEADER => {}
        _ => return Err(bad(1, format!("expected header {SNAPSHOT_HEADER:?}"))),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let mut id = |what: &str| -> Result<u32, SnapshotError> {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| bad(i + 1, format!("expected {what}")))
        };
        let key = ModKey::new(id("modid")?, id("cmdid")?);
        let hosts = words
            .map(|w| w.parse::<HostAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(i + 1, e.to_string()))?;
        out.push((key, hosts));
    }
    Ok(out)
}

/// Loads a snapshot; a missing file is an empty one.
pub fn load(path: &Path) -> Result<Routes, SnapshotError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes routes atomically: a temporary file next to `path`, fsync, rename.
pub fn write(path: &Path, routes: &[(ModKey, Vec<HostAddr>)]) -> Result<(), SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
    f.write_all(render(routes).as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// A message to the writer thread: shard `shard` has these routes now.
pub(crate) type ShardRoutes = (usize, Routes);

/// The thread that owns the snapshot file: it keeps the latest routes of
/// every shard and rewrites the file whenever a shard sends a change
/// (shards send at most once per snapshot interval). It ends when every
/// sender is dropped.
pub(crate) struct Writer {
    tx: Sender<ShardRoutes>,
    join: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(path: PathBuf, initial: Routes, shards: usize) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let join = thread::Builder::new()
            .name("lars-agent-snapshot".into())
            .spawn(move || writer_loop(&path, initial, shards, &rx))?;
        Ok(Self {
            tx,
            join: Some(join),
        })
    }

    pub(crate) fn sender(&self) -> Sender<ShardRoutes> {
        self.tx.clone()
    }

    /// Drops this sender and waits for the thread (once the shards' senders
    /// are gone too).
    pub(crate) fn join(mut self) {
        let (dead, _) = crossbeam_channel::bounded(0);
        self.tx = dead;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

fn writer_loop(path: &Path, initial: Routes, shards: usize, rx: &Receiver<ShardRoutes>) {
    // Until a shard reports, keep what the file held (keys of that shard
    // are restored in it, so its first report replaces them).
    let mut per_shard: Vec<Option<Routes>> = vec![None; shards];
    let mut initial: BTreeMap<ModKey, Vec<HostAddr>> = initial.into_iter().collect();
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        msgs.extend(rx.try_iter());
        for (shard, routes) in msgs {
            if let Some(slot) = per_shard.get_mut(shard) {
                initial.retain(|k, _| crate::shard_of(*k, shards) != shard);
                *slot = Some(routes);
            }
        }
        let mut all: Routes = initial.iter().map(|(k, h)| (*k, h.clone())).collect();
        for r in per_shard.iter().flatten() {
            all.extend(r.iter().cloned());
        }
        match write(path, &all) {
            Ok(()) => tracing::debug!(keys = all.len(), "route snapshot written"),
            Err(e) => tracing::warn!("{}", lars_core::Chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let routes = vec![
            (
                ModKey::new(2, 1),
                vec![
                    "10.0.0.2:80".parse().unwrap(),
                    "10.0.0.3:81".parse().unwrap(),
                ],
            ),
            (ModKey::new(1, 1), vec!["10.0.0.1:80".parse().unwrap()]),
            (ModKey::new(3, 1), vec![]),
        ];
        let text = render(&routes);
        assert_eq!(
            text,
            "lars-agent-routes 1\n1 1 10.0.0.1:80\n2 1 10.0.0.2:80 10.0.0.3:81\n"
        );
        let p = Path::new("x");
        let back = parse(p, &text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], routes[0]);
        assert!(matches!(
            parse(p, "something else\n"),
            Err(SnapshotError::Format { line: 1, .. })
        ));
        assert!(matches!(
            parse(p, "lars-agent-routes 1\n1 x\n"),
            Err(SnapshotError::Format { line: 2, .. })
        ));
        assert!(matches!(
            parse(p, "lars-agent-routes 1\n# c\n1 1 nothost\n"),
            Err(SnapshotError::Format { line: 3, .. })
        ));
    }

    #[test]
    fn write_is_atomic_and_load_of_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("routes");
        assert!(load(&p).unwrap().is_empty());
        let routes = vec![(ModKey::new(5, 6), vec!["1.2.3.4:5".parse().unwrap()])];
        write(&p, &routes).unwrap();
        assert_eq!(load(&p).unwrap(), routes);
        assert!(!dir.path().join("routes.tmp").exists());
    }

    #[test]
    fn an_io_error_names_the_file_and_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file.
        let Err(e) = load(dir.path()) else {
            panic!("a directory loaded as a snapshot");
        };
        let cause = std::error::Error::source(&e).unwrap().to_string();
        let line = lars_core::Chain(&e).to_string();
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
        assert!(line.contains(&dir.path().display().to_string()), "{line}");
    }

    #[test]
    fn writer_merges_shards_and_keeps_unreported_initial_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("routes");
        let h: HostAddr = "1.2.3.4:5".parse().unwrap();
        // shard_of(k, 2) = (modid + cmdid) % 2
        let initial = vec![(ModKey::new(1, 1), vec![h]), (ModKey::new(1, 2), vec![h])];
        let w = Writer::start(p.clone(), initial, 2).unwrap();
        let tx = w.sender();
        tx.send((0, vec![(ModKey::new(2, 2), vec![h])])).unwrap();
        drop(tx);
        w.join();
        let got = load(&p).unwrap();
        assert_eq!(
            got,
            vec![(ModKey::new(1, 2), vec![h]), (ModKey::new(2, 2), vec![h])]
        );
    }
}
