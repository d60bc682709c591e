//! The downstream ticket service (issue 12): every ticket draft the gateway publishes
//! becomes a ticket that lives by the measures' clock (Arts. 7, 8, 10-14, 22).
//!
//! Built so far:
//!
//! - [`calendar`]: working days and deadlines (Art. 22), from the State Council's
//!   holiday notice of each year as data (`data/holidays/`).
//!
//! The consumer, the PostgreSQL store, the ticket life cycle and the `ticket-service`
//! binary follow.

pub mod calendar;

pub use calendar::{Calendar, Deadline};
