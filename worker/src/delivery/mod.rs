//! One delivery's life, as the pieces the [session](crate::session) puts together; each is
//! plain data and plain functions, tested without a broker (the republisher excepted, which
//! only wraps a confirm-mode channel):
//!
//! 1. [`decode`]: decode the body into the logs the sink receives (one JSON log, or the logs
//!    of an OTLP payload), each normalized by [`envelope`]; bad input is permanent;
//! 2. [`dedup`]: skip what was written recently (by message id, or a hash of the body), in this
//!    process, and with [`dedup_store`] across replicas;
//! 3. [`batch`]: gather logs into sink writes (size and linger);
//! 4. [`retry_ladder`]: count failed attempts and choose where a failed log goes next;
//! 5. [`republish`]: publish that copy, confirmed, with the failure in its headers (or a
//!    redelivery's suspect copy, or a held delivery put back unchanged);
//! 6. [`ack_tracker`]: settle each delivery once, with as few ACKs on the wire as allowed.

pub mod ack_tracker;
pub mod batch;
pub mod decode;
pub mod dedup;
pub mod dedup_store;
pub mod envelope;
pub mod republish;
pub mod retry_ladder;
