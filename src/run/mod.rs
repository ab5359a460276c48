//! One run: scripts in order, the log, run limits (SPEC §4).
