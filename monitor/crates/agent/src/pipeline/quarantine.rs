//! Quarantine in the agent: which pods the policy quarantines, the kernel's enforce set,
//! blocked connection attempts turned into violations, and the periodic attestation.

use std::collections::HashMap;

use super::RecordOut;

use monitor_common::{
    Direction,
    quarantine::{QuarantineDrop, QuarantineStats},
};

use super::{Enforcer, Pipeline, PipelineError};
use crate::identity::PodResolver;
use monitor_record::{
    exchange::Observer, record::Endpoint, record::QuarantineAttestation, record::Record,
};

/// What the agent tracks about quarantined pods.
#[derive(Debug, Default)]
pub(super) struct QuarantineBook {
    /// Since when each pod (`namespace/name`) is quarantined: boot-time ns and RFC 3339.
    pub(super) since: HashMap<String, (u64, String)>,
    /// Pods quarantined now.
    pub(super) pods: HashMap<String, QuarantinedPod>,
    /// The (cgroup id, since) set last written to the kernel.
    pub(super) entries: Vec<(u64, u64)>,
    /// Exchanges/flows seen from or to an enforced pod after enforcement began.
    pub(super) escaped: HashMap<String, u64>,
    /// Blocked connection attempts not yet reported.
    pub(super) drops: Vec<QuarantineDrop>,
}

#[derive(Debug)]
pub(super) struct QuarantinedPod {
    pub(super) pod: std::sync::Arc<monitor_record::peer::Pod>,
    pub(super) since: u64,
    pub(super) reason: String,
    pub(super) enforce: bool,
    pub(super) cgroups: Vec<u64>,
}

impl Pipeline {
    /// Turns blocked connection attempts into quarantine-breach violations.
    pub(super) fn emit_drops(
        &mut self,
        identity: &mut dyn PodResolver,
        out: &mut dyn RecordOut,
    ) -> Result<(), PipelineError> {
        let drops = std::mem::take(&mut self.quarantine.drops);
        for d in drops {
            let observer = if d.dir == Direction::Egress as u8 {
                Observer::Client
            } else {
                Observer::Server
            };
            let (src, dst) = self.endpoints_of(d.hdr.cgroup_id, Some(&d.tuple), observer, identity);
            let Some(engine) = &self.engine else { continue };
            let Some(mut f) = engine.quarantine_finding(&src, &dst) else {
                continue;
            };
            f.message = format!(
                "{}: connection attempt to port {} blocked in the kernel",
                f.message, dst.port
            );
            let time = self.clock.rfc3339(d.hdr.ts_ns);
            let route = format!("tcp/{}", dst.port);
            self.report(
                &[f],
                &src,
                &dst,
                None,
                &route,
                (&time, d.hdr.ts_ns),
                &self.settings.node.clone(),
                None,
                out,
            )?;
        }
        Ok(())
    }

    /// Brings the kernel's quarantine set in line with the policy (enforce mode only) and
    /// remembers since when each pod is quarantined.
    pub fn sync_quarantine(
        &mut self,
        enforcer: &mut dyn Enforcer,
        identity: &mut dyn PodResolver,
        now_ns: u64,
    ) -> Result<(), PipelineError> {
        let mut entries = Vec::new();
        let mut now_quarantined = HashMap::new();
        if let Some(engine) = &self.engine {
            let enforce = engine.enforcing();
            for (pod, cgroup) in identity.pod_cgroups() {
                let ep = Endpoint::new(Some(&pod), pod.ips.first().copied(), 0);
                let Some((_, reason)) = engine.quarantined(&ep) else {
                    continue;
                };
                let key = format!("{}/{}", pod.namespace, pod.name);
                let clock = self.clock;
                let (since, _) = self
                    .quarantine
                    .since
                    .entry(key.clone())
                    .or_insert_with(|| (now_ns, clock.rfc3339(now_ns)));
                let since = *since;
                if enforce {
                    entries.push((cgroup, since));
                }
                let q = now_quarantined
                    .entry(key)
                    .or_insert_with(|| QuarantinedPod {
                        pod: pod.clone(),
                        since,
                        reason,
                        enforce,
                        cgroups: Vec::new(),
                    });
                q.cgroups.push(cgroup);
            }
        }
        entries.sort_unstable();
        if entries != self.quarantine.entries {
            enforcer.set_quarantine(&entries)?;
            tracing::info!(cgroups = entries.len(), "kernel quarantine set updated");
            self.quarantine.entries = entries;
        }
        self.quarantine
            .since
            .retain(|k, _| now_quarantined.contains_key(k));
        self.metrics
            .quarantined_pods
            .set(now_quarantined.len() as i64);
        self.quarantine.pods = now_quarantined;
        Ok(())
    }

    /// Writes one attestation per quarantined pod: since when, attempts blocked, packets and
    /// bytes dropped, and how many exchanges or flows escaped (seen after enforcement: 0).
    pub fn attest_quarantine(
        &mut self,
        enforcer: &dyn Enforcer,
        out: &mut dyn RecordOut,
        now_ns: u64,
    ) -> Result<(), PipelineError> {
        let node = self.settings.node.clone();
        let node = node.as_str();
        if self.quarantine.pods.is_empty() {
            return Ok(());
        }
        let stats = enforcer.quarantine_stats()?;
        let now = self.clock.rfc3339(now_ns);
        let mut pods: Vec<&QuarantinedPod> = self.quarantine.pods.values().collect();
        pods.sort_by(|a, b| a.pod.name.cmp(&b.pod.name));
        let mut lines = Vec::new();
        for q in pods {
            let mut total = QuarantineStats::default();
            for c in &q.cgroups {
                if let Some(s) = stats.get(c) {
                    total.merge(s);
                }
            }
            let key = format!("{}/{}", q.pod.namespace, q.pod.name);
            lines.push(Record::Quarantine(QuarantineAttestation {
                time: now.clone(),
                node: node.to_owned(),
                namespace: q.pod.namespace.clone(),
                pod: q.pod.name.clone(),
                mode: if q.enforce { "enforce" } else { "observe" },
                reason: q.reason.clone(),
                // Rendered once, when first seen: later clock resyncs must not move it.
                since: self
                    .quarantine
                    .since
                    .get(&key)
                    .map_or_else(|| self.clock.rfc3339(q.since), |(_, t)| t.clone()),
                attempts_blocked: total.attempts(),
                packets_dropped: total.packets(),
                bytes_dropped: total.bytes(),
                escaped: self.quarantine.escaped.get(&key).copied().unwrap_or(0),
            }));
        }
        for l in lines {
            self.write(&l, out)?;
        }
        Ok(())
    }

    /// Counts an exchange or flow of a pod under enforced quarantine that got through anyway.
    pub(super) fn note_escape(&mut self, src: &Endpoint, dst: &Endpoint, ns: u64) {
        if self.quarantine.pods.is_empty() {
            return; // the common case: nobody quarantined, nothing to key
        }
        for ep in [src, dst] {
            if let (Some(p), Some(n)) = (ep.pod(), ep.namespace()) {
                let key = format!("{n}/{p}");
                if let Some(q) = self.quarantine.pods.get(&key)
                    && q.enforce
                    && ns > q.since
                {
                    *self.quarantine.escaped.entry(key).or_default() += 1;
                }
            }
        }
    }
}
