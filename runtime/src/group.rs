//! Groups of instances that share units of work (partitions, or one active role) with NATS as
//! the only coordinator: a JetStream KV bucket whose keys expire after the group's TTL.
//!
//! - **Membership.** Each instance writes `<group>.member.<id>` every tick (a fifth of the TTL);
//!   an instance that stops writing (killed, partitioned away) drops out when its key expires.
//! - **Assignment.** Every instance computes the same balanced assignment from the sorted member
//!   list ([`assignment`], pure): each member gets ⌊units/members⌋ or one more, and a unit
//!   stays with the same member as far as the quotas allow (rendezvous hashing), so a join or a
//!   leave moves few units.
//! - **Leases.** A unit is worked on only under its lease `<group>.lease.<unit>`, taken with a
//!   KV create (only if absent) and renewed with a compare-and-set update on its revision. Views
//!   of the member list may differ for a tick; the lease makes sure at most one instance holds a
//!   unit. An instance gives up a unit that is no longer assigned to it gracefully (the worker
//!   stops, makes its progress durable, then the lease is deleted, so the new owner starts at
//!   once); a lease it cannot renew for most of the TTL, or that someone else holds, is **lost**:
//!   the worker stops at once without writing anything.
//! - **Fencing.** A worker checks its lease ([`Lease::confirm`]) right before each durable
//!   write, and its own writes are compare-and-set (a processors checkpoint is), so a paused
//!   instance that wakes up after losing its lease cannot overwrite its successor's state.
//!
//! Why not the server's pinned-client priority groups alone: a pinned consumer hands a new
//! client the *newer* messages first and redelivers what the dead one had not acked only after
//! the ack wait, which reorders an event-time stage's input (the cause of the changed window
//! results in issue 9). Our [`crate::source::Source`] resumes a unit by recreating its consumer
//! right after the last checkpointed sequence instead, and the lease tells it when it may.

use crate::jetstream::{ensure_bucket, provision};
use crate::metrics;
use crate::shutdown::Shutdown;
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use prometheus::{IntCounterVec, IntGauge, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest TTL accepted: below it a busy instance could miss its own renewals.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// Which units each member works on: member → units, for every member (possibly none). Pure
/// and deterministic: every instance computes the same answer from the same member set.
pub fn assignment(members: &BTreeSet<String>, units: u32) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> =
        members.iter().map(|m| (m.clone(), Vec::new())).collect();
    let n = members.len();
    if n == 0 {
        return out;
    }
    let base = units as usize / n;
    let extra = units as usize % n;
    // Which members get one more: the first `extra` by a hash of the member, not by name, so
    // the same instance is not always the one with more.
    let mut by_hash: Vec<&String> = members.iter().collect();
    by_hash.sort_by_key(|m| (fnv1a(m.as_bytes(), u32::MAX), m.as_str()));
    let mut quota: BTreeMap<&str, usize> = by_hash
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), base + usize::from(i < extra)))
        .collect();
    for unit in 0..units {
        let mut ranked: Vec<&String> = members.iter().collect();
        ranked.sort_by_key(|m| (std::cmp::Reverse(fnv1a(m.as_bytes(), unit)), m.as_str()));
        let Some(owner) = ranked.into_iter().find(|m| quota[m.as_str()] > 0) else {
            continue;
        };
        if let Some(q) = quota.get_mut(owner.as_str()) {
            *q -= 1;
        }
        if let Some(v) = out.get_mut(owner) {
            v.push(unit);
        }
    }
    out
}

/// FNV-1a 32 of `bytes` followed by `salt` (little-endian): the rendezvous score.
fn fnv1a(bytes: &[u8], salt: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes.iter().chain(salt.to_le_bytes().iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A group's settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// KV bucket of the service's groups (its `max_age` is the TTL).
    pub bucket: String,
    /// Group name: instances with the same name share the units.
    pub group: String,
    /// How long a member or a lease lives without being renewed.
    pub ttl: Duration,
    /// Replicas of the bucket when this instance creates it.
    pub replicas: usize,
    /// Number of units (partitions; 1 for an active/standby role).
    pub units: u32,
}

/// Checks a group name: a KV key token.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "group name `{name}` must be 1–64 characters of [A-Za-z0-9_-]"
        ))
    }
}

/// [`validate_name`] as a clap value parser (`--group`).
pub fn parse_name(s: &str) -> Result<String, String> {
    validate_name(s).map(|()| s.to_owned())
}

