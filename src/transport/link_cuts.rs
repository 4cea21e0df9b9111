//! In-process fault injection for machines where real partitions (network namespaces) are not
//! available: a node can be told to stop talking to some peers. Off unless the process starts
//! with `UNRDF_CONSENSUS_FAULT_HOOKS=1`; chaos runs use it only where they say so loudly.
//!
//! With the hooks on, `UNRDF_CONSENSUS_LINK_DELAY_MS` also holds back every request a node sends
//! to its peers by that many milliseconds, in order: loopback has no round trip to speak of, and
//! the benchmark uses this (`--link-delay-ms`) to show what a network's round trip costs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The environment variable that enables link cuts in a node process.
pub const FAULT_HOOKS_ENV: &str = "UNRDF_CONSENSUS_FAULT_HOOKS";

/// With the hooks on: how long each request to a peer is held back, in milliseconds.
pub const LINK_DELAY_ENV: &str = "UNRDF_CONSENSUS_LINK_DELAY_MS";

/// Which peers this node is cut off from, per direction of connection set-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cuts {
    /// Peers this node does not dial; its connections to them are dropped.
    pub outbound: BTreeSet<String>,
    /// Peers whose connections this node does not accept; those it holds are dropped.
    pub inbound: BTreeSet<String>,
}

#[derive(Clone)]
pub struct LinkCuts {
    cuts: Arc<watch::Sender<Cuts>>,
    /// How long each outbound request is held back (`LINK_DELAY_ENV`).
    pub delay: Option<Duration>,
}

impl std::fmt::Debug for LinkCuts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cuts.borrow().fmt(f)
    }
}

impl LinkCuts {
    /// Link cuts when the environment enables them, else `None`.
    pub fn from_env() -> Option<LinkCuts> {
        let enabled = std::env::var(FAULT_HOOKS_ENV).is_ok_and(|v| v == "1");
        let delay = std::env::var(LINK_DELAY_ENV)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        enabled.then(|| LinkCuts {
            cuts: Arc::new(watch::Sender::new(Cuts::default())),
            delay,
        })
    }

    pub fn set(&self, cuts: Cuts) {
        self.cuts.send_replace(cuts);
    }

    pub fn is_cut(&self, peer: &str, direction: fn(&Cuts, &str) -> bool) -> bool {
        direction(&self.cuts.borrow(), peer)
    }

    pub fn subscribe(&self) -> watch::Receiver<Cuts> {
        self.cuts.subscribe()
    }
}

/// Resolves once `peer` gets cut in `direction`; never when link cuts are off.
pub async fn until_cut(cuts: Option<&LinkCuts>, peer: &str, direction: fn(&Cuts, &str) -> bool) {
    let Some(mut rx) = cuts.map(LinkCuts::subscribe) else {
        return std::future::pending().await;
    };
    loop {
        if direction(&rx.borrow_and_update(), peer) {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

pub fn outbound_cut(cuts: &Cuts, peer: &str) -> bool {
    cuts.outbound.contains(peer)
}

pub fn inbound_cut(cuts: &Cuts, peer: &str) -> bool {
    cuts.inbound.contains(peer)
}
