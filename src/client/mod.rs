//! The command-line tools besides `serve`: `run`, `encrypt`, `decrypt`, `sign`, `token`.
pub mod crypt;
pub mod run;
