//! Publishing a group of messages durably ([`publish_all`]), and the one dead-letter builder
//! ([`dead_letter`]) every service uses.

use crate::jetstream::{publish_durably, PublishError};
use crate::shutdown::Shutdown;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use citypulse_schema::streams;
use futures::StreamExt;

/// [`publish_all`]'s window: publishes sent before their acks are awaited together. Also the
/// bound on reordering: a publish lost with a dropped connection is retried after the rest of
/// its window landed, so a message can be stored at most this many places behind a newer one of
/// the same call. Publishers of ordered data send larger windows that never hold a subject twice
/// ([`Windows::subject_once`]) nor two epochs ([`Outgoing::epoch`]).
pub const WINDOW: usize = 64;

/// A dead letter's body is the original payload, cut to this size: large enough for any
/// plausible message, small enough that a megabyte of garbage cannot make the dead letter itself
/// unpublishable and stall the stream.
pub const MAX_DEAD_LETTER_BODY: usize = 64 * 1024;

/// Header of a dead letter whose body was cut: the original payload length in bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "Citypulse-Original-Size";

/// Longest `Citypulse-Detail` value, in characters.
const MAX_DETAIL_CHARS: usize = 256;

/// One message to publish through JetStream with a deterministic `Nats-Msg-Id`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject.
    pub subject: String,
    /// `Nats-Msg-Id`: derived from the data, so a retry or a replay is deduplicated.
    pub msg_id: String,
    /// Other headers.
    pub headers: HeaderMap,
    /// The body.
    pub payload: Bytes,
    /// The publisher's order among its messages (0 unless set): a window never holds two epochs,
    /// so every message of one is stored before any message after it of another, retries
    /// included. The processors give a window result its `window_end`: a retried result can land
    /// behind others of its window end, never behind a newer window of its district, which the
    /// alerts' offline and silence checks would judge it against.
    pub epoch: u64,
}

impl Outgoing {
    /// A message with no headers but its id, in epoch 0.
    pub fn new(subject: String, msg_id: String, payload: Bytes) -> Outgoing {
        Outgoing {
            subject,
            msg_id,
            headers: HeaderMap::new(),
            payload,
            epoch: 0,
        }
    }

    /// The message in `epoch` ([`Outgoing::epoch`]).
    #[must_use]
    pub fn in_epoch(mut self, epoch: u64) -> Outgoing {
        self.epoch = epoch;
        self
    }
}

