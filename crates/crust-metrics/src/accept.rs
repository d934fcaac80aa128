//! Accepting connections without spinning, flooding the log or holding
//! more than a cap of them: shared by every listener crustd serves (the
//! CRI socket, /metrics, streaming).
//!
//! A failed accept (EMFILE, ENFILE, ENOBUFS: the process or host is out of
//! something) fails again at once if retried at once: [`Acceptor`] backs
//! off (10 ms doubling to 1 s, reset by the next success) and logs one
//! line per 10 s with the count of failures since the last line, instead
//! of one line per retry. [`Gate`] caps the connections a listener holds
//! before they prove themselves: its permit is taken *before* accepting,
//! so over the cap new connections wait in the kernel's backlog (or are
//! refused by it) instead of being accepted and held.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pause after the first failed accept.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per this long for repeated accept failures.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One listener's accept state: backoff and log rate.
pub struct Acceptor {
    what: &'static str,
    backoff: Duration,
    log: RateLimit,
    failures: u64,
}

impl Acceptor {
    /// `what` names the listener in log lines ("metrics", "CRI socket").
    pub fn new(what: &'static str) -> Acceptor {
        Acceptor {
            what,
            backoff: FIRST_BACKOFF,
            log: RateLimit::new(LOG_EVERY),
            failures: 0,
        }
    }

    /// Calls `accept` until it succeeds, pausing after each failure.
    /// Cancel-safe when `accept`'s future is (tokio's listeners' are).
    pub async fn accept<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(conn) => {
                    self.backoff = FIRST_BACKOFF;
                    return conn;
                }
                // One connection gone before it was accepted: nothing is
                // exhausted, the next accept is independent.
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(listener = self.what, error = %e, "accept: connection gone");
                }
                Err(e) => {
                    self.failures += 1;
                    if let Some(repeated) = self.log.note(Instant::now()) {
                        tracing::warn!(
                            listener = self.what,
                            error = %e,
                            failures = repeated,
                            total_failures = self.failures,
                            backoff_ms = self.backoff.as_millis() as u64,
                            "accept failed; backing off (one line per {}s)",
                            LOG_EVERY.as_secs()
                        );
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Accept failures seen so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Lets one event through per period; counts the rest.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(n)` when it should be logged, `n` counting
    /// it and the events suppressed since the last one logged.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.suppressed += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A cap on the connections a listener holds in some phase (before they
/// authenticate, upgrade, or at all), with a count for tests and metrics.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    held: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gate {
    pub fn new(max: usize) -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(max)),
            held: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// Waits for room, then accepts one connection through `acceptor`.
    /// The connection counts against the cap until its [`Pass`] is dropped.
    pub async fn accept<T, F, Fut>(&self, acceptor: &mut Acceptor, accept: F) -> (T, Pass)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed");
        let conn = acceptor.accept(accept).await;
        let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        (
            conn,
            Pass {
                _permit: permit,
                held: self.held.clone(),
            },
        )
    }

    /// Connections accepted and not yet let go.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The most connections ever held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// One connection's place under a [`Gate`]'s cap.
pub struct Pass {
    _permit: OwnedSemaphorePermit,
    held: Arc<AtomicUsize>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections the kernel has completed that the listener bound to
/// `local` has not accepted yet (its accept queue), from /proc/net/tcp.
pub fn backlog(local: std::net::SocketAddr) -> io::Result<usize> {
    let table = std::fs::read_to_string(if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    })?;
    let port = format!(":{:04X}", local.port());
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // A LISTEN row's rx_queue is its accept queue's length.
        .find(|f| f.len() > 4 && f[1].ends_with(&port) && f[3] == "0A")
        .and_then(|f| usize::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such listener"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// EMFILE ("too many open files") on Linux.
    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning() {
        let attempts = Arc::new(AtomicU64::new(0));
        let mut acceptor = Acceptor::new("test");
        let counted = attempts.clone();
        let window = Duration::from_millis(1500);
        let result = tokio::time::timeout(
            window,
            acceptor.accept(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(emfile()) }
            }),
        )
        .await;
        assert!(result.is_err(), "an always-failing accept never returns");
        let n = attempts.load(Ordering::SeqCst);
        // 10+20+40+...+640 ms fits 7 or 8 tries in 1.5 s; a spinning loop
        // makes millions.
        assert!(
            (3..=20).contains(&n),
            "{n} accept attempts in {window:?}: not backing off"
        );
        assert_eq!(acceptor.failures(), n);
    }

    #[tokio::test]
    async fn a_success_resets_the_backoff() {
        let mut acceptor = Acceptor::new("test");
        let mut fails = 5;
        let started = Instant::now();
        let got = acceptor
            .accept(|| {
                let r = if fails > 0 {
                    fails -= 1;
                    Err(emfile())
                } else {
                    Ok(7)
                };
                async move { r }
            })
            .await;
        assert_eq!(got, 7);
        // 10+20+40+80+160 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(acceptor.backoff, FIRST_BACKOFF);
    }

    #[tokio::test]
    async fn aborted_connections_are_retried_at_once() {
        let mut acceptor = Acceptor::new("test");
        let mut fails = 100;
        let started = Instant::now();
        acceptor
            .accept(|| {
                let r = if fails > 0 {
                    fails -= 1;
                    Err(io::Error::from(io::ErrorKind::ConnectionAborted))
                } else {
                    Ok(())
                };
                async move { r }
            })
            .await;
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(acceptor.failures(), 0);
    }

    #[test]
    fn repeated_events_are_logged_once_per_period_with_a_count() {
        let mut limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.note(t0), Some(1));
        let logged: Vec<_> = (1..=1000)
            .filter_map(|i| limit.note(t0 + Duration::from_millis(i * 25)))
            .collect();
        // 25 s of events every 25 ms: lines at 10 s and 20 s only.
        assert_eq!(logged, vec![400, 400]);
    }

    #[tokio::test]
    async fn a_gate_takes_its_permit_before_accepting() {
        let gate = Gate::new(2);
        let mut acceptor = Acceptor::new("test");
        let accepts = Arc::new(AtomicU64::new(0));
        let accept = || {
            let accepts = accepts.clone();
            async move {
                accepts.fetch_add(1, Ordering::SeqCst);
                Ok::<_, io::Error>(())
            }
        };
        let (_, a) = gate.accept(&mut acceptor, accept).await;
        let (_, b) = gate.accept(&mut acceptor, accept).await;
        assert_eq!(gate.held(), 2);
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            gate.accept(&mut acceptor, accept),
        )
        .await;
        assert!(third.is_err(), "a third connection was let in");
        assert_eq!(accepts.load(Ordering::SeqCst), 2, "accepted over the cap");
        drop(a);
        let (_, c) = gate.accept(&mut acceptor, accept).await;
        assert_eq!(gate.held(), 2);
        assert_eq!(gate.peak(), 2);
        drop((b, c));
        assert_eq!(gate.held(), 0);
    }
}
