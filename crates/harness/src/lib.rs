//! The pieces of issue #13's fault-injection harness (`docs/CLUSTERING.md`) that do not need a
//! cluster: a TCP proxy per link that cuts, black-holes, delays and heals it (`proxy`), and the
//! checker of what a run recorded (`history`).

pub mod history;
pub mod proxy;

pub use proxy::{Mode, Proxy};