/// A group TTL ("5s") of at least [`MIN_TTL`], as a clap value parser (`--group-ttl`).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = crate::duration::parse(s)?;
    if ttl < MIN_TTL {
        return Err(format!(
            "group TTL `{s}` is below the shortest accepted, {MIN_TTL:?}"
        ));
    }
    Ok(ttl)
}

/// A unique id for this process: host name, process id and start time.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// The right to work on one unit, handed to the worker.
#[derive(Debug, Clone)]
pub struct Lease {
    unit: u32,
    stop: Shutdown,
    lost: Arc<AtomicBool>,
    /// `None` for a static assignment (no group): always held.
    held: Option<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    kv: kv::Store,
    key: String,
    holder: String,
    /// When the last successful write of the lease (create or renewal) was sent: the lease is
    /// this instance's until at least that moment plus the TTL.
    renewed: Arc<std::sync::Mutex<Instant>>,
    /// How long after `renewed` [`Lease::confirm`] trusts it without asking the server: well
    /// inside the TTL.
    trusted_for: Duration,
}

impl Lease {
    /// A lease nobody else can take (static deployments: `--partitions`).
    pub fn unconditional(unit: u32, stop: Shutdown) -> Lease {
        Lease {
            unit,
            stop,
            lost: Arc::new(AtomicBool::new(false)),
            held: None,
        }
    }

    /// The unit.
    pub fn unit(&self) -> u32 {
        self.unit
    }

    /// Triggered when the worker must stop: process shutdown, the unit given up (rebalance),
    /// or the lease lost ([`Lease::is_lost`]).
    pub fn stop(&self) -> &Shutdown {
        &self.stop
    }

    /// The lease was lost: stop without writing anything.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Whether the unit can be taken away at all (a group lease, not a static one).
    pub fn is_group(&self) -> bool {
        self.held.is_some()
    }

    /// Marks the lease lost (say, a compare-and-set write of the worker found a newer owner's)
    /// and stops the worker.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.stop.trigger();
    }

    /// Right before a durable write: is the lease still this instance's? `Ok(false)` marks it
    /// lost; `Err` when NATS did not answer (the write would fail too: retry).
    pub async fn confirm(&self) -> Result<bool, String> {
        if self.is_lost() {
            return Ok(false);
        }
        let Some(h) = &self.held else {
            return Ok(true);
        };
        // Nobody can take a lease before it expires, a TTL after its last write: shortly after
        // a renewal, no need to ask (this keeps a read off every batch of a busy stage). A
        // process paused past that, or cut off from renewing, asks.
        let renewed = *h.renewed.lock().unwrap_or_else(|p| p.into_inner());
        if renewed.elapsed() < h.trusted_for {
            return Ok(true);
        }
        let entry = h.kv.entry(h.key.clone()).await.map_err(|e| e.to_string())?;
        let mine = entry.is_some_and(|e| {
            e.operation == kv::Operation::Put && e.value.as_ref() == h.holder.as_bytes()
        });
        if !mine {
            tracing::warn!(key = %h.key, "lease no longer held by this instance");
            self.lose();
        }
        Ok(mine)
    }
}

/// The group's metrics, named `<prefix>_group_*`.
#[derive(Debug, Clone)]
pub struct GroupMetrics {
    members: IntGauge,
    owned: IntGauge,
    acquired: prometheus::IntCounter,
    released: IntCounterVec,
}

impl GroupMetrics {
    /// Registers the metrics in `r`.
    pub fn new(r: &Registry, prefix: &str) -> prometheus::Result<GroupMetrics> {
        Ok(GroupMetrics {
            members: metrics::int_gauge(
                r,
                &format!("{prefix}_group_members"),
                "Instances in this instance's group, as it last saw them.",
            )?,
            owned: metrics::int_gauge(
                r,
                &format!("{prefix}_group_units_owned"),
                "Units (partitions, or the active role) this instance holds a lease on.",
            )?,
            acquired: metrics::int_counter(
                r,
                &format!("{prefix}_group_acquired_total"),
                "Leases taken by this instance.",
            )?,
            released: metrics::int_counter_vec(
                r,
                &format!("{prefix}_group_released_total"),
                "Leases given up by this instance, by reason (rebalance, lost, shutdown, ended).",
                &["reason"],
            )?,
        })
    }
}

/// Runs one unit under its lease until the lease's stop; `Err` is fatal for the process.
pub trait Worker: Send + Sync + 'static {
    /// Works on `lease.unit()` until `lease.stop()`.
    fn run(&self, lease: Lease) -> BoxFuture<'static, anyhow::Result<()>>;
}

