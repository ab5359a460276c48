//! The HTTP front end (SPEC §2).