/// Publishes `messages` in order, up to [`WINDOW`] (64) awaiting their acks at once, and returns
/// every ack, in order. A publish that is not acknowledged is retried with the same
/// `Nats-Msg-Id` (the server drops the copy if the first attempt landed) with capped back-off
/// until acked or shutdown; `on_retry` gets a bounded reason per failed attempt.
///
/// A window is sent at once with one reply subscription and one deadline (5 s) for all its acks
/// (`send_window`); only messages whose acks could not be placed (the whole
/// window when an ack is lost with the connection or a reply is an error; a message too close to
/// `max_payload` for the fast path) are then published again through `js`, one at a time, which
/// also reports why one failed. Awaiting acks one by one after a server restart (which loses them
/// all) would take a timeout per message.
pub async fn publish_all(
    js: &Context,
    messages: &[Outgoing],
    shutdown: &Shutdown,
    on_retry: &(dyn Fn(&'static str) + Sync),
) -> Result<Vec<PublishAck>, PublishError> {
    publish_in_windows(js, messages, Windows::PER_MESSAGE, shutdown, on_retry).await
}

/// How [`publish_in_windows`] cuts its messages into windows (publishes sent before their acks
/// are awaited together), and what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Most publishes in a window (at least 1 is sent). A larger window costs the publisher
    /// fewer round trips and nats-server less CPU per message (docs/benchmarks.md), and lets a
    /// retried message land up to that many places behind a newer one.
    pub max: usize,
    /// Whether each ack is placed with its message.
    pub acks: Acks,
    /// A window also ends before a message whose subject it already holds. Then a retried
    /// message may land behind newer messages of other subjects, never behind a newer one of
    /// its own: a device's readings and a subject's window results stay in order, whatever
    /// `max` is, for consumers that drop what is older than the last they saw of a subject.
    pub subject_once: bool,
}

impl Windows {
    /// [`publish_all`]'s: [`WINDOW`], each ack placed with its message, subjects repeated
    /// freely (ingest's dead letters share `dlq.<reason>`).
    pub const PER_MESSAGE: Windows = Windows {
        max: WINDOW,
        acks: Acks::PerMessage,
        subject_once: false,
    };

    /// Up to `max` publishes per window, their acks counted, each subject at most once per
    /// window: for a stream of data per subject (a device's readings, window results).
    pub const fn counted_in_subject_order(max: usize) -> Windows {
        Windows {
            max,
            acks: Acks::Counted,
            subject_once: true,
        }
    }

    /// `messages` cut into these windows, in order; every message in exactly one. A window also
    /// ends before a message of another epoch than its first ([`Outgoing::epoch`]), whatever
    /// the windows.
    pub fn split(self, messages: &[Outgoing]) -> impl Iterator<Item = &[Outgoing]> {
        let max = self.max.max(1);
        let mut rest = messages;
        let mut seen = std::collections::HashSet::new();
        std::iter::from_fn(move || {
            let epoch = rest.first()?.epoch;
            let mut len = rest.len().min(max);
            len = rest[..len]
                .iter()
                .position(|m| m.epoch != epoch)
                .unwrap_or(len);
            if self.subject_once {
                seen.clear();
                len = rest[..len]
                    .iter()
                    .position(|m| !seen.insert(m.subject.as_str()))
                    .unwrap_or(len);
            }
            let (window, tail) = rest.split_at(len);
            rest = tail;
            Some(window)
        })
    }
}

/// What [`publish_in_windows`] returns: which ack is whose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Each message's own ack, in the messages' order. A window whose acks cannot be told apart
    /// by their order (a duplicate among them, two streams; see `Round::shared`) is sent again
    /// with a reply subject per message; a core NATS subscriber of the subjects then sees those
    /// messages twice.
    PerMessage,
    /// One ack per message, every message stored, but in the order the acks came: the
    /// `duplicate` count is exact, which ack is whose is not known. For a publisher that only
    /// counts them (the simulator's readings, the processors' results and replays): a window is
    /// never sent twice for the sake of its acks, so a core subscriber sees each message once
    /// unless a publish is lost and retried.
    Counted,
}

/// [`publish_all`] in other [`Windows`]: larger ones, their acks merely counted, and each
/// subject at most once per window ([`Windows::counted_in_subject_order`]). The simulator
/// publishes a device's readings in windows of its `--max-in-flight`, the processors their
/// window results in windows of 512, one window end at a time ([`Outgoing::epoch`]).
pub async fn publish_in_windows(
    js: &Context,
    messages: &[Outgoing],
    windows: Windows,
    shutdown: &Shutdown,
    on_retry: &(dyn Fn(&'static str) + Sync),
) -> Result<Vec<PublishAck>, PublishError> {
    let mut acks = Vec::with_capacity(messages.len());
    let client = js.client();
    // A message near the server's limit goes the careful way: the context checks its size
    // exactly, and one the server would refuse never reaches it (that would close the
    // connection).
    let room = client.server_info().max_payload.saturating_sub(HEADROOM);
    for window in windows.split(messages) {
        let placed = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                return Err(PublishError::Cancelled { subject: window[0].subject.clone() });
            }
            placed = send_window(&client, window, room, windows.acks) => placed,
        };
        let Placed {
            acks: placed,
            stored,
        } = placed;
        for (m, ack) in window.iter().zip(placed) {
            let mut ack = match ack {
                Some(ack) => ack,
                None => {
                    on_retry("ack");
                    publish_durably(js, m, shutdown, on_retry).await?
                }
            };
            // Sent again after a first round that stored it: new to the stream, all the same.
            if ack.duplicate && stored_first(&stored, &ack) {
                ack.duplicate = false;
            }
            acks.push(ack);
        }
    }
    Ok(acks)
}