impl<F, Fut> Worker for F
where
    F: Fn(Lease) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    fn run(&self, lease: Lease) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self(lease))
    }
}

/// Opens (or creates) the group bucket, retrying at start-up like every provisioning
/// ([`provision`]); refuses one whose TTL differs from `config.ttl`. `Ok(None)` on shutdown.
pub async fn open_bucket(
    js: &async_nats::jetstream::Context,
    config: &GroupConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<kv::Store>> {
    let desired = kv::Config {
        bucket: config.bucket.clone(),
        description: "citypulse: group members and leases (keys expire after the TTL)".to_owned(),
        history: 1,
        max_age: config.ttl,
        storage: StorageType::File,
        num_replicas: config.replicas.max(1),
        ..Default::default()
    };
    let what = format!("group bucket {}", config.bucket);
    let opened = provision(&what, shutdown, || async {
        let store = ensure_bucket(js, desired.clone()).await?;
        let ttl = store.status().await?.max_age();
        Ok((store, ttl))
    })
    .await?;
    let Some((store, ttl)) = opened else {
        return Ok(None);
    };
    anyhow::ensure!(
        ttl == config.ttl,
        "group bucket {} expires keys after {ttl:?}, but this instance's group TTL is {:?}: every \
         instance of a service must use the same TTL (or delete the bucket while all are stopped)",
        config.bucket,
        config.ttl
    );
    Ok(Some(store))
}

struct Running {
    lease: Lease,
    revision: u64,
    /// When the last successful renewal was sent.
    renewed: Instant,
    releasing: bool,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// This instance's membership in a group and the leases it holds.
pub struct Member<W: Worker> {
    kv: kv::Store,
    config: GroupConfig,
    id: String,
    worker: Arc<W>,
    metrics: GroupMetrics,
    running: BTreeMap<u32, Running>,
    heartbeat_ok: Instant,
    /// Keep a unit this instance holds even when the assignment names another member.
    sticky: bool,
}

impl<W: Worker> Member<W> {
    /// A member of `config.group` in the bucket `kv`, running `worker` on the units it holds.
    pub fn new(kv: kv::Store, config: GroupConfig, worker: W, metrics: GroupMetrics) -> Member<W> {
        Member {
            kv,
            config,
            id: instance_id(),
            worker: Arc::new(worker),
            metrics,
            running: BTreeMap::new(),
            heartbeat_ok: Instant::now(),
            sticky: false,
        }
    }

    /// Keeps the units this instance holds until it stops or loses them, instead of handing
    /// them to the member the assignment names: for an active/standby role (one unit), where a
    /// joining instance should stand by rather than take the role over. A free unit is still
    /// taken only by the member it is assigned to.
    pub fn sticky(mut self) -> Member<W> {
        self.sticky = true;
        self
    }

    /// This instance's id in the group.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn member_key(&self, id: &str) -> String {
        format!("{}.member.{id}", self.config.group)
    }

    fn lease_key(&self, unit: u32) -> String {
        format!("{}.lease.{unit}", self.config.group)
    }

    fn tick_every(&self) -> Duration {
        (self.config.ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Takes part in the group until `shutdown`: then stops the workers gracefully, gives their
    /// leases back and leaves. Returns the first worker error (after stopping the others).
    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(group = %self.config.group, instance = %self.id, ttl = ?self.config.ttl,
            units = self.config.units, "joining the group");
        let mut every = shutdown.every(self.tick_every());
        let mut ticks = 0u32;
        let result = loop {
            if !every.tick().await {
                break Ok(());
            }
            ticks += 1;
            // Acquire from the second tick on: the first one wrote this member's key, so an
            // instance started at about the same time has seen it by then (and this one has
            // seen every member that was alive before it started). A member alone in its group
            // acquires at once (a single instance starts working without a tick's delay).
            if let Err(e) = self.turn(ticks > 1, &shutdown).await {
                break Err(e);
            }
        };
        self.leave().await;
        result
    }

    /// One tick: reap ended workers, heartbeat, renew, rebalance.
    async fn turn(&mut self, may_acquire: bool, shutdown: &Shutdown) -> anyhow::Result<()> {
        self.reap().await?;
        self.heartbeat().await;
        self.renew().await;
        // Listing reads a stream of keys: bounded, so a server that went away mid-listing
        // (its ordered consumer gone) cannot stall the renewals.
        let listing = tokio::time::timeout(self.config.ttl / 2, self.members()).await;
        let Ok(Some(members)) = listing else {
            if listing.is_err() {
                tracing::warn!("listing group members timed out");
            }
            return Ok(());
        };
        self.metrics.members.set(members.len() as i64);
        let mine: BTreeSet<u32> = assignment(&members, self.config.units)
            .remove(&self.id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (unit, r) in &mut self.running {
            if !mine.contains(unit) && !r.releasing && !self.sticky {
                tracing::info!(unit, "unit assigned to another member; handing it over");
                r.releasing = true;
                r.lease.stop.trigger();
            }
        }
        if may_acquire || members.len() == 1 {
            for unit in mine {
                if !self.running.contains_key(&unit) {
                    self.acquire(unit, shutdown).await;
                }
            }
        }
        self.metrics.owned.set(self.running.len() as i64);
        Ok(())
    }

    async fn heartbeat(&mut self) {
        let key = self.member_key(&self.id);
        match self.kv.put(key, Bytes::from(self.id.clone())).await {
            Ok(_) => self.heartbeat_ok = Instant::now(),
            Err(e) => tracing::warn!(error = %e, "group heartbeat failed"),
        }
    }

    /// The members whose keys have not expired, this instance included.
    async fn members(&self) -> Option<BTreeSet<String>> {
        let prefix = format!("{}.member.", self.config.group);
        let mut keys = match self.kv.keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "listing group members failed");
                return None;
            }
        };
        let mut members = BTreeSet::new();
        while let Some(key) = keys.next().await {
            match key {
                Ok(k) => {
                    if let Some(id) = k.strip_prefix(&prefix) {
                        members.insert(id.to_owned());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing group members failed");
                    return None;
                }
            }
        }
        members.insert(self.id.clone());
        Some(members)
    }

    /// Renews every lease; one that someone else holds, or that could not be renewed for most
    /// of the TTL (it may have expired at the server), is lost.
    async fn renew(&mut self) {
        let limit = self.config.ttl.mul_f32(0.8);
        for (unit, r) in &mut self.running {
            if r.lease.is_lost() {
                continue;
            }
            let sent = Instant::now();
            let key = format!("{}.lease.{unit}", self.config.group);
            match self
                .kv
                .update(&key, Bytes::from(self.id.clone()), r.revision)
                .await
            {
                Ok(revision) => {
                    r.revision = revision;
                    r.renewed = sent;
                    if let Some(h) = &r.lease.held {
                        *h.renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent;
                    }
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(
                        unit,
                        "lease taken over or expired; stopping the unit at once"
                    );
                    r.lease.lose();
                }
                Err(e) if r.renewed.elapsed() > limit => {
                    tracing::warn!(unit, error = %e, "lease not renewed for most of its TTL; stopping the unit at once");
                    r.lease.lose();
                }
                Err(e) => tracing::warn!(unit, error = %e, "renewing a lease failed; retrying"),
            }
        }
    }

    async fn acquire(&mut self, unit: u32, shutdown: &Shutdown) {
        let key = self.lease_key(unit);
        let sent = Instant::now();
        let Ok(revision) = self.kv.create(&key, Bytes::from(self.id.clone())).await else {
            // Held by someone else (until they hand it over or it expires), or NATS is down.
            return;
        };
        tracing::info!(unit, revision, "lease taken");
        self.metrics.acquired.inc();
        let lease = Lease {
            unit,
            stop: shutdown.child(),
            lost: Arc::new(AtomicBool::new(false)),
            held: Some(Held {
                kv: self.kv.clone(),
                key,
                holder: self.id.clone(),
                renewed: Arc::new(std::sync::Mutex::new(sent)),
                trusted_for: self.config.ttl / 2,
            }),
        };
        let task = tokio::spawn(self.worker.run(lease.clone()));
        self.running.insert(
            unit,
            Running {
                lease,
                revision,
                renewed: sent,
                releasing: false,
                task,
            },
        );
    }

    /// Collects ended workers: gives their leases back (unless lost); a worker error is fatal.
    async fn reap(&mut self) -> anyhow::Result<()> {
        let ended: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(u, _)| *u)
            .collect();
        for unit in ended {
            let Some(r) = self.running.remove(&unit) else {
                continue;
            };
            let result = r.task.await.map_err(anyhow::Error::from).and_then(|x| x);
            self.give_back(unit, &r.lease, r.revision, r.releasing)
                .await;
            result.map_err(|e| e.context(format!("unit {unit}")))?;
        }
        Ok(())
    }

    async fn give_back(&self, unit: u32, lease: &Lease, revision: u64, releasing: bool) {
        let reason = if lease.is_lost() {
            "lost"
        } else if releasing {
            "rebalance"
        } else if lease.stop.is_triggered() {
            "shutdown"
        } else {
            "ended"
        };
        self.metrics.released.with_label_values(&[reason]).inc();
        if lease.is_lost() {
            return;
        }
        let key = self.lease_key(unit);
        if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            tracing::debug!(unit, error = %e, "lease not deleted; it will expire");
        } else {
            tracing::info!(unit, reason, "lease given back");
        }
    }

    /// Stops every worker gracefully, gives the leases back and removes the member key.
    async fn leave(&mut self) {
        for r in self.running.values() {
            r.lease.stop.trigger();
        }
        let running = std::mem::take(&mut self.running);
        for (unit, r) in running {
            if let Err(e) = r.task.await.map_err(anyhow::Error::from).and_then(|x| x) {
                tracing::error!(unit, error = %format!("{e:#}"), "unit failed while stopping");
            }
            self.give_back(unit, &r.lease, r.revision, false).await;
        }
        self.metrics.owned.set(0);
        let _ = self.kv.delete(self.member_key(&self.id)).await;
        tracing::info!(group = %self.config.group, instance = %self.id, "left the group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|i| format!("host-{i}-{:08x}", i * 7919))
            .collect()
    }

    fn owner_of(a: &BTreeMap<String, Vec<u32>>) -> BTreeMap<u32, String> {
        a.iter()
            .flat_map(|(m, us)| us.iter().map(move |u| (*u, m.clone())))
            .collect()
    }

    #[test]
    fn every_unit_has_exactly_one_owner_and_loads_differ_by_at_most_one() {
        for n in 1..=9 {
            for units in [1u32, 2, 7, 8, 64] {
                let a = assignment(&members(n), units);
                let owners = owner_of(&a);
                assert_eq!(owners.len(), units as usize, "n={n} units={units}");
                let loads: Vec<usize> = a.values().map(Vec::len).collect();
                let (min, max) = (loads.iter().min().copied(), loads.iter().max().copied());
                assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1, "{loads:?}");
                assert_eq!(loads.iter().sum::<usize>(), units as usize);
            }
        }
    }

    #[test]
    fn three_members_share_eight_partitions_two_or_three_each() {
        let a = assignment(&members(3), 8);
        let mut loads: Vec<usize> = a.values().map(Vec::len).collect();
        loads.sort_unstable();
        assert_eq!(loads, vec![2, 3, 3]);
    }

    #[test]
    fn the_assignment_depends_only_on_the_member_set() {
        let m = members(4);
        let reversed: BTreeSet<String> = m.iter().rev().cloned().collect();
        assert_eq!(assignment(&m, 8), assignment(&reversed, 8));
    }

    #[test]
    fn a_join_or_a_leave_moves_few_units() {
        // Contiguous blocks would move most of 64 units when a fourth member joins; rendezvous
        // hashing under quotas moves about a quarter.
        let three = owner_of(&assignment(&members(3), 64));
        let four = owner_of(&assignment(&members(4), 64));
        let moved = (0..64).filter(|u| three[u] != four[u]).count();
        assert!(moved <= 32, "{moved} of 64 units moved on a join");
        // A leave: the units of the survivors mostly stay.
        let gone = members(4).into_iter().next().unwrap_or_default();
        let survivors: BTreeSet<String> = members(4).into_iter().filter(|m| *m != gone).collect();
        let after = owner_of(&assignment(&survivors, 64));
        let kept = (0..64)
            .filter(|u| four[u] != gone && after[u] == four[u])
            .count();
        let had = (0..64).filter(|u| four[u] != gone).count();
        assert!(
            kept * 4 >= had * 3,
            "only {kept} of {had} survivors' units stayed"
        );
    }

    #[test]
    fn no_members_no_assignment_and_names_are_checked() {
        assert!(assignment(&BTreeSet::new(), 8).is_empty());
        assert!(validate_name("citypulse").is_ok());
        assert!(validate_name("a.b").is_err());
        assert!(validate_name("").is_err());
        assert_eq!(parse_ttl("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_ttl("1s").is_err() && parse_ttl("x").is_err());
        let id = instance_id();
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
