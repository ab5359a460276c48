//! servo: a sandboxed continuous-delivery executor.
//!
//! Data flows one way: request → bundle (verified, unpacked, decrypted) →
//! run (scripts) → sandbox (plan, launch) → log → response.

pub mod audit;
pub mod bundle;
pub mod client;
pub mod config;
pub mod coordination;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod metrics;
pub mod ochopod;
pub mod relay;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod settings;
pub mod tenants;
pub mod tls;
pub mod toolset;
