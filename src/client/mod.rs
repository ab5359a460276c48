//! The command-line tools besides `serve`: `run`, `encrypt`, `decrypt`, `sign`, `token`,
//! `sandbox`, `policy check`.
pub mod crypt;
pub mod run;
pub mod sandbox;