/// Sends a window of messages and collects their acks within [`ACK_TIMEOUT`] on one subscription
/// to `<inbox>.>`; `None` for a message not sent (one larger than `room` bytes is not), not
/// answered in time, or answered with an error (the caller retries those one by one through the
/// JetStream context, which reports why).
///
/// This is what a JetStream context's publish does, less its per-message costs: no request
/// multiplexer entry, ack channel, in-flight permit and timer per message, one subscription and
/// one deadline per window instead. And first, one reply subject for the whole window
/// ([`Round::shared`]): the server delivers every ack of the window to the same subject, which
/// costs it less than a new subject per message (about a tenth of its CPU per window result in
/// the processors' stage, docs/benchmarks.md). Only when those acks cannot be told apart safely
/// is the window sent again with a reply subject per message ([`Round::indexed`]).
async fn send_window(
    client: &async_nats::Client,
    window: &[Outgoing],
    room: usize,
    attribution: Acks,
) -> Placed {
    let unplaced = |stored| Placed {
        acks: vec![None; window.len()],
        stored,
    };
    let inbox = client.new_inbox();
    let Ok(replies) = client.subscribe(format!("{inbox}.>")).await else {
        return unplaced(Vec::new());
    };
    let mut round = Round {
        client,
        replies,
        inbox,
        window,
        room,
    };
    let (first, acks) = match round.shared(attribution).await {
        Shared::Acked(acks) => {
            return Placed {
                acks,
                stored: Vec::new(),
            }
        }
        Shared::Failed(first) => (first, None),
        Shared::Unattributable(first) => (first, Some(round.indexed().await)),
    };
    let stored = first
        .into_iter()
        .filter(|a| !a.duplicate)
        .map(|a| (a.stream, a.sequence))
        .collect();
    match acks {
        Some(acks) => Placed { acks, stored },
        None => unplaced(stored),
    }
}

/// A window's acks as [`send_window`] could place them.
struct Placed {
    /// Each message's ack; `None` to publish it again through the context.
    acks: Vec<Option<PublishAck>>,
    /// What a first round stored that was then sent again: (stream, sequence) of messages new
    /// to the stream, which a second sending is told are duplicates.
    stored: Vec<(String, u64)>,
}

/// Whether `ack` names a message a first round stored (one of `stored`).
fn stored_first(stored: &[(String, u64)], ack: &PublishAck) -> bool {
    stored
        .iter()
        .any(|(stream, seq)| *seq == ack.sequence && *stream == ack.stream)
}

/// What came back for a window sent with one reply subject.
enum Shared {
    /// Every message sent was stored, and each ack is its own message's.
    Acked(Vec<Option<PublishAck>>),
    /// Every message sent was acked (these acks, as they came), but their order may not be the
    /// order of the messages.
    Unattributable(Vec<PublishAck>),
    /// An ack did not come in time, or a reply was not an ack (the acks that did come).
    Failed(Vec<PublishAck>),
}

/// One window on its way: the connection, the subscription to `<inbox>.>` its acks come to,
/// and the messages (those larger than `room` bytes are not sent).
struct Round<'a> {
    client: &'a async_nats::Client,
    replies: async_nats::Subscriber,
    inbox: String,
    window: &'a [Outgoing],
    room: usize,
}

