//! Flags and environment → one validated configuration (SPEC §1).
