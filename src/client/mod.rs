//! The command-line tools besides `serve`: `run`, `encrypt`, `decrypt`, `sign`, `token`.
pub mod run;