impl Round<'_> {
    /// Sends the window with the reply subject `<inbox>.all` and takes the acks in the order
    /// they come. A stream stores one connection's messages in the order they arrive and acks
    /// each as it is stored, so that order is the messages' order — for messages stored by one
    /// stream, each newly. A duplicate is answered at once (in a cluster, ahead of earlier
    /// messages still being replicated) and two streams answer independently: a window whose
    /// acks include a duplicate, name two streams or do not rise in sequence (and is not of one
    /// message: the alerts' and the dead letters' windows often are) is
    /// [`Shared::Unattributable`], and is sent again with a reply subject per message — unless
    /// the caller only counts its acks ([`Acks::Counted`]): every message acked is all it needs.
    async fn shared(&mut self, attribution: Acks) -> Shared {
        // Built once: a `Subject` is shared, not copied, by each message that names it.
        let reply = async_nats::Subject::from(format!("{}.all", self.inbox));
        let sent = self.send_each(|_| reply.clone()).await;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let mut got = Vec::with_capacity(sent.len());
        while got.len() < sent.len() {
            let Ok(Some(answer)) = tokio::time::timeout_at(deadline, self.replies.next()).await
            else {
                return Shared::Failed(got);
            };
            match ack_of(&answer) {
                Ok(ack) => got.push(ack),
                Err(_) => return Shared::Failed(got),
            }
        }
        let all_new = got.iter().all(|a| !a.duplicate);
        let one_stream_rising = got
            .windows(2)
            .all(|w| w[0].stream == w[1].stream && w[0].sequence < w[1].sequence);
        // A counting caller needs every message acked, not which ack is whose; the one ack of a
        // window of one is its message's.
        let attributed = sent.len() == 1 || (all_new && one_stream_rising);
        if attribution == Acks::PerMessage && !attributed {
            return Shared::Unattributable(got);
        }
        let mut acks = vec![None; self.window.len()];
        for (i, ack) in sent.into_iter().zip(got) {
            acks[i] = Some(ack);
        }
        Shared::Acked(acks)
    }

    /// Sends the window with the reply subjects `<inbox>.<index>` and files each ack under its
    /// message.
    async fn indexed(&mut self) -> Vec<Option<PublishAck>> {
        let len = self.window.len();
        let inbox = self.inbox.clone();
        let mut acks = vec![None; len];
        let mut waiting = self
            .send_each(|i| format!("{inbox}.{i}").into())
            .await
            .len();
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let mut answered = vec![false; len];
        while waiting > 0 {
            let Ok(Some(reply)) = tokio::time::timeout_at(deadline, self.replies.next()).await
            else {
                break;
            };
            let Some(i) = reply_number(&reply.subject)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&i| i < len)
            else {
                continue;
            };
            if std::mem::replace(&mut answered[i], true) {
                continue;
            }
            waiting -= 1;
            acks[i] = ack_of(&reply).ok();
        }
        acks
    }

    /// Publishes each message of `window` that fits in `room` bytes with its `Nats-Msg-Id` and the
    /// reply subject `reply(index)`, stopping at the first that cannot be sent; returns the indexes
    /// sent, in order.
    async fn send_each(&self, reply: impl Fn(usize) -> async_nats::Subject) -> Vec<usize> {
        let mut sent = Vec::with_capacity(self.window.len());
        for (i, m) in self.window.iter().enumerate() {
            if m.payload.len() > self.room {
                continue;
            }
            let mut headers = m.headers.clone();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
            let published = self
                .client
                .publish_with_reply_and_headers(
                    m.subject.clone(),
                    reply(i),
                    headers,
                    m.payload.clone(),
                )
                .await;
            if published.is_err() {
                break;
            }
            sent.push(i);
        }
        sent
    }
}

/// Bytes kept free for headers below the server's `max_payload` on the fast path.
const HEADROOM: usize = 8 * 1024;

/// How long a window's acks may take (the JetStream context's default request timeout).
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The number `n` a reply subject `<inbox>.<n>` ends with: which message a reply answers, for
/// publishers that collect their acks on a subscription of their own.
pub fn reply_number(subject: &str) -> Option<u64> {
    subject.rsplit_once('.')?.1.parse().ok()
}

/// Why a reply to a JetStream publish is not an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAcked {
    /// No stream takes the subject (the server's "no responders" status).
    NoStream,
    /// Anything else: the stream refused the message (a JSON error answer), another status,
    /// or a reply that is not a `PublishAck`.
    Refused,
}

/// The `PublishAck` a reply to a JetStream publish carries, for publishers that collect their
/// acks on a subscription of their own.
pub fn ack_of(reply: &async_nats::Message) -> Result<PublishAck, NotAcked> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Error {
            #[allow(dead_code)]
            error: serde::de::IgnoredAny,
        },
        Ack(PublishAck),
    }
    match reply.status {
        Some(async_nats::StatusCode::NO_RESPONDERS) => return Err(NotAcked::NoStream),
        Some(_) => return Err(NotAcked::Refused),
        None => {}
    }
    match serde_json::from_slice(&reply.payload) {
        Ok(Answer::Ack(ack)) => Ok(ack),
        Ok(Answer::Error { .. }) | Err(_) => Err(NotAcked::Refused),
    }
}

