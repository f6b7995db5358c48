//! The watches: one kube-rs watcher per resource kind feeding a raw store of summaries, with
//! relists applied only once complete.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use ::kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::*;
/// Spawns the watch of one resource, feeding `shared` in batches.
pub(super) fn spawn_watch<S: Summary>(
    api: Api<S::Object>,
    cfg: watcher::Config,
    shared: &Arc<Shared>,
) -> JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff().ready_chunks(BATCH);
        let mut stream = std::pin::pin!(stream);
        while let Some(events) = stream.next().await {
            shared.apply::<S>(events);
        }
    })
}

/// The part of a Kubernetes object identity needs, and where its store is.
pub(super) trait Summary: Sized + Send + 'static {
    /// The Kubernetes type watched.
    type Object: ::kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static;
    /// Resource name, for logs.
    const RESOURCE: &'static str;
    /// The store key of an object (stable across its updates).
    fn key(obj: &Self::Object) -> String;
    /// Extracts what is needed; `prev` is the object's previous summary (for address claims),
    /// `seq` numbers new claims.
    fn summarize(obj: &Self::Object, prev: Option<&Self>, seq: &mut u64) -> Self;
    /// This summary's store.
    fn store(raw: &mut Raw) -> &mut Store<Self>;
    /// Called with the summaries a delete or a relist removed; `index` is the index before.
    fn departed(_raw: &mut Raw, _removed: Vec<Self>, _index: &Index) {}
}

/// One resource's objects, as of the last event.
#[derive(Debug)]
pub(super) struct Store<T> {
    pub(super) items: HashMap<String, T>,
    /// A relist in progress: replaces `items` when complete.
    pub(super) relist: Option<HashMap<String, T>>,
    /// Whether a complete list has been applied once.
    pub(super) synced: bool,
    /// The last watch error, until the next event.
    pub(super) error: Option<String>,
    /// Claim counter (see the module documentation on IP reuse).
    pub(super) seq: u64,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: HashMap::new(),
            relist: None,
            synced: false,
            error: None,
            seq: 0,
        }
    }
}

impl<S: Summary> Store<S> {
    /// Applies one event; returns the summaries it removed.
    pub(super) fn apply(&mut self, event: watcher::Event<S::Object>) -> Vec<S> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let key = S::key(&obj);
                let v = S::summarize(&obj, self.items.get(&key), &mut self.seq);
                self.relist.get_or_insert_default().insert(key, v);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.items, fresh);
                self.synced = true;
                old.into_iter()
                    .filter(|(k, _)| !self.items.contains_key(k))
                    .map(|(_, v)| v)
                    .collect()
            }
            watcher::Event::Apply(obj) => {
                let key = S::key(&obj);
                let v = S::summarize(&obj, self.items.get(&key), &mut self.seq);
                self.items.insert(key, v);
                Vec::new()
            }
            watcher::Event::Delete(obj) => self.items.remove(&S::key(&obj)).into_iter().collect(),
        }
    }
}

/// Claims on addresses: the first time each current address was seen for this object.
pub(super) fn claims(
    ips: &[IpAddr],
    prev: Option<&HashMap<IpAddr, u64>>,
    seq: &mut u64,
) -> HashMap<IpAddr, u64> {
    ips.iter()
        .map(|ip| {
            let claim = prev.and_then(|p| p.get(ip).copied()).unwrap_or_else(|| {
                *seq += 1;
                *seq
            });
            (*ip, claim)
        })
        .collect()
}

pub(super) fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if let Ok(ip) = ip.parse()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}
