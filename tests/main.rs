//! Integration tests of the `ferry` binary: each module drives the built
//! binary as a user would and checks files, exit codes, output and the log.

mod util;

mod audit;
mod azure;
mod bad_input;
mod containment;
mod copy;
mod crash;
mod daemon;
mod errors;
mod events;
mod fault_proxy;
mod faults;
mod modes;
mod output;
mod parallel_auto;
mod plugins;
mod query;
mod queue;
mod resume;
mod secrets;
mod signals;