/// What a dead letter says about the message it carries.
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    /// Bounded reason: the subject's last token and `Citypulse-Reason`.
    pub reason: &'a str,
    /// One human line with the offending value (attacker-controlled: sanitised here).
    pub detail: &'a str,
    /// The subject the message came on.
    pub source_subject: &'a str,
    /// Its sequence in the source stream.
    pub source_sequence: u64,
}

/// A dead letter on `dlq.<reason>`: headers `Citypulse-Reason`, `Citypulse-Detail` (one safe
/// line), `Citypulse-Source-Subject`, `Citypulse-Source-Sequence`; body the original payload cut
/// to [`MAX_DEAD_LETTER_BODY`] (with [`HEADER_ORIGINAL_SIZE`] when cut); id `msg_id`.
pub fn dead_letter(why: Rejected<'_>, msg_id: String, payload: &Bytes) -> Outgoing {
    let mut h = HeaderMap::new();
    h.insert(streams::HEADER_REASON, why.reason);
    h.insert(streams::HEADER_DETAIL, header_text(why.detail).as_str());
    h.insert(
        streams::HEADER_SOURCE_SUBJECT,
        header_text(why.source_subject).as_str(),
    );
    h.insert(
        streams::HEADER_SOURCE_SEQUENCE,
        why.source_sequence.to_string().as_str(),
    );
    let body = if payload.len() > MAX_DEAD_LETTER_BODY {
        h.insert(HEADER_ORIGINAL_SIZE, payload.len().to_string().as_str());
        payload.slice(..MAX_DEAD_LETTER_BODY)
    } else {
        payload.clone()
    };
    Outgoing {
        subject: citypulse_schema::subject::dlq_subject(why.reason),
        msg_id,
        headers: h,
        payload: body,
        epoch: 0,
    }
}

