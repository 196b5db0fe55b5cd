//! The pure core: rules, their evaluation, and the publication policy. Synchronous and
//! deterministic; time is a parameter (event time for the lifecycle, wall-clock ms for operator
//! actions); no NATS, no PostgreSQL.
//!
//! - [`rules`]: the TOML rule file → validated [`rules::RuleSet`] (every error with its line).
//! - [`template`]: summary templates.
//! - [`evaluator`]: [`evaluator::Evaluator`] — `evaluate(&WindowResult, &mut Vec<AlertEvent>)`,
//!   `tick(event_time_ms, &mut Vec<AlertEvent>)`; serializable [`evaluator::State`].
//! - [`notify`]: [`notify::Notifier`] — silences, acks, and which transitions are published.

pub mod evaluator;
pub mod notify;
pub mod rules;
pub mod template;

pub use evaluator::{Evaluator, Outcome, State};
pub use notify::{Ack, ControlError, Matcher, Notifier, Route, Silence};
pub use rules::{RuleErrors, RuleSet, DEFAULT_RULES};
