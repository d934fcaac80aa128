//! Pulls in flight, for operators: what each is fetching, through which
//! endpoint, how far it got; and the events a metrics observer counts.
//!
//! The CRI has no progress field yet (KEP-5334 proposes a streaming one):
//! [`PullsInFlight::snapshot`] is what such a stream would send, per
//! pull, so it can be served without rework. crustd shows it in verbose
//! Status (`pullsInFlight`) and `crustd status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// What a pull observer is told.
#[derive(Debug, Clone, Copy)]
pub enum PullEvent<'a> {
    Started {
        registry: &'a str,
    },
    /// Layer bytes downloaded.
    Bytes {
        registry: &'a str,
        bytes: u64,
    },
    Finished {
        registry: &'a str,
        seconds: f64,
        ok: bool,
    },
}

pub type PullObserver = Arc<dyn Fn(PullEvent<'_>) + Send + Sync>;

/// One pull's progress: bytes per layer, as the downloads add them.
pub struct Progress {
    pub(crate) totals: Vec<u64>,
    done: Vec<AtomicU64>,
    finished: AtomicUsize,
    skipped: AtomicUsize,
}

impl Progress {
    pub(crate) fn new(totals: Vec<u64>) -> Progress {
        Progress {
            done: totals.iter().map(|_| AtomicU64::new(0)).collect(),
            totals,
            finished: AtomicUsize::new(0),
            skipped: AtomicUsize::new(0),
        }
    }

    pub(crate) fn add(&self, i: usize, n: u64) {
        self.done[i].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self, _i: usize) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn skip(&self, i: usize) {
        self.done[i].store(self.totals[i], Ordering::Relaxed);
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    fn bytes_done(&self) -> u64 {
        self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// The periodic progress line: bytes per layer, rate, endpoint.
    pub(crate) fn log(&self, image: &str, via: &str, started: Instant) {
        let done = self.bytes_done();
        let total: u64 = self.totals.iter().sum();
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        let per_layer: Vec<String> = self
            .done
            .iter()
            .zip(&self.totals)
            .map(|(d, t)| format!("{}/{t}", d.load(Ordering::Relaxed)))
            .collect();
        tracing::info!(
            image,
            via,
            layers_done = self.finished.load(Ordering::Relaxed),
            layers_present = self.skipped.load(Ordering::Relaxed),
            layers = self.totals.len(),
            bytes_done = done,
            bytes_total = total,
            bytes_per_second = (done as f64 / seconds) as u64,
            per_layer = %per_layer.join(" "),
            "pull progress"
        );
    }
}

/// A pull in flight, as an operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullSnapshot {
    pub image: String,
    /// The endpoint (registry or mirror host) serving it; empty while the
    /// manifest is still being resolved.
    pub via: String,
    pub seconds: f64,
    pub layers: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

struct Entry {
    image: String,
    via: String,
    started: Instant,
    progress: Option<Arc<Progress>>,
}

/// Every pull in flight, by a sequence number.
#[derive(Default)]
pub struct PullsInFlight {
    next: AtomicU64,
    pulls: Mutex<BTreeMap<u64, Entry>>,
}

impl PullsInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a pull until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>, image: &str) -> InFlight {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                image: image.to_string(),
                via: String::new(),
                started: Instant::now(),
                progress: None,
            },
        );
        InFlight {
            pulls: self.clone(),
            id,
        }
    }

    pub fn snapshot(&self) -> Vec<PullSnapshot> {
        self.lock()
            .values()
            .map(|e| PullSnapshot {
                image: e.image.clone(),
                via: e.via.clone(),
                seconds: e.started.elapsed().as_secs_f64(),
                layers: e.progress.as_ref().map_or(0, |p| p.totals.len()),
                bytes_done: e.progress.as_ref().map_or(0, |p| p.bytes_done()),
                bytes_total: e.progress.as_ref().map_or(0, |p| p.totals.iter().sum()),
            })
            .collect()
    }
}

/// A registered pull; removed when dropped (done, failed or cancelled).
pub(crate) struct InFlight {
    pulls: Arc<PullsInFlight>,
    id: u64,
}

impl InFlight {
    pub(crate) fn via(&self, host: &str) {
        if let Some(e) = self.pulls.lock().get_mut(&self.id) {
            e.via = host.to_string();
        }
    }

    pub(crate) fn progress(&self, progress: Arc<Progress>) {
        if let Some(e) = self.pulls.lock().get_mut(&self.id) {
            e.progress = Some(progress);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pulls.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_is_listed_with_its_progress_until_it_ends() {
        let pulls = Arc::new(PullsInFlight::default());
        let a = pulls.start("r.io/a:1");
        let b = pulls.start("r.io/b:1");
        a.via("mirror.local");
        let progress = Arc::new(Progress::new(vec![100, 50]));
        progress.add(0, 30);
        progress.skip(1);
        a.progress(progress);
        let snap = pulls.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(
            (
                snap[0].via.as_str(),
                snap[0].layers,
                snap[0].bytes_done,
                snap[0].bytes_total
            ),
            ("mirror.local", 2, 80, 150)
        );
        assert_eq!(snap[1].image, "r.io/b:1");
        drop(a);
        assert_eq!(pulls.snapshot().len(), 1);
        drop(b);
        assert!(pulls.snapshot().is_empty());
        let json = serde_json::to_value(&snap[0]).unwrap();
        assert!(json.get("bytesDone").is_some(), "{json}");
    }
}