/// Makes `s` safe as one header value: control characters (CR and LF would end the header)
/// become spaces, and it is cut to a sane length.
pub fn header_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL_CHARS)
        .collect();
    if s.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(subjects: &[&str]) -> Vec<Outgoing> {
        subjects
            .iter()
            .enumerate()
            .map(|(i, s)| Outgoing::new((*s).to_owned(), i.to_string(), Bytes::new()))
            .collect()
    }

    /// The windows as the subjects they hold.
    fn cut(windows: Windows, subjects: &[&str]) -> Vec<Vec<String>> {
        let messages = on(subjects);
        windows
            .split(&messages)
            .map(|w| w.iter().map(|m| m.subject.clone()).collect())
            .collect()
    }

    #[test]
    fn subject_once_windows_end_before_a_repeated_subject_and_at_the_maximum() {
        let w = Windows::counted_in_subject_order(3);
        assert_eq!(
            cut(w, &["a", "b", "a", "c", "d", "e", "e"]),
            [vec!["a", "b"], vec!["a", "c", "d"], vec!["e"], vec!["e"]]
        );
        assert_eq!(cut(w, &[]), Vec::<Vec<String>>::new());
        // At least one message per window, whatever the maximum.
        let w = Windows::counted_in_subject_order(0);
        assert_eq!(cut(w, &["a", "a"]), [vec!["a"], vec!["a"]]);
    }

    #[test]
    fn per_message_windows_are_cut_at_the_maximum_only() {
        let subjects = vec!["dlq.bad"; WINDOW * 2 + 1];
        let sizes: Vec<usize> = cut(Windows::PER_MESSAGE, &subjects)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [WINDOW, WINDOW, 1]);
    }

    #[test]
    fn windows_never_hold_two_epochs() {
        let mut messages = on(&["a", "b", "c", "d", "e"]);
        for (m, epoch) in messages.iter_mut().zip([7, 7, 8, 7, 7]) {
            m.epoch = epoch;
        }
        let sizes = |w: Windows| w.split(&messages).map(<[_]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(Windows::counted_in_subject_order(64)), [2, 1, 2]);
        assert_eq!(sizes(Windows::PER_MESSAGE), [2, 1, 2]);
        assert_eq!(Outgoing::new("s".into(), "i".into(), Bytes::new()).epoch, 0);
        let m = Outgoing::new("s".into(), "i".into(), Bytes::new()).in_epoch(9);
        assert_eq!(m.epoch, 9);
    }

    /// Any sequence of subjects and epochs: the windows hold every message once, in order, none
    /// above the maximum, none with a subject twice or two epochs, and each ends only where it
    /// must.
    #[test]
    fn subject_once_windows_keep_every_message_in_order() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let len = round % 40;
            let mut epoch = 0;
            let mut messages: Vec<Outgoing> = (0..len)
                .map(|i| {
                    let subject = format!("s{}", next() % 6);
                    epoch += u64::from(next() % 5 == 0);
                    Outgoing::new(subject, i.to_string(), Bytes::new()).in_epoch(epoch)
                })
                .collect();
            if round % 2 == 0 {
                // Epochs need not rise: a window ends at every change.
                messages.iter_mut().for_each(|m| m.epoch %= 2);
            }
            let max = 1 + round % 7;
            let windows: Vec<&[Outgoing]> = Windows::counted_in_subject_order(max)
                .split(&messages)
                .collect();
            let ids = |w: &[Outgoing]| w.iter().map(|m| m.msg_id.clone()).collect::<Vec<_>>();
            let all: Vec<String> = windows.iter().flat_map(|w| ids(w)).collect();
            assert_eq!(all, ids(&messages), "every message once, in order");
            for (i, w) in windows.iter().enumerate() {
                assert!(!w.is_empty() && w.len() <= max);
                let subjects: std::collections::HashSet<_> = w.iter().map(|m| &m.subject).collect();
                assert_eq!(subjects.len(), w.len(), "a subject twice in {w:?}");
                assert!(
                    w.iter().all(|m| m.epoch == w[0].epoch),
                    "two epochs in {w:?}"
                );
                // Cut only at the maximum, before a subject the window holds, or a new epoch.
                if let Some(next) = windows.get(i + 1) {
                    let first = &next[0];
                    assert!(
                        w.len() == max
                            || w.iter().any(|m| m.subject == first.subject)
                            || first.epoch != w[0].epoch,
                        "{w:?} then {next:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn header_text_is_one_safe_line() {
        assert_eq!(header_text("a\r\nb\tc"), "a  b c");
        let long = "x".repeat(1000);
        assert_eq!(header_text(&long).chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn a_dead_letter_carries_its_reason_and_origin_and_is_cut_when_huge() {
        let why = Rejected {
            reason: "unknown_kind",
            detail: "unknown kind `bus\r\nX-Evil: 1`",
            source_subject: "sensors.d1.traffic.s1",
            source_sequence: 42,
        };
        let small = Bytes::from_static(b"abc");
        let d = dead_letter(why, "raw:42".into(), &small);
        assert_eq!(d.subject, "dlq.unknown_kind");
        assert_eq!(d.msg_id, "raw:42");
        assert_eq!(d.payload, small);
        let get = |k: &str| d.headers.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(get(streams::HEADER_REASON).as_deref(), Some("unknown_kind"));
        assert_eq!(
            get(streams::HEADER_DETAIL).as_deref(),
            Some("unknown kind `bus  X-Evil: 1`")
        );
        assert_eq!(get(streams::HEADER_SOURCE_SEQUENCE).as_deref(), Some("42"));
        assert!(get(HEADER_ORIGINAL_SIZE).is_none());

        let huge = Bytes::from(vec![7u8; 1 << 20]);
        let d = dead_letter(why, "raw:43".into(), &huge);
        assert_eq!(d.payload.len(), MAX_DEAD_LETTER_BODY);
        assert_eq!(
            d.headers
                .get(HEADER_ORIGINAL_SIZE)
                .map(|v| v.as_str().to_owned()),
            Some("1048576".to_owned())
        );
    }
}
