//! Single-use tokens for streaming URLs.
//!
//! The CRI call (Exec, Attach, PortForward) is authorised by the CRI
//! socket; the URL it returns is the only credential the streaming client
//! holds. So a token is random (128 bits), works once, and expires after
//! a short time, as kubelet's streaming server does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;

/// Where a token is only worth something this long.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Outstanding tokens at most; kubelet's server allows the same.
pub const MAX_PENDING: usize = 1000;

pub struct TokenCache<T> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, (Instant, T)>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("too many streaming requests are waiting for a client ({0}); retry shortly")]
    Full(usize),
    #[error("cannot generate a token: {0}")]
    Random(String),
}

impl<T> TokenCache<T> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TokenCache {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// Stores `value` and returns its new token.
    pub fn insert(&mut self, value: T, now: Instant) -> Result<String, TokenError> {
        self.expire(now);
        if self.entries.len() >= self.capacity {
            return Err(TokenError::Full(self.capacity));
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| TokenError::Random(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.entries.insert(token.clone(), (now + self.ttl, value));
        Ok(token)
    }

    /// Takes the value of a token that is still valid; the token is gone
    /// afterwards, whatever the outcome.
    pub fn take(&mut self, token: &str, now: Instant) -> Option<T> {
        let (expires, value) = self.entries.remove(token)?;
        (now < expires).then_some(value)
    }

    fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, (expires, _)| now < *expires);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let mut cache = TokenCache::new(TOKEN_TTL, 10);
        let now = Instant::now();
        let token = cache.insert("exec", now).unwrap();
        assert_eq!(token.len(), 22, "128 random bits, base64url");
        assert_eq!(cache.take(&token, now), Some("exec"));
        assert_eq!(cache.take(&token, now), None);
    }

    #[test]
    fn tokens_are_distinct_and_unguessable() {
        let mut cache = TokenCache::new(TOKEN_TTL, 100);
        let now = Instant::now();
        let a = cache.insert(1, now).unwrap();
        let b = cache.insert(2, now).unwrap();
        assert_ne!(a, b);
        assert_eq!(cache.take("", now), None);
        assert_eq!(cache.take(&a[..10], now), None);
    }

    #[test]
    fn an_expired_token_is_refused_and_dropped() {
        let mut cache = TokenCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let token = cache.insert((), now).unwrap();
        assert_eq!(cache.take(&token, now + Duration::from_secs(61)), None);
        let _ = cache.insert((), now).unwrap();
        let _ = cache.insert((), now + Duration::from_secs(120)).unwrap();
        assert_eq!(cache.len(), 1, "expired entries are swept on insert");
    }

    #[test]
    fn capacity_is_bounded() {
        let mut cache = TokenCache::new(TOKEN_TTL, 2);
        let now = Instant::now();
        cache.insert((), now).unwrap();
        cache.insert((), now).unwrap();
        assert_eq!(cache.insert((), now), Err(TokenError::Full(2)));
    }
}
