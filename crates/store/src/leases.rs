//! Leases shared by keys that should expire at about the same time (Events), as
//! kube-apiserver's etcd3 lease manager does: one lease per reuse window, not one per
//! key, so a burst of a thousand Events costs one lease grant.
//!
//! ```text
//!  lease_for(ttl) at t ── the current lease was granted at g ≤ t ≤ g + REUSE
//!                          with the same ttl? ──yes──▶ reuse it (expires g + ttl + REUSE)
//!                                          └──no───▶ grant ttl + REUSE, remember it
//! ```
//!
//! A key attached at `t` lives at least `ttl` (`g + ttl + REUSE ≥ t + ttl`) and at most
//! `ttl + REUSE`.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{Backend, LeaseId, Result};

/// The longest a lease is shared: a key may outlive its TTL by this much.
pub const REUSE: Duration = Duration::from_secs(60);

/// The lease keys of one TTL are attached to now.
#[derive(Debug, Default)]
pub struct LeaseManager {
    current: Mutex<Option<Shared>>,
}

#[derive(Debug, Clone, Copy)]
struct Shared {
    id: LeaseId,
    ttl: Duration,
    granted: Instant,
}

impl LeaseManager {
    /// The window for `ttl`: [`REUSE`], or 5% of a short TTL, so that a short-lived key
    /// does not live twice as long as asked.
    fn window(ttl: Duration) -> Duration {
        REUSE.min(ttl / 20)
    }

    /// A lease under which a key written now lives at least `ttl`.
    ///
    /// # Errors
    /// The backend's, from granting a lease.
    pub async fn lease_for(&self, backend: &dyn Backend, ttl: Duration) -> Result<LeaseId> {
        let mut current = self.current.lock().await;
        let now = Instant::now();
        if let Some(s) = *current
            && s.ttl == ttl
            && now.duration_since(s.granted) <= Self::window(ttl)
        {
            return Ok(s.id);
        }
        let id = backend.lease_grant(ttl + Self::window(ttl)).await?;
        *current = Some(Shared {
            id,
            ttl,
            granted: now,
        });
        Ok(id)
    }

    /// Forgets the current lease (it was not found: revoked, or the store restarted).
    pub async fn forget(&self, id: LeaseId) {
        let mut current = self.current.lock().await;
        if current.is_some_and(|s| s.id == id) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test(start_paused = true)]
    async fn keys_written_within_the_window_share_a_lease_and_later_ones_get_a_new_one() {
        let store = Store::memory();
        let m = LeaseManager::default();
        let hour = Duration::from_secs(3600);
        let a = m.lease_for(&*store, hour).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(m.lease_for(&*store, hour).await.unwrap(), a);
        let other_ttl = m
            .lease_for(&*store, Duration::from_secs(600))
            .await
            .unwrap();
        assert_ne!(other_ttl, a, "another TTL gets its own lease");
        let b = m.lease_for(&*store, hour).await.unwrap();
        assert_ne!(b, a);
        tokio::time::advance(REUSE + Duration::from_secs(1)).await;
        assert_ne!(
            m.lease_for(&*store, hour).await.unwrap(),
            b,
            "past the window"
        );
    }

    #[test]
    fn short_ttls_get_a_short_window() {
        assert_eq!(LeaseManager::window(Duration::from_secs(3600)), REUSE);
        assert_eq!(
            LeaseManager::window(Duration::from_secs(20)),
            Duration::from_secs(1)
        );
    }
}
