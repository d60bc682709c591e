//! The downstream ticket service (issue 12): every ticket draft the gateway publishes
//! becomes a ticket that lives by the measures' clock (Arts. 7, 8, 10-14, 22), and every
//! closed ticket is followed up with the citizen and counted (Arts. 13, 16-18).
//!
//! This crate owns:
//!
//! - [`calendar`]: working days and deadlines (Art. 22), from the State Council's
//!   holiday notice of each year as data (`data/holidays/`);
//! - [`units`]: the handling units a ticket is dispatched to, as data;
//! - [`rules`]: the ticket life cycle as pure rules (who may do what in which state,
//!   and what it changes);
//! - [`repeat`]: Art. 14's repeat contacts (supplement, urge, new ticket);
//! - [`followup`]: the follow-up rules after closure, pure: the result SMS (Art. 13), the
//!   survey and its 24-hour default (Art. 16), revisits and appeals (Art. 17);
//! - [`stats`]: the Art. 18 statistics, per unit and for the centre, by month or quarter;
//! - [`store`]: the PostgreSQL store: tickets, contacts, consumer offsets, the status
//!   outbox, in transactions that make every record count once;
//! - [`consumer`]: the Kafka consumption of the gateway's topics, partitions shared
//!   between instances through the database, offsets committed with the state;
//! - [`publisher`]: the status outbox's way to Kafka, and the card sweep, run by one
//!   instance at a time;
//! - [`api`]: the HTTP API for agents, units, supervisors and the citizen's progress
//!   query;
//! - [`config`]: the service's typed configuration.

pub mod api;
pub mod calendar;
pub mod config;
pub mod consumer;
pub mod followup;
pub mod publisher;
pub mod repeat;
pub mod rules;
pub mod stats;
pub mod store;
pub mod units;

pub use calendar::{Calendar, Deadline};
