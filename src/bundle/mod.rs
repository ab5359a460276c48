//! Bundles (SPEC §3): signature check, upload to disk, safe unpacking, decryption.
//! Everything here is a pure function over bytes and files: testable and fuzzable
//! without a kernel sandbox.

pub mod decrypt;
pub mod signature;
pub mod unpack;
pub mod upload;
